"""The editor's "Find the subject": the subject found with no clicks (core.auto's studio method, or
core.catalogue.auto_subject where it exists), shown as the mask overlay a click gives; clicks then
refine it (core.refine, through ui.prompts.segment_preview).

`state["auto"]` is {"photo": the photo's hash, "mask": HxW uint8 at the preview size,
"confidence": 0..1, "key": a digest of the mask, "digest": its SHA-256 (the name it is kept under
for a reload, ui.saved)} or None; `state["auto_note"]` is the one line shown under the button (a
low confidence, or why nothing was found).

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import MutableMapping
from typing import Optional

import numpy as np

log = logging.getLogger(__name__)

LOW_CONFIDENCE = 0.6      # below this the note asks the person to check the mask


def _finder():
    """The auto subject: the catalogue's (learned model or studio method) once it exists."""
    try:
        from core.catalogue import auto_subject
        return auto_subject
    except ImportError:
        from core.auto import find_subject
        return find_subject


def current(state: MutableMapping) -> Optional[dict]:
    """The auto mask of the photo shown, or None."""
    found = state.get("auto")
    photo = state.get("photo")
    if not found or photo is None or found.get("photo") != photo.hash:
        return None
    return found


def key(state: MutableMapping) -> Optional[str]:
    """What identifies the auto mask in use (part of ui.prompts.seg_key)."""
    found = current(state)
    return None if found is None else found["key"]


def find(state: MutableMapping, keep_clicks: bool = False) -> None:
    """Find the subject of the photo shown: its mask replaces the clicks (unless `keep_clicks`: a
    run opened from History); the note says when the result is uncertain, or in one line why there
    is none (a blank photo, no plain backdrop)."""
    import cv2

    from core.errors import BackdropError
    from ui.widgets import one_line

    photo = state.get("photo")
    if photo is None:
        return
    state["auto_done"] = photo.hash
    from ui.prompts import preparing_shown
    try:
        with preparing_shown():      # BiRefNet's CPU engine, prepared once (BACKDROP_CPU_BACKEND)
            found = _finder()(photo.rgb)
    except Exception as e:
        if not isinstance(e, BackdropError):    # a blank photo, no plain backdrop: one line
            log.exception("finding the subject failed")
        state["auto"] = None
        state["auto_note"] = one_line(e, "finding the subject")
        return
    w, h = state["preview"].rgb.shape[1], state["preview"].rgb.shape[0]
    small = cv2.resize(found.mask, (w, h), interpolation=cv2.INTER_AREA) if found.mask.shape != (h, w) \
        else found.mask
    put(state, np.where(small >= 128, 255, 0).astype(np.uint8), float(found.confidence))
    if not keep_clicks:
        state["prompts"] = []
        state["candidate"] = None


def digest(mask: np.ndarray) -> str:
    """SHA-256 of a mask's size and pixels (what it is kept and checked under for a reload)."""
    return hashlib.sha256(b"%dx%d:" % mask.shape[:2] + np.ascontiguousarray(mask).tobytes()).hexdigest()


def put(state: MutableMapping, mask: np.ndarray, confidence: float) -> None:
    """Make `mask` (HxW uint8 at the preview size, 255 = subject) the subject found in the photo
    shown, with its note: found by find(), or brought back after a reload (ui.saved)."""
    state["auto_done"] = state["photo"].hash
    state["auto"] = {"photo": state["photo"].hash, "mask": mask, "confidence": confidence,
                     "key": hashlib.sha1(mask.tobytes()).hexdigest()[:12], "digest": digest(mask)}
    state["auto_note"] = (f"Found the subject, but not surely (confidence {confidence:.2f}): check the "
                          "mask and click to add or remove parts." if confidence < LOW_CONFIDENCE else None)


def on_upload(state: MutableMapping) -> None:
    """With "Find the subject on upload" on: find it once for a new photo that has no clicks yet."""
    photo = state.get("photo")
    if photo is not None and state.pop("auto_redo", False):   # Edit from here / Re-run of such a run
        find(state, keep_clicks=True)
    elif (photo is not None and state.get("auto_on_upload") and state.get("auto_done") != photo.hash
            and not state.get("prompts")):
        find(state)


def drop(state: MutableMapping) -> None:
    state["auto"] = None
    state["auto_note"] = None
