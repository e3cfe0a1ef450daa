"""The photo being edited: upload (read once per file), bundled samples, its preview, and the
embedding started as soon as it is loaded.

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import io
import logging
from collections.abc import MutableMapping
from typing import Any, Optional

import streamlit as st

from core.errors import BackdropError
from ui import tasks
from ui.widgets import escape_md, one_line

log = logging.getLogger(__name__)

PREVIEW_SIDE = 896           # long side of what the browser gets: the photo is shown ~570-900 px wide
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "heic", "heif"]

SAMPLES = {  # label -> skimage.data function (bundled with scikit-image, no download)
    "Astronaut": "astronaut",
    "Coffee cup": "coffee",
    "Cat": "chelsea",
}


def load_photo(state: MutableMapping, image, name: str) -> None:
    """Make `image` (core.images.LoadedImage) the photo being edited; forget the old clicks/results."""
    from core.images import make_preview

    state["photo"] = image
    state["photo_name"] = name
    state["preview"] = make_preview(image.rgb, PREVIEW_SIDE)
    state["prompts"] = []
    state["candidate"] = None
    state["seg_cache"] = {}
    state["canvas_cache"] = None
    state["canvas_recent"] = None
    state["result"] = None
    state["job_notice"] = None
    state["prepare"] = None


def load_upload(state: MutableMapping, data: bytes, name: str):
    """Read an uploaded file (raises ImageError with one line when it is not a usable photo)."""
    from core.images import load_image

    image = load_image(data)
    load_photo(state, image, name)
    from core.engine import get_engine
    get_engine().keep_upload(state, image.hash, data)     # the service gets the file as uploaded
    return image


def take_upload(state: MutableMapping, uploaded: Any) -> Optional[str]:
    """Load what sits in the photo uploader (a Streamlit UploadedFile or None), once per file: the
    uploader hands the same file back on every rerun. Returns the one-line error to show while a
    file that could not be used sits in the uploader, else None."""
    if uploaded is None:
        return None
    if uploaded.file_id != state.get("upload_id"):
        state["upload_id"] = uploaded.file_id
        try:
            load_upload(state, uploaded.getvalue(), uploaded.name)
            from ui import saved
            saved.save(state)        # read in this run, not in a callback: keep it for a reload now
        except BackdropError as e:
            log.info("upload %r not used: %s", uploaded.name, e)
            state["upload_error"] = (uploaded.file_id, one_line(e, "reading the photo"))
        except Exception as e:
            log.exception("reading the upload %r failed", uploaded.name)
            state["upload_error"] = (uploaded.file_id, one_line(e, "reading the photo"))
    error = state.get("upload_error")
    return error[1] if error and error[0] == uploaded.file_id else None


def sample_bytes(key: str) -> bytes:
    """PNG bytes of a bundled sample photo (goes through load_image like any upload)."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(getattr(data, key)()).save(buf, format="PNG")
    return buf.getvalue()


def load_sample(state: MutableMapping, label: str) -> None:
    load_upload(state, sample_bytes(SAMPLES[label]), f"{SAMPLES[label]}.png")


def preview_size(state: MutableMapping) -> tuple[int, int]:
    """(width, height) of the preview the browser shows."""
    rgb = state["preview"].rgb
    return rgb.shape[1], rgb.shape[0]


def start_prepare(state: MutableMapping, segmenter, segmenter_name: str) -> tasks.Task:
    """Compute the photo's embedding in the background, so the first click does not wait from zero."""
    rgb = state["photo"].rgb
    task = tasks.start("prepare", lambda progress, cancel: segmenter.prepare(rgb),
                       label="preparing the photo for clicks")
    task.segmenter = segmenter_name
    state["prepare"] = task
    return task


def ensure_prepared(state: MutableMapping, segmenter, segmenter_name: str) -> Optional[tasks.Task]:
    """The photo's preparation task for this segmenter, started when there is none yet (a new
    photo, or another segmenter chosen). None without a segmenter."""
    task = state.get("prepare")
    if segmenter is None:
        return task
    if task is None or task.segmenter != segmenter_name:
        task = start_prepare(state, segmenter, segmenter_name)
    return task


def prepare_status(state: MutableMapping) -> None:
    """While the embedding is computed: a note, redrawn every second, then one rerun of the page
    so the mask of clicks made meanwhile appears; a warning when it failed."""
    polling = tasks.running(state.get("prepare"))

    @st.fragment(run_every=1.0 if polling else None)
    def status() -> None:
        task = state.get("prepare")
        if task is None:
            return
        if not task.done:
            st.info(f"Preparing the photo for clicks… ({task.elapsed:.0f} s) — you can click already; "
                    "the mask appears as soon as it is ready.", icon=":material/hourglass_top:")
        elif task.error:
            st.warning(f"Could not prepare the photo: {escape_md(task.error)}")
        elif polling:
            st.rerun()

    status()
