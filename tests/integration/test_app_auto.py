"""The editor's "Find the subject" through AppTest: the subject of a studio shot selected with no
click (the mask overlay and Generate follow), a click refines it, Undo/Clear take it back, a blank
photo gives one line, and "Find the subject on upload" does it for each new photo (and is kept
like the other options). GrabCut is the segmenter: no weights."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import button, no_exception  # noqa: E402
from photos import png, studio_shot  # noqa: E402

from ui import canvas, saved  # noqa: E402
from ui import state as S  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


@pytest.fixture(autouse=True)
def grabcut(monkeypatch):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")


def upload(at, rgb, name="shot.png"):
    at.file_uploader(key="upload").set_value((name, png(rgb), "image/png")).run()
    no_exception(at)


def mask(at) -> np.ndarray:
    (result,) = at.session_state["seg_cache"].values()
    return result.masks[result.best]


def labels(node) -> list[str]:
    """The widgets' labels in the page's order (a column's widgets before the next column's)."""
    out = []
    for child in getattr(node, "children", {}).values():
        if getattr(child, "label", None):
            out.append(child.label)
        out += labels(child)
    return out


def iou(a, b) -> float:
    return float((a & b).sum() / max(1, (a | b).sum()))


def small(truth, shape):
    import cv2
    return cv2.resize(truth.astype(np.uint8), (shape[1], shape[0]), interpolation=cv2.INTER_NEAREST) > 0


def test_find_the_subject_then_a_remove_click_corrects_it():
    rgb, truth, blue = studio_shot()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.session_state["bg_kind"] = "Colour"
    upload(at, rgb)
    assert button(at, "Generate").disabled                       # nothing selected yet
    button(at, "Find the subject").click().run()
    no_exception(at)
    found = mask(at)
    both = small(truth | blue, found.shape)
    assert iou(found, both) > 0.95                                # both objects, not the shadow
    assert not button(at, "Generate").disabled
    assert any("Mask ready" in c.value for c in at.caption)
    assert S.spec_from_state(at.session_state).subject.auto        # the run finds it again
    # a remove click on the blue object (displayed at the preview's own size) takes it out
    pw, ph = found.shape[1], found.shape[0]
    at.session_state["click_mode"] = "Remove (exclude)"
    canvas.apply_canvas_value(at.session_state, {"x": 650 * pw / 800, "y": 360 * ph / 600,
                                                 "width": pw, "height": ph, "unix_time": 1})
    at.run()
    no_exception(at)
    assert iou(mask(at), small(truth, found.shape)) > 0.95        # the product alone
    button(at, "Undo").click().run()        # the click
    no_exception(at)
    assert iou(mask(at), both) > 0.95
    assert S.spec_from_state(at.session_state).subject.clicks == ()
    button(at, "Undo").click().run()        # then the subject found
    no_exception(at)
    assert button(at, "Generate").disabled


def test_a_blank_photo_is_one_line():
    at = AppTest.from_file(APP, default_timeout=120).run()
    upload(at, np.full((300, 400, 3), 240, np.uint8), "blank.png")
    button(at, "Find the subject").click().run()
    no_exception(at)
    notes = [w.value for w in at.warning if "subject" in w.value.lower()]
    assert len(notes) == 1 and "\n" not in notes[0] and "Traceback" not in notes[0], notes
    assert button(at, "Generate").disabled


def test_find_on_upload_is_an_option_kept_with_the_work():
    rgb, truth, _ = studio_shot()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.toggle(key="auto_on_upload").set_value(True).run()
    upload(at, rgb)
    found = mask(at)                          # found with no button pressed
    assert iou(found & small(truth, found.shape), small(truth, found.shape)) > 0.95
    assert saved.work_of(at.session_state)["settings"]["auto_on_upload"] is True     # kept for a reload


def test_catalogue_panel_frames_the_preview_and_goes_into_the_spec():
    """The Catalogue panel: a preset fills frame, margin and shadow from the spec's fields; the
    preview is the framed composite (square, white, the subject inside the margin, a shadow under
    it); the run's spec carries the values."""
    rgb, truth, _ = studio_shot()
    at = AppTest.from_file(APP, default_timeout=120).run()
    at.session_state["bg_kind"] = "Colour"
    upload(at, rgb)
    button(at, "Find the subject").click().run()
    at.selectbox(key="cat_preset").set_value("amazon").run()
    no_exception(at)
    spec = S.spec_from_state(at.session_state)
    assert spec.framing.preset == "amazon" and spec.framing.size == (2000, 2000)
    assert spec.framing.shadow == "contact"
    from ui import canvas, catalogue
    (result,) = at.session_state["seg_cache"].values()
    framed = catalogue.preview_rgb(at.session_state, canvas.subject_mask(at.session_state, result))
    assert framed.shape == (catalogue.PREVIEW_SIDE, catalogue.PREVIEW_SIDE, 3)      # the square frame
    assert (framed[:5, :5] == 255).all()                          # pure white (the preset's colour)
    dark = (framed.astype(int).sum(axis=2) < 600).any(axis=1)
    rows = np.nonzero(dark)[0]
    assert rows.min() > 0.05 * catalogue.PREVIEW_SIDE * 0.9        # the margin above the subject
    # in the order a phone shows them (columns stack): the shadow's kind before its strength
    order = labels(at.main)
    assert order.index("Shadow") < order.index("Shadow strength") < order.index("Shadow softness"), order
    assert order.index("Frame (WxH, empty = photo size)") < order.index("Shadow"), order
    at.text_input(key="cat_frame").set_value("1200x600").run()
    no_exception(at)
    assert S.spec_from_state(at.session_state).framing.size == (1200, 600)
    at.text_input(key="cat_frame").set_value("big").run()
    no_exception(at)
    assert any("frame" in w.value for w in at.warning)          # one line, no traceback
