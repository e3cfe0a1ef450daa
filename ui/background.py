"""The simple backgrounds in the Editor: colour controls (picker, hex, presets, the last used), the
live preview of colour / blur / image / transparent backgrounds on the clickable photo, and the file
name an uploaded background photo is kept under.

The preview is core.compose at the PREVIEW size (ui.photo.PREVIEW_SIDE) with the mask the canvas
shows, so it is what Generate will make, drawn in a few milliseconds and never recorded: Generate
makes the full-size run and records it in History.

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import logging
import re
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from ui import state as S

log = logging.getLogger(__name__)

PREVIEW, MASK = "preview", "mask"
VIEWS = (PREVIEW, MASK)
VIEW_LABELS = {PREVIEW: "New background", MASK: "Mask"}
PREVIEW_KINDS = (S.BG_COLOR, S.BG_BLUR, S.BG_IMAGE, S.BG_TRANSPARENT)
PRESETS = {"#FFFFFF": "White", "#D9D9D9": "Light grey", "#808080": "Grey", "#404040": "Dark grey",
           "#000000": "Black"}
SWATCH_CSS = ("<style>[data-testid='stColorPickerBlock']{outline:1px solid rgba(49,51,63,0.35);"
              "outline-offset:-1px}</style>")
RECENT_MAX = 3               # colours of the last colour runs offered besides the presets


# ----------------------------------------------------------------------------- colour
def normalise_hex(text: Any) -> Optional[str]:
    """"#rrggbb" / "rgb" / "#RGB" / a colour name -> "#RRGGBB"; None when it is not a colour."""
    from core.spec import parse_color
    t = str(text or "").strip()
    if re.fullmatch(r"[0-9A-Fa-f]{3}|[0-9A-Fa-f]{6}", t):
        t = "#" + t
    try:
        return "#%02X%02X%02X" % tuple(parse_color(t))
    except Exception:
        return None


def recent_colors(state: MutableMapping) -> list[str]:
    """The colours of the last colour runs in History (when it can be read), newest first,
    presets left out."""
    out: list[str] = []
    try:
        from core.history import RunQuery
        from ui import resources
        runs = resources.store().list_runs(RunQuery(background_kind="color"), limit=12).runs
        out = ["#%02X%02X%02X" % tuple(r.spec.background.color) for r in runs]
    except Exception:          # no history (or not reachable): the presets only
        log.debug("recent colours from History not available", exc_info=True)
    seen: list[str] = []
    for c in out:
        if c not in PRESETS and c not in seen:
            seen.append(c)
    return seen[:RECENT_MAX]


def _set_color(state: MutableMapping, value: Optional[str]) -> None:
    if value:
        state["bg_color"] = value
        state["bg_hex"] = value


def _on_hex(state: MutableMapping) -> None:
    value = normalise_hex(state.get("bg_hex"))
    if value is None:
        state["bg_hex_error"] = "Not a colour: type six hex digits like #1E90FF (or a name like teal)."
        return
    state["bg_hex_error"] = None
    _set_color(state, value)


def _on_picker(state: MutableMapping) -> None:
    state["bg_hex"] = normalise_hex(state.get("bg_color")) or state.get("bg_hex")
    state["bg_hex_error"] = None


def _on_preset(state: MutableMapping) -> None:
    _set_color(state, state.get("bg_color_preset"))


def color_controls(state: MutableMapping) -> None:
    """Picker (with its hex value beside it) and presets: white, greys, black, the last used."""
    import streamlit as st
    from ui.widgets import escape_md

    current = normalise_hex(state.get("bg_color")) or "#FFFFFF"
    if state.get("bg_hex") is None or (normalise_hex(state.get("bg_hex")) != current
                                       and not state.get("bg_hex_error")):
        state["bg_hex"] = current
    options = [*PRESETS, *recent_colors(state)]
    state["bg_color_preset"] = current if current in options else None
    st.html(SWATCH_CSS)         # a white swatch gets an outline on the white page (no user text here)
    c1, c2 = st.columns([1, 2], vertical_alignment="bottom")
    c1.color_picker("Colour", key="bg_color", persist_state="session", on_change=_on_picker, args=(state,))
    c2.text_input("Hex", key="bg_hex", on_change=_on_hex, args=(state,),
                  help="Six hex digits (#1E90FF), three (#18F) or a colour name.")
    if state.get("bg_hex_error"):
        st.error(escape_md(state["bg_hex_error"]))
    st.pills("Presets", options, key="bg_color_preset", on_change=_on_preset, args=(state,), wrap=True,
             format_func=lambda c: PRESETS.get(c, f"{c} (recent)"), label_visibility="collapsed")


# ----------------------------------------------------------------------------- preview
def preview_on(state: MutableMapping) -> bool:
    """Whether the clickable photo shows the new background (a simple one is chosen and the
    "Photo shows" control says so)."""
    if state.get("bg_kind") not in PREVIEW_KINDS or state.get("canvas_view", PREVIEW) != PREVIEW:
        return False
    return state.get("bg_kind") != S.BG_IMAGE or bool(state.get("bg_image_path"))


def preview_key(state: MutableMapping) -> Optional[tuple]:
    """What of the background the preview depends on (part of the canvas cache key), None when
    the photo shows the mask."""
    if not preview_on(state):
        return None
    kind = state.get("bg_kind")
    detail = {S.BG_COLOR: state.get("bg_color"), S.BG_BLUR: state.get("blur_radius"),
              S.BG_IMAGE: state.get("bg_image_path")}.get(kind)
    return (kind, detail, state.get("edge_method") if state.get("edge") != S.EDGE_HARD else None)


def _image_layer(state: MutableMapping, path: str, size: tuple[int, int]) -> np.ndarray:
    """The background photo cover-fitted to the preview (read once per photo and size)."""
    from core.compose import cover_fit, read_background_image
    cached = state.get("bg_preview_layer")
    if cached and cached[0] == (path, size):
        return cached[1]
    layer = cover_fit(read_background_image(path), size)
    state["bg_preview_layer"] = ((path, size), layer)
    return layer


def preview_rgb(state: MutableMapping, subject: np.ndarray, feather: int = 0, matte=None) -> np.ndarray:
    """The preview photo with the chosen background behind `subject` (HxW uint8 mask at preview
    size, 255 = subject): core.compose at preview size; transparency over the checkerboard."""
    from core.compose import compose
    from core.spec import Background
    from ui.widgets import on_checkerboard

    rgb = state["preview"].rgb
    kind = state.get("bg_kind")
    generated = None
    if kind == S.BG_COLOR:
        spec = Background.parse(f"color:{normalise_hex(state.get('bg_color')) or '#FFFFFF'}")
    elif kind == S.BG_BLUR:   # the radius is in pixels of the full-size photo: scaled like the mask
        spec = Background("blur", radius=max(0.5, float(state.get("blur_radius") or 1) * state["preview"].scale))
    elif kind == S.BG_IMAGE:  # the photo layer is cached; compose takes it as a ready layer
        spec = Background("sd")
        generated = _image_layer(state, state["bg_image_path"], (rgb.shape[1], rgb.shape[0]))
    else:
        spec = Background("transparent")
    out = compose(rgb, subject, spec, feather=feather, generated=generated, matte=matte)
    return on_checkerboard(out)


def view_control(state: MutableMapping) -> None:
    """Under the background choice: what the photo shows (the new background, or the mask) and
    that Generate makes the full-size result."""
    import streamlit as st

    if state.get("bg_kind") not in PREVIEW_KINDS:
        return
    drawn = state.get("canvas_bg_drawn")
    if drawn and drawn[0] and drawn[1] != preview_key(state):
        st.rerun()     # the background changed after the photo was drawn (a photo just uploaded)
    state.setdefault("canvas_view", PREVIEW)
    st.segmented_control("The photo shows", VIEWS, key="canvas_view", persist_state="session",
                         required=True, format_func=VIEW_LABELS.get, wrap=True,
                         help="A live preview at screen size; Generate makes the full-size result "
                              "and keeps it in History.")
    from ui import prompts
    if state.get("bg_kind") == S.BG_IMAGE and not state.get("bg_image_path"):
        st.caption("Upload a background photo to see it behind the subject.")
    elif not prompts.has_subject(state):
        st.caption("Click on the subject: the photo then shows the new background behind it.")
    else:
        st.caption("Live preview on the photo (not saved). Generate makes the full-size result and "
                   "keeps it in History.")
        phone_preview(state)


def phone_preview(state: MutableMapping) -> None:
    """On a phone the photo sits above these controls, out of sight: a small copy of the live
    preview here (the page's CSS, ui/layout.py, hides it on a wider screen)."""
    import streamlit as st

    drawn = state.get("canvas_cache")      # (key, JPEG) of the photo drawn in this run
    if not drawn or not preview_on(state) or drawn[0][-1] != preview_key(state):
        return
    with st.container(key="phone_preview"):
        st.image(drawn[1], width=240, caption="The photo with this background (live preview)")


# ----------------------------------------------------------------------------- stored name
def stored_name(name: Optional[str]) -> str:
    """The file name (PNG) an uploaded background photo is kept under: its own name's stem with
    only letters, digits, spaces and ._-() kept, at most 80 characters; "background" if nothing
    is left. History titles the run with it (ui.history.image_name)."""
    stem = Path(str(name or "")).stem
    safe = re.sub(r"[^\w .()-]+", "_", stem, flags=re.ASCII).strip(" ._")[:80].strip(" ._")
    return f"{safe or 'background'}.png"


def background_path(folder: Path, digest: str, name: Optional[str]) -> Path:
    """Where an uploaded background photo goes: `folder/<hash>/<its name>.png`, or the file already
    there when the same photo was uploaded before (under any name): one copy per photo."""
    sub = folder / digest[:32]
    if sub.is_dir():
        for existing in sorted(sub.glob("*.png")):
            return existing
    return sub / stored_name(name)
