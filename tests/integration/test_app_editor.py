"""Editor page through Streamlit's AppTest: photo intake, clicks -> mask, undo/clear, generation
(tiny SAM + tiny SD inpainting), cancel, and one-line errors. The custom image component cannot be
clicked in AppTest, so clicks go through the same handler the component's callback uses
(ui.canvas.apply_canvas_value) with the value dict the component sends."""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import button, no_exception, wait_until  # noqa: E402
import waiting  # noqa: E402

from ui import canvas, job, photo, prompts  # noqa: E402
from ui import state as S  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
RUN_TIMEOUT = 120


@pytest.fixture
def tiny_env(monkeypatch, tiny_sam, tiny_inpaint):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")


def new_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT)
    return at.run()


def png_bytes(rgb: np.ndarray, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format=fmt)
    return buf.getvalue()


def click(at: AppTest, x: float, y: float, *, width: float, height: float, t: int) -> bool:
    """What the image component sends for a click at displayed (x, y) on a width x height display."""
    return canvas.apply_canvas_value(at.session_state, {"x": x, "y": y, "width": width, "height": height,
                                                    "unix_time": t})


def load_sample(at: AppTest, label: str = "Astronaut") -> None:
    at.button(key=f"sample-{label}").click().run()
    no_exception(at)
    assert at.session_state["photo"] is not None



def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


# ---------------------------------------------------------------------------------------------
def test_editor_starts_with_upload_and_samples(tiny_env):
    at = new_app()
    no_exception(at)
    assert at.title[0].value == "Replace a photo's background"
    assert [b.label for b in at.button][:3] == list(photo.SAMPLES)
    assert at.file_uploader(key="upload").label.startswith("1 · Upload a photo")
    assert any("Upload a photo or pick a sample" in i.value for i in at.info)
    assert at.sidebar.selectbox(key="seg_pick").value == "tiny"


def test_sample_photo_loads_preview_and_prepares_embedding(tiny_env):
    at = new_app()
    load_sample(at, "Cat")
    photo, preview = at.session_state["photo"], at.session_state["preview"]
    assert photo.size == (451, 300)
    assert preview.rgb.shape[:2] == (300, 451)          # never upscaled
    task = at.session_state["prepare"]
    assert task is not None and task.kind == "prepare"
    assert task.wait(120) and task.error is None
    assert "Click on the subject" in captions(at)


def test_upload_real_photo_and_bad_file(tiny_env, coffee):
    at = new_app()
    at.file_uploader(key="upload").set_value(("not-a-photo.jpg", b"this is not an image", "image/jpeg"))
    at.run()
    no_exception(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("Could not use that file:")
    assert "\n" not in errors[0] and "Traceback" not in errors[0]
    assert at.session_state["photo"] is None

    name = "coffee *[x](http://evil.example)* <b>.png"
    at.file_uploader(key="upload").set_value((name, png_bytes(coffee), "image/png")).run()
    no_exception(at)
    assert not at.error
    assert at.session_state["photo"].size == (600, 400)
    assert at.session_state["photo_name"] == name
    # the file name is shown as text: Markdown (links, emphasis, HTML) is escaped
    assert r"coffee \*\[x\](http://evil.example)\* \<b\>.png" in captions(at)


def test_click_maps_displayed_pixels_to_original_and_draws_mask(tiny_env, coffee):
    big = np.asarray(Image.fromarray(coffee).resize((2400, 1600), Image.Resampling.BICUBIC))
    at = new_app()
    at.file_uploader(key="upload").set_value(("big.jpg", png_bytes(big, "JPEG"), "image/jpeg")).run()
    no_exception(at)
    preview = at.session_state["preview"]
    assert max(preview.rgb.shape[:2]) == photo.PREVIEW_SIDE        # downscaled preview for the browser
    # The component shows the preview at 512x341 px; a click at its centre is the photo's centre.
    assert click(at, 256, 170.5, width=512, height=341, t=1)
    (p,) = at.session_state["prompts"]
    assert p["kind"] == "point" and p["label"] == 1
    assert abs(p["x"] - 1200) <= 6 and abs(p["y"] - 800) <= 6
    # The same event comes back on every rerun: it must not add a second click.
    assert not click(at, 256, 170.5, width=512, height=341, t=1)
    at.run()
    no_exception(at)
    assert len(at.session_state["prompts"]) == 1
    assert "Mask ready" in captions(at)
    (result,) = at.session_state["seg_cache"].values()
    assert result.masks.shape[1:] == preview.rgb.shape[:2]       # segmented at preview size
    jpeg = at.session_state["canvas_cache"][1]
    assert jpeg[:2] == b"\xff\xd8" and len(jpeg) < 400_000          # what the browser gets


def test_remove_mode_box_undo_and_clear(tiny_env):
    at = new_app()
    load_sample(at)
    click(at, 200, 200, width=512, height=512, t=1)
    at.segmented_control(key="click_mode").set_value(S.REMOVE).run()
    click(at, 50, 60, width=512, height=512, t=2)
    at.toggle(key="box_mode").set_value(True).run()
    canvas.apply_canvas_value(at.session_state, {"x1": 100, "y1": 90, "x2": 400, "y2": 500,
                                             "width": 512, "height": 512, "unix_time": 3})
    # a "drag" of a few pixels is a click
    canvas.apply_canvas_value(at.session_state, {"x1": 300, "y1": 300, "x2": 302, "y2": 301,
                                             "width": 512, "height": 512, "unix_time": 4})
    at.run()
    no_exception(at)
    kinds = [(p["kind"], p.get("label")) for p in at.session_state["prompts"]]
    assert kinds == [("point", 1), ("point", 0), ("box", None), ("point", 0)]
    assert at.session_state["prompts"][2]["box"] == (100, 90, 400, 500)
    assert "Mask ready" in captions(at)

    button(at, "Undo").click().run()
    no_exception(at)
    assert len(at.session_state["prompts"]) == 3
    button(at, "Clear").click().run()
    no_exception(at)
    assert at.session_state["prompts"] == []
    assert button(at, "Undo").disabled and button(at, "Generate").disabled


def test_candidate_choice_and_edge_controls(tiny_env):
    at = new_app()
    load_sample(at)
    click(at, 256, 256, width=512, height=512, t=1)
    at.run()
    result = next(iter(at.session_state["seg_cache"].values()))
    assert len(result.masks) == 3
    radio = at.radio(key=prompts.candidate_key(at.session_state, "tiny"))
    assert radio.value == int(result.best)
    other = (int(result.best) + 1) % 3
    radio.set_value(other).run()
    no_exception(at)
    assert at.session_state["candidate"] == other
    assert f"candidate {other + 1} of 3" in captions(at)
    before = at.session_state["canvas_cache"][1]
    at.toggle(key="invert").set_value(True).run()
    at.number_input(key="grow").set_value(10).run()
    no_exception(at)
    assert at.session_state["canvas_cache"][1] != before            # overlay follows the controls
    at.text_area(key="prompt").input("a meadow").run()
    request = job.job_request(at.session_state, "tiny")
    assert request.spec.subject.candidate == other
    assert request.spec.mask.invert and request.spec.mask.grow == 10


def _generate_and_wait(at: AppTest) -> None:
    button(at, "Generate").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    wait_until(at, lambda a: a.session_state["job"] is None, what="the job to finish")


def test_generate_with_tiny_sd_records_exactly_one_history_row(tiny_env):
    from core.history import open_store

    at = new_app()
    load_sample(at)
    click(at, 256, 200, width=512, height=512, t=1)
    at.run()
    at.text_area(key="prompt").input("a quiet beach, **bold** <b>not html</b>").run()
    at.slider(key="steps").set_value(2).run()
    at.text_input(key="seed").input("7").run()
    _generate_and_wait(at)
    assert not at.error, [e.value for e in at.error]
    res = at.session_state["result"]
    assert res is not None and res["run_id"] is not None
    assert res["outputs"][0].shape == (512, 512, 3)
    assert res["seeds"] == [7]
    assert any(s.value.startswith("Done in") for s in at.success)
    assert [b.label for b in at.get("download_button")] == ["Download PNG (512×512)"]
    store = open_store()
    assert store.count_runs() == 1
    run = store.get_run(res["run_id"])
    assert run.status == "succeeded" and run.prompt == "a quiet beach, **bold** <b>not html</b>"
    spec = run.spec
    assert spec.generation.model == "tiny" and spec.subject.segmenter == "tiny" and spec.generation.seed == 7
    assert [(c.x, c.y, c.label) for c in spec.subject.clicks] == [(256.0, 200.0, 1)]


def green_background_on_the_coffee_cup() -> AppTest:
    """The editor with the coffee cup loaded, clicked on, and a green colour background chosen."""
    at = new_app()
    load_sample(at, "Coffee cup")
    click(at, 300, 200, width=600, height=400, t=1)
    at.run()
    at.segmented_control(key="bg_kind").set_value(S.BG_COLOR).run()
    at.color_picker(key="bg_color").pick("#00FF00").run()
    return at


def test_generate_colour_background_keeps_subject(tiny_env):
    from core.history import open_store

    at = green_background_on_the_coffee_cup()
    _generate_and_wait(at)
    res = at.session_state["result"]
    assert res is not None and res["background"].lower() == "color:#00ff00"
    out = res["outputs"][0]
    photo = at.session_state["photo"].rgb
    run = open_store().get_run(res["run_id"])
    mask = np.asarray(Image.open(run.mask.path)) > 127
    if mask.any():
        assert np.array_equal(out[mask], photo[mask])
    if (~mask).any():
        assert (out[~mask] == [0, 255, 0]).all(axis=-1).mean() > 0.9
    assert open_store().count_runs() == 1


def test_cancel_stops_the_run_and_keeps_the_app_working(tiny_env):
    from core.history import open_store

    at = new_app()
    load_sample(at)
    click(at, 256, 200, width=512, height=512, t=1)
    at.run()
    at.text_area(key="prompt").input("a forest").run()
    at.slider(key="steps").set_value(100).run()
    at.number_input(key="variants").set_value(4).run()
    button(at, "Generate").click().run()
    no_exception(at)
    job = at.session_state["job"]
    assert job is not None
    assert any(p for p in at.get("progress")), "a progress bar is shown while generating"
    at.button(key="cancel").click().run()
    no_exception(at)
    assert job.cancel.is_set()
    wait_until(at, lambda a: a.session_state["job"] is None, what="the cancelled job to stop")
    assert job.cancelled, job.error
    assert any(w.value.startswith("Cancelled") for w in at.warning)
    assert at.session_state["result"] is None
    runs = open_store().list_runs().runs
    assert [r.status for r in runs] == ["cancelled"]
    # the app keeps working: a colour background right after
    at.segmented_control(key="bg_kind").set_value(S.BG_COLOR).run()
    _generate_and_wait(at)
    assert at.session_state["result"] is not None


def test_sd_without_prompt_is_a_one_line_error(tiny_env):
    at = new_app()
    load_sample(at)
    click(at, 256, 200, width=512, height=512, t=1)
    at.run()
    button(at, "Generate").click().run()
    no_exception(at)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "prompt" in errors[0] and "\n" not in errors[0]
    assert at.session_state["job"] is None


def test_missing_segmenter_weights_fall_back_to_grabcut(monkeypatch, tiny_inpaint):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "sam-vit-b")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    at = new_app()
    no_exception(at)
    warnings = [w.value for w in at.main.warning]    # in the page, not the sidebar a phone keeps closed
    assert len(warnings) == 1 and not at.sidebar.warning
    assert warnings[0] == ("sam-vit-b is not downloaded yet (375.0 MB): get it on the Models page. "
                           "Using GrabCut (quick fallback) meanwhile.")
    load_sample(at)
    click(at, 256, 256, width=512, height=512, t=1)
    at.run()
    no_exception(at)
    assert "segmentation: grabcut" in captions(at)
    assert "Mask ready" in captions(at)


def test_settings_survive_a_visit_to_another_page(tiny_env):
    at = new_app()
    load_sample(at)
    at.text_area(key="prompt").input("snowy mountains").run()
    at.slider(key="steps").set_value(3).run()
    at.switch_page("pages/history.py").run()
    no_exception(at)
    at.switch_page("pages/editor.py").run()
    no_exception(at)
    assert at.text_area(key="prompt").value == "snowy mountains"
    assert at.slider(key="steps").value == 3
    assert at.session_state["photo"] is not None


def test_missing_inpainting_weights_are_named_before_generate_and_app_keeps_working(monkeypatch, tiny_sam):
    from core.history import open_store

    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "sd15-inpainting")      # not on disk here
    at = new_app()
    load_sample(at)
    click(at, 256, 200, width=512, height=512, t=1)
    at.run()
    warnings = [w.value for w in at.warning]
    assert warnings == ["Before you generate, get sd15-inpainting (paints the background): 4.3 GB."]
    assert at.button(key="get-run-needs").label == "Download it (4.3 GB)"
    at.text_area(key="prompt").input("a beach").run()
    assert button(at, "Generate").disabled                              # nothing to fail in History
    assert at.session_state["result"] is None and not open_store().list_runs().runs
    at.segmented_control(key="bg_kind").set_value(S.BG_TRANSPARENT).run()
    _generate_and_wait(at)
    out = at.session_state["result"]["outputs"][0]
    assert out.shape == (512, 512, 4)                                    # RGBA cut-out


def test_preview_edge_is_the_edge_the_result_gets():
    """With feather on, the preview's soft edge is compose's matte at preview scale: it ramps inside
    the subject only (the saved result keeps pure background outside the mask), the core is solid."""
    from types import SimpleNamespace

    import cv2

    from core.compose import alpha_matte
    from core.segment import SegmentResult

    hard = np.zeros((200, 300), np.uint8)
    cv2.circle(hard, (150, 100), 60, 255, -1)
    result = SegmentResult(masks=(hard > 0)[None], scores=np.ones(1, np.float32), best=0)
    state = {"preview": SimpleNamespace(scale=0.5), "feather": 16, "grow": 0, "invert": False}
    alpha = canvas.preview_mask(state, result)
    assert alpha.shape == hard.shape and alpha.dtype == np.uint8
    assert not alpha[hard == 0].any()                       # no halo outside the subject
    assert np.array_equal(alpha, alpha_matte(hard, 8))      # feather 16 px of the photo = 8 px here
    assert 0 < np.count_nonzero((alpha > 0) & (alpha < 255))


def test_canvas_overlay_is_drawn_once_per_mask_key(monkeypatch, astronaut):
    """A click's overlay is drawn once: going back to a candidate (or edge setting) already shown
    reuses its JPEG; a new photo starts afresh."""
    from core.images import load_image
    from core.segment import SegmentResult

    state: dict = {}
    S.init_session(state)
    photo.load_upload(state, png_bytes(astronaut), "a.png")
    prompts.add_click(state, 256, 256)
    pw, ph = photo.preview_size(state)
    masks = np.zeros((3, ph, pw), bool)
    for i in range(3):
        masks[i, : (i + 1) * ph // 4] = True
    result = SegmentResult(masks=masks, scores=np.array([0.9, 0.5, 0.1], np.float32), best=0)
    drawn = []
    real = canvas.preview_mask
    monkeypatch.setattr(canvas, "preview_mask", lambda st, r: drawn.append(1) or real(st, r))

    first = canvas.canvas_image(state, "tiny", result).data
    prompts.pick_candidate(state, result, 2)
    other = canvas.canvas_image(state, "tiny", result).data
    assert other != first and len(drawn) == 2
    prompts.pick_candidate(state, result, 0)
    assert canvas.canvas_image(state, "tiny", result).data == first and len(drawn) == 2   # not redrawn
    state["grow"] = 5
    canvas.canvas_image(state, "tiny", result)
    assert len(drawn) == 3
    photo.load_photo(state, load_image(png_bytes(astronaut[::-1].copy())), "b.png")
    assert state["canvas_cache"] is None and state["canvas_recent"] is None


def test_result_is_kept_and_downloadable_when_history_cannot_record(tiny_env, tmp_path):
    """Issue 10: a history failure (here the images folder cannot be made) must not lose the run."""
    at = green_background_on_the_coffee_cup()
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "data" / "images").write_bytes(b"")      # a file where the folder must be
    _generate_and_wait(at)
    res = at.session_state["result"]
    assert res is not None and res["run_id"] is None and res["outputs"][0].shape[2] == 3
    assert any("not in History" in w.value and "cannot write history files" in w.value
               for w in at.warning), [w.value for w in at.warning]
    labels = [b.label for b in at.get("download_button")]
    assert any(label.startswith("Download PNG") for label in labels), labels


# ------------------------------------------------------------------- background photo upload
def _background_upload(at: AppTest, name: str, data: bytes, mime: str = "image/jpeg") -> None:
    at.segmented_control(key="bg_kind").set_value(S.BG_IMAGE).run()
    at.file_uploader(key="bg_upload").set_value((name, data, mime)).run()
    no_exception(at)


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (RGB) and that holds no pixel data."""
    import struct
    import zlib

    def chunk(tag: bytes, payload: bytes) -> bytes:
        return struct.pack(">I", len(payload)) + tag + payload + struct.pack(">I", zlib.crc32(tag + payload))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IEND", b""))


@pytest.mark.parametrize("name, data", [
    ("scene.jpg", b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n"),   # EPS, not allowed
    ("scene.png", _png_header_only(8_000, 8_000)),                                      # 64 MP: over the cap
    ("scene.jpg", b"this is not an image"),
])
def test_refused_background_photo_is_one_line_and_stores_nothing(tiny_env, name, data):
    from core import config

    at = new_app()
    load_sample(at)
    _background_upload(at, name, data)
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and "\n" not in errors[0] and "Traceback" not in errors[0], errors
    assert "scene" in errors[0]                                   # names the file it refused
    assert at.session_state["bg_image_path"] is None and at.session_state["bg_image"] is None
    folder = config.data_dir() / "backgrounds"
    assert not folder.exists() or not any(folder.iterdir())


def test_cmyk_background_photo_is_stored_as_rgb_png(tiny_env):
    from core import config
    from core.images import load_image

    buf = io.BytesIO()
    Image.new("CMYK", (64, 48), (0, 255, 255, 0)).save(buf, format="JPEG", quality=95)   # red in CMYK
    data = buf.getvalue()
    at = new_app()
    load_sample(at)
    _background_upload(at, "red cmyk.jpg", data)
    assert not at.error, [e.value for e in at.error]
    path = Path(at.session_state["bg_image_path"])
    assert path.parent.parent == config.data_dir() / "backgrounds" and path.name == "red cmyk.png"
    stored = Image.open(path)
    assert stored.format == "PNG" and stored.mode == "RGB" and stored.size == (64, 48)
    expected = load_image(data)                                     # decoded and converted once
    assert np.array_equal(np.asarray(stored), expected.rgb)
    assert path.parent.name == expected.hash[:32]                   # content-addressed, named as uploaded
    assert (np.asarray(stored)[..., 0] > 200).all()                 # red, not inverted CMYK
    # the same photo again: one file
    at.file_uploader(key="bg_upload").set_value(("again.jpg", data, "image/jpeg")).run()
    no_exception(at)
    assert [p.name for p in path.parent.iterdir()] == [path.name]


# ------------------------------------------------------------------- errors reach the server log
def test_unexpected_upload_failure_is_logged_with_traceback(tiny_env, monkeypatch, caplog, coffee):
    import logging

    import core.images

    def broken(*args, **kwargs):
        raise RuntimeError("decoder exploded")

    monkeypatch.setattr(core.images, "load_image", broken)
    at = new_app()
    with caplog.at_level(logging.INFO, logger="ui"):
        at.file_uploader(key="upload").set_value(("cup.png", png_bytes(coffee), "image/png")).run()
    no_exception(at)
    (error,) = [e.value for e in at.error]
    assert "RuntimeError" in error and "see the server log" in error
    (record,) = [r for r in caplog.records if r.name == "ui.photo"]
    assert record.levelno == logging.ERROR and record.exc_info[0] is RuntimeError


def test_task_future_progress_errors_and_logging(caplog):
    import logging
    import threading

    from core.errors import CancelledError, ImageError
    from ui import tasks

    gate = threading.Event()

    def slow(progress, cancel):
        progress("diffusion", 1.5)
        gate.wait(10)
        return 42

    with caplog.at_level(logging.INFO, logger="ui.tasks"):
        ok = tasks.start("generate", slow)
        waiting.wait_until(lambda: ok.stage == "diffusion", 30, "the task's diffusion stage", poll=0.01)
        assert tasks.running(ok) and ok.fraction == 1.0 and ok.result is None and ok.error is None
        gate.set()
        assert ok.wait(10) and ok.result == 42 and not ok.cancelled and ok.finished is not None

        def boom(progress, cancel):
            raise ValueError("internal")

        bad = tasks.start("generate", boom, label="generating the background")
        assert bad.wait(10) and bad.result is None
        assert bad.error == ("Something went wrong while generating the background (ValueError); "
                             "see the server log.")
        exc, frames = bad.future.exception(), []
        tb = exc.__traceback__
        while tb is not None:
            frames.append(tb.tb_frame.f_code.co_name)
            tb = tb.tb_next
        assert "boom" not in frames and exc.__context__ is None     # no frames of the work pinned

        expected = tasks.start("prepare", lambda p, c: (_ for _ in ()).throw(ImageError("bad photo")))
        stopped = tasks.start("generate", lambda p, c: (_ for _ in ()).throw(CancelledError("stopped")))
        assert expected.wait(10) and expected.error == "bad photo" and not expected.cancelled
        assert stopped.wait(10) and stopped.cancelled and stopped.error == "stopped"
    by_level = {(r.levelno, r.exc_info is not None and r.exc_info[0] is not None) for r in caplog.records}
    assert (logging.ERROR, True) in by_level                     # the unexpected one, with traceback
    assert all(r.exc_info is None or r.exc_info[0] is None
               for r in caplog.records if r.levelno < logging.WARNING)   # expected ones: no traceback
