"""Shared widgets and helpers: one-line errors, escaping of user text, model labels, image display."""
from __future__ import annotations

import io
import logging
import re
from collections.abc import MutableMapping
from typing import Any, Callable, Optional, TypeVar

import numpy as np
import streamlit as st

from core.errors import BackdropError

log = logging.getLogger(__name__)
T = TypeVar("T")

_MD_SPECIAL = re.compile(r"([\\`*_\[\]<>|~$])")
_MD_LINE_START = re.compile(r"^(\s*)([#>+\-=])")
_MD_ORDERED = re.compile(r"^(\s*\d+)([.)])")


def escape_md(text: Any) -> str:
    """User text made inert for Markdown elements (st.caption, st.error, ...): no links, images,
    emphasis, code, colour directives, HTML or LaTeX; one line, so no headings or lists either."""
    one = " ".join(str(text).split())
    one = _MD_SPECIAL.sub(r"\\\1", one)
    return _MD_ORDERED.sub(r"\1\\\2", _MD_LINE_START.sub(r"\1\\\2", one))


def one_line(error: BaseException, what: str) -> str:
    """The message a person sees: the BackdropError's own line, else a short generic one."""
    if isinstance(error, BackdropError):
        return str(error).splitlines()[0] if str(error) else type(error).__name__
    if isinstance(error, MemoryError):
        return "Out of memory: try a smaller photo, fewer variants or fewer steps."
    return f"Something went wrong while {what} ({type(error).__name__}); see the server log."


def guarded(what: str, fn: Callable[..., T], *args, **kwargs) -> Optional[T]:
    """Call fn; on failure show ONE line with st.error (never a traceback) and return None."""
    try:
        return fn(*args, **kwargs)
    except BackdropError as e:     # expected (bad input, missing weights): no traceback
        log.info("while %s: %s", what, e)
        st.error(escape_md(one_line(e, what)))
    except Exception as e:  # the app keeps working; the log keeps the details
        log.exception("while %s", what)
        st.error(escape_md(one_line(e, what)))
    return None


def set_notice(state: MutableMapping, level: str, text: str) -> None:
    """Queue a one-line message (from a callback) for the next run of the page."""
    state["notice"] = (level, text)


def show_notice(state: MutableMapping) -> None:
    notice = state.get("notice")
    if notice:
        level, text = notice
        {"error": st.error, "warning": st.warning, "success": st.success}.get(level, st.info)(escape_md(text))
        state["notice"] = None


def check_settings() -> None:
    """A BACKDROP_* variable with a bad value (BACKDROP_SWEEP_GRACE_S=1h): the page says which, in
    one line, and stops (never a traceback). Call before anything reads the settings."""
    from core.settings import settings
    try:
        settings()
    except BackdropError as e:
        st.error(f"Backdrop cannot start: {escape_md(str(e))}. Correct it and restart the app "
                 "(docs/configuration.md).")
        st.stop()


CHECKER_TILE = 8                          # px of one checkerboard square, as shown
CHECKER_SHADES = (255, 204)               # white and light grey: tells "transparent" from "white"


def checkerboard(width: int, height: int, tile: int = CHECKER_TILE) -> np.ndarray:
    """An HxWx3 uint8 checkerboard of white and light grey squares, `tile` px each."""
    ys = (np.arange(height) // tile)[:, None]
    xs = (np.arange(width) // tile)[None, :]
    shade = np.where((ys + xs) % 2 == 0, CHECKER_SHADES[0], CHECKER_SHADES[1]).astype(np.uint8)
    return np.repeat(shade[:, :, None], 3, axis=2)


def on_checkerboard(arr: np.ndarray, tile: int = CHECKER_TILE) -> np.ndarray:
    """What a person should see of an image: an RGBA array is put over a checkerboard (so a
    transparent background cannot pass for a white one) and comes back HxWx3; any other array is
    returned as it is. Only for display: downloads keep their alpha."""
    if arr.ndim != 3 or arr.shape[2] != 4:
        return arr
    h, w = arr.shape[:2]
    a = arr[:, :, 3:4].astype(np.uint16)
    bg = checkerboard(w, h, tile).astype(np.uint16)
    return ((arr[:, :, :3].astype(np.uint16) * a + bg * (255 - a) + 127) // 255).astype(np.uint8)


def shown_bytes(data: Optional[bytes]) -> Optional[bytes]:
    """Encoded image bytes (a stored thumbnail or output) ready for st.image: one with alpha is
    put over the checkerboard and re-encoded (PNG, lossless); one without is returned unchanged."""
    if data is None:
        return None
    from PIL import Image
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode not in ("RGBA", "LA", "PA") and "transparency" not in img.info:
                return data
            arr = np.asarray(img.convert("RGBA"))
    except Exception:           # not an image Pillow reads: st.image shows what it can
        log.debug("could not read an image for display", exc_info=True)
        return data
    buf = io.BytesIO()
    Image.fromarray(on_checkerboard(arr)).save(buf, format="PNG", compress_level=3)
    return buf.getvalue()


def display_image(arr: np.ndarray, max_side: int = 1024) -> bytes:
    """A browser-sized JPEG of a possibly 12 MP array; transparency (RGBA) is shown over a
    checkerboard (see `on_checkerboard`), PNG so the squares stay crisp."""
    from PIL import Image

    img = Image.fromarray(arr)
    img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if img.mode == "RGBA":
        Image.fromarray(on_checkerboard(np.asarray(img))).save(buf, format="PNG", optimize=False,
                                                              compress_level=3)
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def thumbnail(arr: np.ndarray, side: int = 256) -> bytes:
    return display_image(arr, side)


def size_text(n_bytes: int) -> str:
    if not n_bytes:
        return "—"
    for unit, div in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n_bytes >= div:
            return f"{n_bytes / div:.1f} {unit}"
    return f"{n_bytes} B"


def model_label(spec, present: bool) -> str:
    """Label for a model in a select box: name, what it is, and whether it still needs a download."""
    if spec.name == "grabcut":
        return "GrabCut — quick fallback, no download"
    note = "" if present else " (not downloaded)"
    return f"{spec.name} — {spec.description}{note}"


def state_selectbox(container, label: str, options: list, state: MutableMapping, state_key: str,
                    widget_key: str, **kwargs):
    """A selectbox showing (and setting) plain session state `state_key`.

    The state key, not the widget, is the source of truth, so several pages can offer the same
    choice (Editor sidebar, Models page) and History can set it before switching page.
    """
    options = list(options)
    current = state.get(state_key)
    if current not in options:
        options.append(current)

    def sync() -> None:
        state[state_key] = state[widget_key]

    return container.selectbox(label, options, index=options.index(current), key=widget_key,
                               on_change=sync, **kwargs)
