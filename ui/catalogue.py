"""The editor's Catalogue panel: a preset, the frame, margin and alignment, and a shadow (the run
spec's Framing, core/spec.py; widgets drawn from its fields by ui/fields.py), with a live preview at
preview size: the framed composite with its shadow on the colour, blur or transparent background
(core.catalogue stage/finish on the preview photo and mask); for an AI scene or a background
photo, the framed layout (the area the scene will fill is dimmed).

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import logging
import typing
from collections.abc import MutableMapping
from typing import Any, Optional

import numpy as np

from core.spec import Framing

log = logging.getLogger(__name__)

FIELDS = ("frame", "margin", "align", "shadow", "shadow_strength", "shadow_softness")
PREVIEW_SIDE = 480          # long side of the panel's preview
NO_PRESET = ""


def _key(name: str) -> str:
    from ui import fields
    return fields.state_key("framing", name)


def defaults() -> dict[str, Any]:
    """The panel's state keys and the spec's defaults (no frame, no shadow, no preset)."""
    out = {_key(n): Framing.model_fields[n].default for n in (*FIELDS, "preset")}
    out[_key("frame")] = out[_key("frame")] or ""
    out[_key("preset")] = out[_key("preset")] or NO_PRESET
    return out


def framing(state: MutableMapping) -> Framing:
    """The run spec's Framing from the panel (InvalidOptionError, one line, for a bad frame)."""
    from core.errors import InvalidOptionError

    values = {n: state.get(k, v) for n, (k, v) in zip((*FIELDS, "preset"), defaults().items())}
    values["frame"] = str(values["frame"] or "").strip() or None
    values["preset"] = values["preset"] or None
    try:
        return Framing(**values)
    except ValueError as e:
        msg = e.errors()[0]["msg"] if hasattr(e, "errors") else str(e)
        raise InvalidOptionError(str(msg).removeprefix("Value error, ")) from None


def to_state(state: MutableMapping, spec: Framing) -> None:
    """Set the panel from a run's Framing (Edit from here, Re-run)."""
    for n in (*FIELDS, "preset"):
        value = getattr(spec, n)
        state[_key(n)] = "" if value is None else value


def apply_preset(state: MutableMapping) -> None:
    """Set the panel (and a colour background) from the preset chosen."""
    from core import presets
    from ui import state as S

    name = state.get(_key("preset"))
    if not name:
        return
    values = presets.get(name)
    for n in FIELDS:
        if n in values and values[n] is not None:
            state[_key(n)] = values[n] if n != "frame" else "x".join(str(v) for v in values[n]) \
                if isinstance(values[n], (tuple, list)) else str(values[n])
    bg = str(values.get("background") or "")
    if bg.startswith("color:"):
        state["bg_kind"], state["bg_color"] = S.BG_COLOR, bg.split(":", 1)[1]


def preview_rgb(state: MutableMapping, mask: np.ndarray) -> np.ndarray:
    """The framed composite at preview size (RGB; a transparent result on a checkerboard)."""
    from core import catalogue
    from core.framing import Frame
    from core.spec import Background
    from ui import state as S

    spec = framing(state)
    rgb = state["preview"].rgb
    frame = catalogue.frame_of(spec)
    if frame is not None:
        s = min(1.0, PREVIEW_SIDE / max(frame.width, frame.height))
        frame = Frame(max(1, round(frame.width * s)), max(1, round(frame.height * s)), frame.margin, frame.align)
    staged = catalogue.stage(rgb, mask, None, frame)
    kind = state.get("bg_kind")
    if kind == S.BG_COLOR:
        background = Background.parse(f"color:{state.get('bg_color') or '#FFFFFF'}")
    elif kind == S.BG_BLUR:
        radius = max(1.0, float(state.get("blur_radius") or 25) * state["preview"].scale)
        background = Background.parse(f"blur:{radius!r}")
    elif kind == S.BG_TRANSPARENT:
        background = Background.parse("transparent")
    else:                      # AI scene, background photo: the layout, the area to fill dimmed
        dim = (staged.canvas.astype(np.float32) * 0.45 + 255 * 0.2).astype(np.uint8)
        return np.where(staged.paint_region[..., None] > 0, dim, staged.canvas)
    out = catalogue.finish(staged, background, catalogue.shadow_of(spec))
    if out.shape[2] == 4:      # transparent: show it over a checkerboard
        h, w = out.shape[:2]
        yy, xx = np.mgrid[0:h, 0:w]
        board = np.where(((yy // 12 + xx // 12) % 2)[..., None] == 0, 235, 200).astype(np.float32)
        a = out[..., 3:4].astype(np.float32) / 255
        return (out[..., :3] * a + board * (1 - a)).astype(np.uint8)
    return out


def panel(st, state: MutableMapping, mask: Optional[np.ndarray]) -> None:
    """The Catalogue expander: preset, frame, margin, align, shadow, and the live preview."""
    from core import presets
    from ui import fields
    from ui.widgets import escape_md, one_line

    with st.expander("Catalogue: preset, frame, margin, shadow", expanded=False):
        try:
            names = presets.names()
        except Exception as e:       # a bad presets.toml: one line, the built-in ones still work
            st.warning(escape_md(one_line(e, "reading the presets")))
            names = []
        fields.draw(st, "framing", "preset", state, options=[NO_PRESET, *names],
                    format_func=lambda n: n or "None", on_change=apply_preset, args=(state,))
        # a row of two per pair, so a phone's single column reads frame, margin, align, shadow,
        # then the shadow's strength and softness (columns stack whole, one after the other)
        c1, c2 = st.columns(2)
        fields.draw(c1, "framing", "frame", state, placeholder="2000x2000")
        fields.draw(c2, "framing", "margin", state)
        c1, c2 = st.columns(2)
        for col, name in ((c1, "align"), (c2, "shadow")):      # a choice of the field's values
            col.selectbox(fields.meta("framing", name)["label"], typing.get_args(Framing.model_fields[name].annotation),
                          key=_key(name), persist_state="session", help=Framing.model_fields[name].description)
        c1, c2 = st.columns(2)
        fields.draw(c1, "framing", "shadow_strength", state)
        fields.draw(c2, "framing", "shadow_softness", state)
        if mask is None:
            st.caption("Select the subject to see the framed result here.")
            return
        try:
            st.image(preview_rgb(state, mask), caption="Preview of the framed result (preview size)")
        except Exception as e:
            from core.errors import BackdropError
            if not isinstance(e, BackdropError):
                log.exception("the catalogue preview failed")
            st.warning(escape_md(one_line(e, "drawing the framed preview")))
