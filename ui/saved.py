"""The work on the page survives a reload: the photo, its clicks, the subject found by "Find the
subject", the mask options, the background and the prompt come back, and a run still going shows
its progress and Cancel again.

Each browser page gets a session id in its URL (`?s=<32 hex digits>`, random, 128 bits: whoever
has the link sees that work). After every whole-page run, and after every click, the work is
written as a small JSON file, `<data dir>/sessions/<id>.json`; the photo itself once, as a PNG
named by its content hash, `<data dir>/sessions/photos/<hash>.png`; the subject found (ui.auto: a
mask at the preview size) once too, `<data dir>/sessions/masks/<its digest>.png`, so a reload shows
the same mask (the clicks refine it again) without finding it again. A new page opened with that
id in its URL (a reload) reads them back. Files older than KEEP_DAYS are deleted (ui.saved_files:
the files' names and their pruning).

The id from the URL is used as a file name only when it is exactly 32 lowercase hex digits; a
saved file that cannot be read back (damaged, missing photo) means a fresh start with one line
saying so, never an error page.
"""
from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core import config
from ui.saved_files import (KEEP_DAYS, folder, mask_file, new_id, photo_file,  # noqa: F401
                            prune, prune_now_and_then, session_file, valid_id)

log = logging.getLogger(__name__)

PARAM = "s"                       # the URL's query parameter
ID_KEY = "session_id"             # session state: this page's id
SAVED_KEY = "session_saved"       # session state: digest of the work last written (or read)
VERSION = 1
MAX_PROMPTS = 500                 # clicks and boxes read back at most

# settings kept besides the editor's widgets (WIDGET_DEFAULTS); History's filters are not work
EXTRA_KEYS = ("mode", "segmenter", "inpaint_model")

LOST = "Your saved work could not be brought back ({why}); starting fresh."


def saved_keys() -> list[str]:
    """The state keys of the settings kept: every editor widget, the mode and the models."""
    from ui import state as S
    return [k for k in S.WIDGET_DEFAULTS if not k.startswith("hist_")] + list(EXTRA_KEYS)


def _scalar(value: Any) -> bool:
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, (bool, int, str))


# ------------------------------------------------------------------------------------ save
def work_of(state: MutableMapping) -> dict:
    """What is kept of this page's work, as plain JSON values."""
    photo = state.get("photo")
    prompts = []
    for p in state.get("prompts") or []:
        if p.get("kind") == "point":
            prompts.append({"kind": "point", "x": float(p["x"]), "y": float(p["y"]), "label": int(p["label"])})
        elif p.get("kind") == "box":
            prompts.append({"kind": "box", "box": [float(v) for v in p["box"]]})
    from ui import auto
    found = auto.current(state)
    return {"version": VERSION,
            "photo": {"hash": photo.hash, "name": str(state.get("photo_name") or "")} if photo is not None else None,
            "prompts": prompts,
            "auto": {"mask": found["digest"], "confidence": float(found["confidence"])} if found else None,
            "candidate": state.get("candidate"),
            "settings": {k: state[k] for k in saved_keys() if k in state and _scalar(state[k])},
            "bg_image_path": state.get("bg_image_path")}


def _text(work: dict) -> str:
    return json.dumps(work, sort_keys=True, separators=(",", ":"))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _store_photo(photo) -> Path:
    """The photo's PNG under sessions/photos (written once per photo); its time is renewed, so a
    photo is never older than the newest session file that names it."""
    from core.files import atomic_write_bytes
    from core.images import encode_png

    path = photo_file(photo.hash)
    if not path.is_file():
        pixels = photo.rgb if photo.alpha is None else np.dstack([photo.rgb, photo.alpha])
        atomic_write_bytes(path, encode_png(pixels, compress_level=1))
    return path


def _store_mask(found: dict) -> Path:
    """The subject found (ui.auto), as a PNG under sessions/masks named by its digest (written once)."""
    from core.files import atomic_write_bytes
    from core.images import encode_png

    path = mask_file(found["digest"])
    if not path.is_file():
        atomic_write_bytes(path, encode_png(found["mask"], compress_level=1))
    return path


def save(state: MutableMapping) -> None:
    """Write this page's work when it changed since it was last written. Never raises: a failure
    is logged and said once on the page (the work itself goes on)."""
    session = state.get(ID_KEY)
    if not valid_id(session):
        return
    try:
        work = work_of(state)
        text = _text(work)
        if _digest(text) == state.get(SAVED_KEY):
            return
        from core.files import atomic_write_bytes
        photo_path = _store_photo(state["photo"]) if state.get("photo") is not None else None
        mask_path = _store_mask(state["auto"]) if work["auto"] else None
        atomic_write_bytes(session_file(session), text.encode())
        for path in (photo_path, mask_path):
            if path is not None:
                os.utime(path)
        state[SAVED_KEY] = _digest(text)
    except Exception as e:
        log.warning("saving the work of session %s failed", session, exc_info=True)
        if not state.get("session_save_failed"):
            from ui.widgets import one_line
            state["session_save_failed"] = True
            state["notice"] = ("warning", "Your work is not kept for a reload of the page: "
                               + one_line(e, "saving it"))


# ------------------------------------------------------------------------------------ restore
def _fits(value: Any, default: Any) -> bool:
    """Whether a value read back can go where `default` went (same kind of value)."""
    if not _scalar(value):
        return False
    if default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(default, bool) and isinstance(value, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    return type(value) is type(default)


def _prompts(items: Any, width: int, height: int) -> list[dict]:
    """The clicks and boxes read back, checked (ValueError when something does not fit)."""
    if not isinstance(items, list) or len(items) > MAX_PROMPTS:
        raise ValueError("clicks")
    out: list[dict] = []

    def number(v: Any, hi: float) -> float:
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 <= v <= hi:
            raise ValueError("clicks")
        return float(v)

    for p in items:
        if not isinstance(p, dict):
            raise ValueError("clicks")
        if p.get("kind") == "point" and p.get("label") in (0, 1):
            out.append({"kind": "point", "x": number(p.get("x"), width), "y": number(p.get("y"), height),
                        "label": int(p["label"])})
        elif p.get("kind") == "box" and isinstance(p.get("box"), list) and len(p["box"]) == 4:
            x1, y1, x2, y2 = p["box"]
            out.append({"kind": "box", "box": (number(x1, width), number(y1, height),
                                                number(x2, width), number(y2, height))})
        else:
            raise ValueError("clicks")
    return out


def _background_path(value: Any) -> Optional[str]:
    """A background photo path read back, only when it is a file in the app's backgrounds folder."""
    if not isinstance(value, str) or not value:
        return None
    root = (config.data_dir() / "backgrounds").resolve()
    path = Path(value).resolve()
    return str(path) if path.is_relative_to(root) and path.is_file() else None


def restore(state: MutableMapping, session: str) -> Optional[str]:
    """Put the work saved under `session` back into `state` (nothing when there is none). Returns
    the one line to show when something saved could not be brought back."""
    from core.images import load_image
    from ui import photo as P
    from ui import state as S

    path = session_file(session)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.warning("reading %s failed: %s", path, e)
        return LOST.format(why="its file could not be read")
    try:
        work = json.loads(raw)
        if not isinstance(work, dict) or work.get("version") != VERSION:
            raise ValueError("not saved work")
        settings = work.get("settings") or {}
        photo_info = work.get("photo")
        if not isinstance(settings, dict) or not (photo_info is None or isinstance(photo_info, dict)):
            raise ValueError("not saved work")
    except ValueError:
        log.warning("saved work %s is damaged", path)
        return LOST.format(why="its file is damaged")

    defaults = {**S.WIDGET_DEFAULTS, **{k: state.get(k) for k in EXTRA_KEYS}}
    choices = {"bg_kind": S.BG_KINDS, "click_mode": S.CLICK_MODES, "edge": S.EDGES,
               "edge_method": tuple(S.EDGE_METHOD_LABELS), "mode": S.MODES}
    for key in saved_keys():
        if key in settings and _fits(settings[key], defaults.get(key)) \
                and settings[key] in choices.get(key, (settings[key],)):
            state[key] = settings[key]
    if (bg := _background_path(work.get("bg_image_path"))) is not None:
        try:
            from ui.widgets import display_image
            state["bg_image"] = display_image(load_image(bg).rgb, 320)
            state["bg_image_path"] = bg
        except Exception:
            log.warning("background photo %s not usable", bg, exc_info=True)

    notice = None
    if photo_info is not None:
        try:
            photo_hash = photo_info.get("hash")
            image = load_image(photo_file(photo_hash).read_bytes())
            if image.hash != photo_hash:
                raise ValueError("the photo changed")
            name = photo_info.get("name")
            P.load_photo(state, image, name if isinstance(name, str) else "photo")
            state["prompts"] = _prompts(work.get("prompts") or [], image.width, image.height)
            candidate = work.get("candidate")
            state["candidate"] = candidate if isinstance(candidate, int) and not isinstance(candidate, bool) \
                and 0 <= candidate < 16 else None
            if work.get("auto") is not None:
                _restore_found(state, work["auto"], session)
        except FileNotFoundError:
            notice = LOST.format(why="the photo is no longer kept")
        except Exception as e:
            log.warning("restoring the photo of session %s failed: %s", session, e)
            notice = LOST.format(why="the photo or its clicks could not be read")
        if notice:
            _forget_photo(state)
    return notice


def _restore_found(state: MutableMapping, kept: Any, session: str) -> None:
    """The subject found before the reload, from its kept mask; where that cannot be read back
    (deleted, damaged, another preview size) it is found again (ui.auto.on_upload), keeping the
    clicks that refine it."""
    from PIL import Image

    from ui import auto
    try:
        confidence = float(kept["confidence"])      # (not a dict, not a number: found again)
        if not 0 <= confidence <= 1:
            raise ValueError("confidence")
        path = mask_file(kept["mask"])
        h, w = state["preview"].rgb.shape[:2]
        with Image.open(path) as img:
            if img.mode != "L" or img.size != (w, h):     # checked before its pixels are read
                raise ValueError("not a mask of this preview")
            mask = np.asarray(img, dtype=np.uint8)
        if auto.digest(mask) != kept["mask"]:
            raise ValueError("the mask changed")
        auto.put(state, mask, confidence)
    except Exception as e:
        log.info("the subject found in session %s is found again: %s", session, e)
        state["auto"], state["auto_redo"] = None, True


def _forget_photo(state: MutableMapping) -> None:
    state["photo"] = None
    state["photo_name"] = ""
    state["preview"] = None
    state["prompts"] = []
    state["candidate"] = None


# ------------------------------------------------------------------------------------ attach
def attach(state: MutableMapping) -> None:
    """At the start of every whole-page run: give this page its session id (from the URL on a
    reload, else a new one), bring its saved work and its running generation back the first time,
    later save what changed, and keep the id in the URL (switching pages drops it). Outside a
    Streamlit run (a plain mapping in a test) it does nothing."""
    import streamlit as st
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    if get_script_run_ctx() is None:
        return
    try:
        params = st.query_params
        session = state.get(ID_KEY)
        if not valid_id(session):
            asked = params.get(PARAM)
            session = asked if valid_id(asked) else new_id()
            state[ID_KEY] = session
            notice = restore(state, session) if session == asked else None
            if notice:
                state["notice"] = ("warning", notice)
            state[SAVED_KEY] = _digest(_text(work_of(state)))
            _reattach(state, session)
            prune_now_and_then()
        else:   # what the event that started this run changed (widgets, callbacks: a sample loaded)
            save(state)
        if params.get(PARAM) != session:
            params[PARAM] = session
    except Exception:
        log.warning("the page's saved work could not be attached", exc_info=True)


def _reattach(state: MutableMapping, session: str) -> None:
    """A generation this page started before the reload: the page shows it again (its progress
    and Cancel while it runs, its result when it has finished)."""
    from ui import tasks

    task = tasks.kept(session)
    if task is not None and state.get("job") is None:
        state["job"] = task
