"""Simple backgrounds in the Editor (AppTest): the live preview of colour, blur, image and transparent
backgrounds on the clickable photo (core.compose at preview size, no run recorded), the colour's
hex input and presets, and Generate recording the full-size run."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from apptest_kit import no_exception, sample_clicked, wait_until  # noqa: E402

from ui import background, canvas  # noqa: E402
from ui import state as S  # noqa: E402


@pytest.fixture
def editor(monkeypatch, tiny_sam):
    """The Editor with the astronaut sample loaded and its subject clicked (tiny SAM)."""
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    at = sample_clicked()
    (result,) = at.session_state["seg_cache"].values()
    # tiny SAM's weights are random, so its masks are too: give its guesses a known subject (a
    # centred square), as a real model would find one, and redraw
    result.masks[:] = False
    result.masks[:, 128:384, 128:384] = True
    at.session_state["canvas_cache"] = at.session_state["canvas_recent"] = None
    at.run()
    no_exception(at)
    return at


def shown(at) -> np.ndarray:
    """The clickable photo as the browser gets it (the canvas JPEG), decoded."""
    return np.asarray(Image.open(io.BytesIO(at.session_state["canvas_cache"][1])).convert("RGB")).astype(int)


def background_pixels(at) -> np.ndarray:
    """(y, x) of preview pixels well away from the subject (the mask eroded the other way)."""
    import cv2
    (result,) = at.session_state["seg_cache"].values()
    mask = canvas.subject_mask(at.session_state, result)
    far = cv2.erode(255 - mask, np.ones((25, 25), np.uint8)) > 0
    assert far.sum() > 1000
    return np.argwhere(far)


def runs() -> int:
    from core.history import open_store
    return open_store().count_runs()


def test_colour_previews_live_without_a_run_then_generate_records_it(editor):
    at = editor
    at.segmented_control(key="bg_kind").set_value(S.BG_COLOR).run()
    no_exception(at)
    bg = background_pixels(at)
    assert at.text_input(key="bg_hex").value == "#FFFFFF"          # the value is shown, not only a swatch
    t0 = time.perf_counter()
    at.text_input(key="bg_hex").input("#1e90ff").run()
    elapsed = time.perf_counter() - t0
    no_exception(at)
    assert at.session_state["bg_color"] == "#1E90FF"
    px = shown(at)[bg[:, 0], bg[:, 1]]
    assert np.abs(px - (30, 144, 255)).max(axis=1).mean() < 12, px[:5]    # the photo shows the new colour
    assert elapsed < 5, elapsed        # a whole AppTest rerun; the preview itself is timed below

    at.pills(key="bg_color_preset").set_value("#000000").run()            # a preset
    no_exception(at)
    assert at.session_state["bg_color"] == "#000000" and at.text_input(key="bg_hex").value == "#000000"
    assert shown(at)[bg[:, 0], bg[:, 1]].max(axis=1).mean() < 12

    at.text_input(key="bg_hex").input("not a colour").run()
    assert at.session_state["bg_color"] == "#000000" and any("Not a colour" in e.value for e in at.error)

    at.segmented_control(key="canvas_view").set_value(background.MASK).run()   # back to the mask
    assert shown(at)[bg[:, 0], bg[:, 1]].max(axis=1).mean() > 40
    assert runs() == 0                                                  # previews are not runs

    at.segmented_control(key="canvas_view").set_value(background.PREVIEW).run()
    generate = next(b for b in at.button if b.label == "Generate")
    assert not generate.disabled
    generate.click().run()
    no_exception(at)
    assert at.session_state["job"] is not None or at.session_state["result"] is not None, \
        [e.value for e in at.error]
    wait_until(at, lambda a: a.session_state["job"] is None, what="the colour run")
    assert at.session_state["result"] is not None, at.session_state["job_notice"]
    assert runs() == 1
    out = at.session_state["result"]["outputs"][0]
    assert out.shape == at.session_state["photo"].rgb.shape          # full size


def test_transparent_preview_is_on_a_checkerboard_and_blur_and_image_preview(editor, tmp_path):
    at = editor
    at.segmented_control(key="bg_kind").set_value(S.BG_TRANSPARENT).run()
    no_exception(at)
    bg = background_pixels(at)
    px = shown(at)[bg[:, 0], bg[:, 1]].mean(axis=1)
    light, dark = (px > 235).mean(), ((px > 185) & (px < 225)).mean()
    assert light > 0.3 and dark > 0.3, (light, dark)               # white and grey squares, not white

    at.segmented_control(key="bg_kind").set_value(S.BG_BLUR).run()
    no_exception(at)
    blurred = shown(at)[bg[:, 0], bg[:, 1]]
    assert blurred.std() > 5                                         # the photo's own colours, blurred

    red = np.zeros((40, 60, 3), np.uint8)
    red[..., 0] = 255
    buf = io.BytesIO()
    Image.fromarray(red).save(buf, format="PNG")
    at.segmented_control(key="bg_kind").set_value(S.BG_IMAGE).run()
    at.file_uploader(key="bg_upload").set_value(("red wall.png", buf.getvalue(), "image/png")).run()
    no_exception(at)
    assert Path(at.session_state["bg_image_path"]).name == "red wall.png"   # History titles it so
    px = shown(at)[bg[:, 0], bg[:, 1]]
    assert (px[:, 0] > 200).mean() > 0.9 and (px[:, 1] < 60).mean() > 0.9
    assert runs() == 0


def test_preview_is_well_under_a_second(editor):
    at = editor
    state = at.session_state
    (result,) = state["seg_cache"].values()
    mask = canvas.subject_mask(state, result)
    for kind in (S.BG_COLOR, S.BG_BLUR, S.BG_TRANSPARENT):
        state["bg_kind"] = kind
        background.preview_rgb(state, mask)                           # warm
        t0 = time.perf_counter()
        for _ in range(3):
            canvas.background_preview(state, result)
        assert (time.perf_counter() - t0) / 3 < 0.3, kind


def test_hex_input_accepts_short_forms_and_names():
    assert background.normalise_hex("1e90ff") == "#1E90FF"
    assert background.normalise_hex("#18f") == "#1188FF"
    assert background.normalise_hex("white") == "#FFFFFF"
    assert background.normalise_hex("#12345") is None and background.normalise_hex("") is None
    assert background.stored_name("../../etc/pass wd.jpg") == "pass wd.png"
    assert background.stored_name("<script>.png") == "script.png"
    assert background.stored_name("....") == "background.png"
