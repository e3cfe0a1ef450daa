"""The clickable photo: a small Streamlit component with a static frontend (frontend/index.html
and clicker.js, no build step).

In the browser a click's dot (green add, red remove) or a drag's box is drawn at once and a
spinner shows until the next picture, with the mask, arrives. Shift-click or right-click
removes whatever the click mode; a drag draws a box (with a mouse in click mode too; with a finger
in box mode); Ctrl+Z / Cmd+Z undoes the last click. What it returns is what
ui.canvas.apply_canvas_value reads.
"""
from __future__ import annotations

import base64
from pathlib import Path
from typing import Callable, Optional

import streamlit.components.v1 as components

_component = components.declare_component("backdrop_clicker", path=str(Path(__file__).parent / "frontend"))

IFRAME_SELECTOR = "iframe[title*='backdrop_clicker']"    # for browser tests and benchmarks


def clicker(jpeg: bytes, *, key: str, label: int = 1, box_mode: bool = False, seen=None,
            on_change: Optional[Callable[[], None]] = None) -> Optional[dict]:
    """Show `jpeg` (the preview with its overlay) full column width; return the last event (a
    click, box or undo, with the events not yet drawn under "events"), or None before any.

    `label` is what a plain click means (1 add, 0 remove), `box_mode` lets a finger drag a box,
    `seen` is the unix_time of the last event applied (its pending dot and the spinner go when
    the picture for it arrives)."""
    src = "data:image/jpeg;base64," + base64.b64encode(jpeg).decode("ascii")
    return _component(src=src, label=int(label), box_mode=bool(box_mode), seen=seen, key=key,
                      on_change=on_change, default=None)
