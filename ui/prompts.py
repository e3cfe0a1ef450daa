"""The subject: the clicks and box the person made (in ORIGINAL pixels, (x, y) order), the
segmenter that turns them into masks at the preview size, and the mask candidate chosen.

`state["prompts"]` is a list of {"kind": "point", "x", "y", "label"} (label 1 = add, 0 = remove)
and {"kind": "box", "box": (x1, y1, x2, y2)} in the order made, so Undo pops the last one. It is
reassigned, never mutated in place. Masks come from `segment_preview`: the embedding was computed
once (ui.photo.ensure_prepared), a click only runs the cheap decoder, and the result is cached for
the current prompts.

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import hashlib
import logging
from collections.abc import MutableMapping
from contextlib import contextmanager
from typing import Optional

from core.errors import BackdropError
from ui import resources
from ui.photo import preview_size

log = logging.getLogger(__name__)

NO_EMBEDDING = {"grabcut"}   # segmenters that keep nothing per image: segment the preview directly


# ----------------------------------------------------------------------------- clicks and box
def push(state: MutableMapping, prompt: dict) -> None:
    """Add a click or box (ORIGINAL pixels); a new prompt picks the best candidate again."""
    state["prompts"] = [*state.get("prompts", []), prompt]
    state["candidate"] = None
    _keep(state)


def add_click(state: MutableMapping, x: float, y: float, label: int = 1) -> None:
    """Add a click given in ORIGINAL pixels (label 1 = keep, 0 = remove)."""
    push(state, {"kind": "point", "x": float(x), "y": float(y), "label": int(label)})


def add_box(state: MutableMapping, box: tuple[float, float, float, float]) -> None:
    """Add a box (x1, y1, x2, y2) in ORIGINAL pixels."""
    push(state, {"kind": "box", "box": tuple(box)})


def undo(state: MutableMapping) -> None:
    """Take back the last click; with none left, the found subject (ui.auto)."""
    from ui import auto
    if not state.get("prompts"):
        auto.drop(state)
    state["prompts"] = list(state.get("prompts", []))[:-1]
    state["candidate"] = None


def clear(state: MutableMapping) -> None:
    from ui import auto
    auto.drop(state)
    state["prompts"] = []
    state["candidate"] = None


def clicks(state: MutableMapping):
    """The clicks as core.segment.Click tuples, ORIGINAL pixels."""
    from core.segment import Click
    return tuple(Click(p["x"], p["y"], p["label"]) for p in state.get("prompts", [])
                 if p["kind"] == "point")


def box(state: MutableMapping) -> Optional[tuple[float, float, float, float]]:
    """The last box drawn (ORIGINAL pixels), or None."""
    boxes = [p["box"] for p in state.get("prompts", []) if p["kind"] == "box"]
    return tuple(float(v) for v in boxes[-1]) if boxes else None


def has_subject(state: MutableMapping) -> bool:
    """Clicks or a box made, or the subject found (ui.auto)."""
    from ui import auto
    return bool(state.get("prompts")) or auto.current(state) is not None


def prompt_summary(state: MutableMapping) -> str:
    pts = clicks(state)
    pos = sum(1 for c in pts if c.label == 1)
    parts = [f"{pos} add", f"{len(pts) - pos} remove"]
    if box(state):
        parts.append("1 box")
    from ui import auto
    if auto.current(state) is not None:
        parts.insert(0, "found")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- segmenter
def load_segmenter(engine, state: MutableMapping, name: str) -> tuple[str, object, list[str]]:
    """(name, segmenter, one-line errors) for the segmenter chosen (after
    resources.choose_segmenter), from `engine` (core.engine: in this process or on the service;
    `state` keeps a service's embedding handles): when it fails to load, GrabCut instead;
    segmenter None when even that fails."""
    from core.engine import CAN_LOCAL_MODELS

    errors: list[str] = []
    for what, candidate in (("loading the segmentation model", name), ("loading GrabCut", resources.GRABCUT)):
        try:
            with preparing_shown():
                return candidate, engine.segmenter(candidate, state), errors
        except Exception as e:
            errors.append(_load_error(e, candidate, what))
        if name == resources.GRABCUT or not engine.can(CAN_LOCAL_MODELS):   # (the service's own)
            break
    return resources.GRABCUT, None, errors


@contextmanager
def preparing_shown():
    """While a model's CPU engine is prepared (once, under BACKDROP_CPU_BACKEND=openvino: docs/cpu.md),
    a progress bar here says so and how far it is; then a toast says it is ready. Nothing otherwise."""
    import threading
    import time

    import streamlit as st
    from streamlit.runtime.scriptrunner import add_script_run_ctx, get_script_run_ctx

    from core import cpu_engine

    ctx, box, t0, heard = get_script_run_ctx(), st.empty(), time.monotonic(), []

    def show(text: str, fraction: float) -> None:      # also from the engine's ticking thread
        add_script_run_ctx(threading.current_thread(), ctx)
        heard.append(text)
        box.progress(min(max(fraction, 0.0), 1.0),
                     text=f"{text[:1].upper()}{text[1:]}… {time.monotonic() - t0:.0f} s")

    with cpu_engine.progress_to(show):
        try:
            yield
        finally:
            box.empty()
            if heard:
                st.toast(f"The CPU engine is ready (prepared once in {time.monotonic() - t0:.0f} s)")


def _load_error(e: Exception, name: str, what: str) -> str:
    from ui.widgets import one_line

    if isinstance(e, BackdropError):
        log.info("segmenter %s not loaded: %s", name, e)
    else:
        log.exception("loading segmenter %s failed", name)
    return one_line(e, what)


# ----------------------------------------------------------------------------- masks
def seg_key(state: MutableMapping, segmenter_name: str) -> str:
    """Identifies one segmentation: the photo, the segmenter and the prompts."""
    from ui import auto
    raw = repr((state["photo"].hash, segmenter_name, state.get("prompts"), auto.key(state)))
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def segment_preview(state: MutableMapping, segmenter, segmenter_name: str):
    """SegmentResult at the preview size for the current prompts (cached; None without prompts)."""
    from core.segment import Click, SegmentRequest

    if not has_subject(state):
        return None
    key = seg_key(state, segmenter_name)
    cache = state.get("seg_cache") or {}
    if key in cache:
        return cache[key]
    # GrabCut works on a <= 512 px copy anyway: start from the preview, not the 12 MP photo. Other
    # segmenters (and the service's, which holds the photo) take ORIGINAL pixels.
    local = segmenter_name in NO_EMBEDDING and not getattr(segmenter, "remote", False)
    s = state["preview"].scale if local else 1.0
    rgb = state["preview"].rgb if local else state["photo"].rgb
    points = tuple(Click(c.x * s, c.y * s, c.label) for c in clicks(state))
    found = _auto_mask(state)
    if found is not None:       # the subject found, refined by the clicks
        from core.refine import refine
        result = refine(segmenter, rgb, found, points, out_size=preview_size(state))
    else:
        b = box(state)
        request = SegmentRequest(clicks=points, box=None if b is None else tuple(v * s for v in b),
                                 multimask=True)
        result = segmenter.segment(rgb, request, out_size=preview_size(state))
    state["seg_cache"] = {key: result}          # one entry: the current prompts
    return result


def _auto_mask(state: MutableMapping):
    from ui import auto
    found = auto.current(state)
    return None if found is None else found["mask"]


# ----------------------------------------------------------------------------- candidate
def candidate_key(state: MutableMapping, segmenter_name: str) -> str:
    """Widget key of the candidate picker: new for every new segmentation, so it resets to best."""
    return "cand-" + seg_key(state, segmenter_name)


def chosen(state: MutableMapping, result) -> int:
    """Index of the candidate in use: the one picked, else the best-scoring one."""
    index = state.get("candidate")
    if index is None or not 0 <= index < len(result.masks):
        return int(result.best)
    return int(index)


def pick_candidate(state: MutableMapping, result, index: int) -> None:
    """Record the candidate the person picked (None stands for "the best one")."""
    state["candidate"] = None if index == int(result.best) else int(index)
    _keep(state)


def _keep(state: MutableMapping) -> None:
    """A click runs only the photo's part of the page: keep the work for a reload now (ui.saved)."""
    from ui import saved
    saved.save(state)

