"""Streamlit glue between the pages and `core/`.

Pages (pages/*.py) hold widgets and session state only; everything they do goes through here:
  state.py      session-state defaults, initialised once by the router (streamlit_app.py);
                editor widgets <-> the run spec (spec_from_state / spec_to_state)
  resources.py  shared segmenters (core's bounded registry) and the history store
  photo.py      the photo being edited: upload (read once per file), samples, preview, embedding
  prompts.py    clicks and box (original pixels), undo/clear, the segmenter (GrabCut fallback),
                preview-size masks, the mask candidate chosen
  canvas.py     the clickable image: component value -> clicks, overlay, candidate thumbnails
  job.py        background photo, the JobRequest built from the run spec (`job_request`), start
                (Generate / re-run), progress, collecting the outputs
  result.py     the result in the photo area: before/after slider, variants, download
  tasks.py      bounded thread pools (concurrent.futures) for slow work: progress + cancel
  history.py    history-page helpers: compare table, parameter differences, export, edit from here
  widgets.py    shared widgets: one-line errors, photo previews, model labels
`core/` never imports streamlit; this package is the only place that wraps it.
"""
