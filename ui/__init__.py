"""Streamlit glue between the pages and `core/`.

Pages (pages/*.py) hold widgets and session state only; everything they do goes through here:
  state.py      session-state defaults, initialised once by the router (streamlit_app.py)
  resources.py  st.cache_resource loaders: segmenters, inpainters, the history store
  editor.py     click handling (component value -> clicks in original pixels), undo/clear, the
                preview-size segmentation and overlay, the job request built from the widgets
  tasks.py      background threads for slow work (embedding, generation) with progress + cancel
  history.py    history-page helpers: compare table, parameter differences, export
  widgets.py    shared widgets: one-line errors, photo previews, model labels
`core/` never imports streamlit; this package is the only place that wraps it.
"""
