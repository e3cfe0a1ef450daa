"""Session state: one person's clicks, mask, settings and results (never shared between sessions).

`init_session` runs from the router (streamlit_app.py) and fills in what is missing. Widgets never
get a `value=` argument: their initial values live here, so Streamlit never sees two sources of
truth. Widgets whose value must survive a visit to another page are created with
`persist_state="session"` (Streamlit otherwise drops the state of widgets not drawn in a run).
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from core import config

ADD = "Add (include)"
REMOVE = "Remove (exclude)"
CLICK_MODES = (ADD, REMOVE)

BG_SD = "AI scene"
BG_COLOR = "Colour"
BG_BLUR = "Blur"
BG_IMAGE = "Image"
BG_TRANSPARENT = "Transparent"
BG_KINDS = (BG_SD, BG_COLOR, BG_BLUR, BG_IMAGE, BG_TRANSPARENT)

# Widget-backed keys whose value must survive page switches (not buttons / uploaders).
WIDGET_DEFAULTS: dict[str, Any] = {
    "click_mode": ADD,
    "box_mode": False,
    "grow": 0,
    "feather": 0,
    "invert": False,
    "bg_kind": BG_SD,
    "prompt": "",
    "negative": "blurry, low quality, distorted",
    "seed": -1,
    "steps": 25,
    "guidance": 7.5,
    "variants": 1,
    "bg_color": "#FFFFFF",
    "blur_radius": 25,
    "hist_search": "",
    "hist_favourites": False,
    "hist_model": "All",
    "hist_kind": "All",
    "hist_page_size": 12,
}

# Plain (non-widget) state.
STATE_DEFAULTS: dict[str, Any] = {
    "photo": None,            # core.images.LoadedImage of the photo being edited
    "photo_name": "",         # the file name the person gave (display only)
    "preview": None,          # core.images.Preview of the photo (what the browser gets)
    "prompts": [],            # clicks and boxes in ORIGINAL pixels, in the order made (undo pops)
    "canvas_event": None,     # unix_time of the last component event handled (dedupe on rerun)
    "seg_cache": {},          # (key) -> SegmentResult at preview size
    "candidate": None,        # chosen multimask candidate (None = best score)
    "prepare": None,          # ui.tasks.Task computing the image embedding
    "job": None,              # ui.tasks.Task running the generation
    "result": None,           # dict with the last run's outputs (full size) for this session
    "notice": None,           # (level, one-line text) to show once on the next run
    "job_notice": None,       # (level, one line) how the last generation ended, shown by Generate
    "bg_image": None,         # LoadedImage of the uploaded background photo
    "bg_image_path": None,    # where that background photo is stored for the job
    "upload_id": None,        # file_id of the last upload loaded, so a rerun does not reload it
    "upload_error": None,     # (file_id, one line) while a bad file sits in the uploader
    "bg_upload_id": None,
    "canvas_cache": None,     # (key, JPEG bytes) of the clickable preview with overlay
    "thumb_cache": None,      # (key, [JPEG bytes]) of the candidate thumbnails
    "download": None,         # ui.tasks.Task of a model download (Models page)
    "hist_page": 0,
    "hist_selected": [],      # run ids picked for compare / export
    "hist_open": None,        # run id opened in the detail view
    "hist_confirm_delete": None,
    "hist_compare": False,    # show the compare view for the selected runs
    "hist_filters": None,     # the filters of the last listing (new filters -> page 1)
    "autorun": False,         # "re-run" from History: start generating when the Editor opens
}


def init_session(state: MutableMapping) -> None:
    """Fill in every key that is missing (idempotent; the router calls it on every run)."""
    if "segmenter" not in state:
        state["segmenter"] = config.default_segmenter()
    if "inpaint_model" not in state:
        state["inpaint_model"] = config.default_inpaint_model()
    for key, value in {**WIDGET_DEFAULTS, **STATE_DEFAULTS}.items():
        if key not in state:
            state[key] = value.copy() if isinstance(value, (list, dict)) else value
