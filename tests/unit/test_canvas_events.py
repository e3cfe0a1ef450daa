"""What the photo component (ui.clicker) reports becomes clicks, boxes and undos in session state
(ui.canvas.apply_canvas_value), on a plain dict: shift-click / right-click removes whatever the
click mode, Ctrl+Z takes back the last prompt, and clicks made while the last one was still being
segmented all count, once each."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core.images import load_image
from ui import canvas, photo
from ui import state as S


@pytest.fixture
def state() -> dict:
    st: dict = {}
    S.init_session(st)
    rgb = np.zeros((300, 400, 3), np.uint8)        # preview = the photo (smaller than PREVIEW_SIDE)
    rgb[100:200, 150:250] = 200
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    photo.load_photo(st, load_image(buf.getvalue()), "square.png")
    return st


def click(x, y, t, **extra) -> dict:
    return {"x": x, "y": y, "width": 200, "height": 150, "unix_time": t, **extra}   # shown at half size


def labels(state) -> list:
    return [p.get("label") for p in state["prompts"]]


def test_shift_click_and_explicit_label_remove_whatever_the_mode(state):
    assert canvas.apply_canvas_value(state, click(100, 75, 1))
    assert canvas.apply_canvas_value(state, click(10, 10, 2, shift=True))
    assert canvas.apply_canvas_value(state, click(12, 10, 3, label=0))
    state["click_mode"] = S.REMOVE
    assert canvas.apply_canvas_value(state, click(100, 80, 4, label=1))   # the dot shown was green
    assert canvas.apply_canvas_value(state, click(100, 90, 5))            # no label: the mode decides
    assert labels(state) == [1, 0, 0, 1, 0]
    assert state["prompts"][1]["x"] == pytest.approx(20) and state["prompts"][1]["y"] == pytest.approx(20)


def test_undo_event_takes_back_the_last_prompt_once(state):
    canvas.apply_canvas_value(state, click(100, 75, 1))
    canvas.apply_canvas_value(state, click(10, 10, 2, label=0))
    undo = {"undo": True, "width": 200, "height": 150, "unix_time": 3}
    assert canvas.apply_canvas_value(state, undo)
    assert labels(state) == [1]
    assert not canvas.apply_canvas_value(state, undo)          # the same value on the next rerun
    assert labels(state) == [1]
    assert canvas.apply_canvas_value(state, {**undo, "unix_time": 4})
    assert state["prompts"] == []
    assert not canvas.apply_canvas_value(state, {**undo, "unix_time": 5})   # nothing left to undo


def test_pending_events_are_applied_once_each_in_order(state):
    c1, c2 = click(100, 75, 10), click(10, 10, 11, shift=True)
    box = {"x1": 20, "y1": 20, "x2": 180, "y2": 130, "width": 200, "height": 150, "unix_time": 12}
    undo = {"undo": True, "width": 200, "height": 150, "unix_time": 13}
    assert canvas.apply_canvas_value(state, {**c1, "events": [c1]})
    # two more clicks came while the first was segmented: the component sends all it has not drawn
    assert canvas.apply_canvas_value(state, {**box, "events": [c1, c2, box]})
    assert [p["kind"] for p in state["prompts"]] == ["point", "point", "box"]
    assert state["prompts"][2]["box"] == pytest.approx((40, 40, 360, 260))
    assert not canvas.apply_canvas_value(state, {**box, "events": [c1, c2, box]})    # a rerun
    assert canvas.apply_canvas_value(state, {**undo, "events": [box, undo]})
    assert labels(state) == [1, 0]
