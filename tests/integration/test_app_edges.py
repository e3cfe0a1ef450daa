"""The editor's Edge control (issue 13) through Streamlit's AppTest: Hard / Soft (matting) with the
method and band width, the overlay showing the matte, the run's output and History row, "Edit from
here" / "Re-run" restoring the controls, and ViTMatte without weights falling back with a notice.
Segmentation is GrabCut (built in): a real mask of the coffee cup, no weights."""
from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import button, no_exception, wait_until  # noqa: E402

from runs import record  # noqa: E402
from ui import canvas, job, photo, prompts  # noqa: E402
from ui import state as S  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
RUN_TIMEOUT = 120


@pytest.fixture(autouse=True)
def grabcut(monkeypatch):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")



def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def cup_on_green() -> AppTest:
    """The editor with the coffee cup loaded, clicked on, and a green colour background chosen."""
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    at.button(key="sample-Coffee cup").click().run()
    no_exception(at)
    canvas.apply_canvas_value(at.session_state, {"x": 300, "y": 200, "width": 600, "height": 400,
                                                 "unix_time": 1})
    at.run()
    at.segmented_control(key="bg_kind").set_value(S.BG_COLOR).run()
    at.color_picker(key="bg_color").pick("#00FF00").run()
    no_exception(at)
    return at


def generate(at: AppTest) -> dict:
    button(at, "Generate").click().run()
    no_exception(at)
    assert not at.error, [e.value for e in at.error]
    wait_until(at, lambda a: a.session_state["job"] is None, what="the job to finish")
    assert not at.error, [e.value for e in at.error]
    return at.session_state["result"]


def soft(at: AppTest, method: str = "guided", band: int = S.BAND_AUTO) -> None:
    at.segmented_control(key="edge").set_value(S.EDGE_MATTE).run()
    at.selectbox(key="edge_method").set_value(method).run()
    at.select_slider(key="edge_band").set_value(band).run()
    no_exception(at)


# ---------------------------------------------------------------------------------------------
def test_edge_controls_map_to_the_spec():
    at = cup_on_green()
    assert at.segmented_control(key="edge").value == S.EDGE_HARD
    assert "edge_method" not in [w.key for w in at.selectbox]            # only shown for Soft
    assert not at.slider(key="feather").disabled
    at.slider(key="feather").set_value(7).run()
    assert job.job_request(at.session_state, "grabcut").spec.mask.edge == "hard"

    soft(at, "cf", 12)
    assert at.slider(key="feather").disabled                             # matting replaces feather
    assert at.select_slider(key="edge_band").value == 12
    mask = job.job_request(at.session_state, "grabcut").spec.mask
    assert (mask.edge, mask.edge_band, mask.matted, mask.edge_method) == ("matte:cf", 12, True, "cf")
    assert any("Guided matting" in c.value for c in at.caption)           # the overlay's method is said
    at.select_slider(key="edge_band").set_value(S.BAND_AUTO).run()
    assert job.job_request(at.session_state, "grabcut").spec.mask.edge_band is None
    at.segmented_control(key="edge").set_value(S.EDGE_HARD).run()
    no_exception(at)
    mask = job.job_request(at.session_state, "grabcut").spec.mask
    assert (mask.edge, mask.feather) == ("hard", 7)                      # the feather was kept
    assert at.slider(key="feather").value == 7 and not at.slider(key="feather").disabled


def test_soft_edge_changes_the_border_of_the_result_and_is_recorded():
    from core.history import open_store

    at = cup_on_green()
    hard = generate(at)
    soft(at, "guided", 8)
    assert at.segmented_control(key="edge").value == S.EDGE_MATTE
    matted = generate(at)
    store = open_store()
    run = store.get_run(matted["run_id"])
    assert (run.spec.mask.edge, run.spec.mask.edge_band) == ("matte:guided", 8)
    assert run.params()["mask.edge"] == "matte:guided"                   # compare shows it
    assert store.get_run(hard["run_id"]).spec.mask.edge == "hard"

    import cv2
    mask = np.asarray(Image.open(run.mask.path)) > 127
    assert mask.any() and (~mask).any()
    h, s = hard["outputs"][0], matted["outputs"][0]
    k = np.ones((2 * 8 + 5, 2 * 8 + 5), np.uint8)
    inside = cv2.erode(mask.astype(np.uint8), k) > 0
    outside = cv2.dilate(mask.astype(np.uint8), k) == 0
    differs = (h != s).any(axis=-1)
    assert differs[~inside & ~outside].sum() > 50                        # the border is matted
    assert not differs[inside | outside].any()                           # nothing else changes
    photo_rgb = at.session_state["photo"].rgb
    assert np.array_equal(s[inside], photo_rgb[inside])


def test_edit_from_here_and_rerun_restore_the_edge(astronaut):
    from core.history import open_store

    store = open_store()
    small = astronaut[::2, ::2].copy()                                  # 256x256
    mask = np.zeros(small.shape[:2], np.uint8)
    mask[40:220, 70:190] = 255

    def recorded(**mask_options) -> int:
        return record(store, source=small, source_name="a.png", mask=mask, outputs=[(small, None)],
                      background="color:#00ff00", segmenter="grabcut", clicks=[(128, 100, 1)],
                      box=(40, 20, 230, 250), mask_options=mask_options)

    wide = recorded(edge="matte:cf", edge_band=33, grow=2)             # a width from the command line
    rid = recorded(edge="matte:cf", edge_band=6)
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    at.switch_page("pages/history.py").run()
    at.button(key=f"open-{wide}").click().run()
    button(at, "Edit from here").click().run()
    no_exception(at)
    ss = at.session_state
    assert (ss["edge"], ss["edge_method"], ss["edge_band"], ss["grow"]) == (S.EDGE_MATTE, "cf", 33, 2)
    assert at.segmented_control(key="edge").value == S.EDGE_MATTE
    assert at.selectbox(key="edge_method").value == "cf"
    assert 33 not in S.BAND_STOPS
    assert at.select_slider(key="edge_band").value == 33                 # between the stops, kept
    assert S.spec_from_state(ss, "grabcut").mask == store.get_run(wide).spec.mask

    at.switch_page("pages/history.py").run()
    at.button(key=f"open-{rid}").click().run()
    button(at, "Re-run").click().run()
    no_exception(at)
    at.switch_page("pages/editor.py")
    wait_until(at, lambda a: a.session_state["job"] is None, what="the re-run to finish")
    assert not at.error, [e.value for e in at.error]
    assert at.session_state["result"] is not None
    assert at.select_slider(key="edge_band").value == 6
    newest = store.list_runs(limit=1).runs[0]
    assert newest.id not in (wide, rid) and newest.status == "succeeded"
    assert newest.spec.mask == store.get_run(rid).spec.mask
    assert (newest.spec.mask.edge, newest.spec.mask.edge_band) == ("matte:cf", 6)


def test_vitmatte_without_weights_falls_back_to_guided_with_a_notice():
    from core.history import open_store

    assert not job.vitmatte_available()               # tests have an empty weights dir
    at = cup_on_green()
    soft(at, "vitmatte")
    assert any("ViTMatte's weights are not installed" in c.value for c in at.caption)
    res = generate(at)
    notices = [i.value for i in at.info]
    assert any("ViTMatte weights are not installed" in n and "Guided" in n and "Models page" in n
               for n in notices), notices
    assert all("\n" not in n for n in notices)
    run = open_store().get_run(res["run_id"])
    assert run.status == "succeeded" and run.spec.mask.edge == "matte:guided"   # what was used
    assert at.session_state["edge_method"] == "vitmatte"                  # the choice stays
    assert any(s.value.startswith("Done in") for s in at.success)

    # a run with a method that needs nothing clears the notice
    at.selectbox(key="edge_method").set_value("guided").run()
    generate(at)
    assert not any("ViTMatte" in i.value for i in at.info)


def test_overlay_shows_the_matte_and_is_cached_per_edge_setting(monkeypatch, coffee):
    """The clickable preview shows the soft matte (Guided, at preview size, band scaled from the
    photo's) instead of the hard mask; switching the matting method does not redraw it."""
    import cv2

    from core.matte import band_width, edge_matte
    from core.segment import SegmentResult

    big = np.asarray(Image.fromarray(coffee).resize((2400, 1600), Image.Resampling.BICUBIC))
    state: dict = {}
    S.init_session(state)
    photo.load_upload(state, png_bytes(big), "big.png")
    prompts.add_click(state, 1200, 800)
    pw, ph = photo.preview_size(state)
    hard = np.zeros((ph, pw), np.uint8)
    cv2.ellipse(hard, (pw // 2, ph // 2), (pw // 4, ph // 3), 0, 0, 360, 255, -1)
    result = SegmentResult(masks=(hard > 0)[None], scores=np.ones(1, np.float32), best=0)
    drawn = []
    real = canvas.preview_mask
    monkeypatch.setattr(canvas, "preview_mask", lambda st, r: drawn.append(1) or real(st, r))

    hard_jpeg = canvas.canvas_image(state, "grabcut", result).data
    state["edge"] = S.EDGE_MATTE
    soft_jpeg = canvas.canvas_image(state, "grabcut", result).data
    assert soft_jpeg != hard_jpeg and len(drawn) == 2

    scale = state["preview"].scale
    assert canvas.preview_band(state) == max(1, round(band_width((1600, 2400)) * scale))
    alpha = real(state, result)
    # Auto band: the overlay's matte sizes its band itself, as the run does (a blurred border
    # widens it), not the full-size band scaled down
    assert canvas.matte_band(state) is None
    matte = edge_matte(state["preview"].rgb, hard, "guided", None)
    want = matte.alpha()
    assert np.array_equal(alpha, want)
    assert ((alpha > 0) & (alpha < 255)).sum() > 100                     # soft at the border
    hard_overlay = canvas.canvas_rgb(state, hard)
    soft_overlay = canvas.canvas_rgb(state, alpha)
    near = np.zeros(hard.shape, bool)                                    # the matte's band
    near.ravel()[matte.band_idx] = True
    differs = (hard_overlay != soft_overlay).any(axis=-1)
    assert differs[near].sum() > 100 and not differs[~near].any()       # only near the edge

    state["edge_method"] = "cf"                        # the overlay always uses Guided: not redrawn
    assert canvas.canvas_image(state, "grabcut", result).data == soft_jpeg and len(drawn) == 2
    state["feather"] = 9                               # feather means nothing to a soft edge
    assert canvas.canvas_image(state, "grabcut", result).data == soft_jpeg and len(drawn) == 2
    state["edge_band"] = 60                            # a wider band: redrawn, scaled to the preview
    assert canvas.preview_band(state) == round(60 * scale) == canvas.matte_band(state)
    assert canvas.canvas_image(state, "grabcut", result).data != soft_jpeg and len(drawn) == 3
    state["edge"] = S.EDGE_HARD                        # back to hard with feather 9: a new overlay
    canvas.canvas_image(state, "grabcut", result)
    assert len(drawn) == 4


def test_overlay_follows_the_edge_control_in_the_app():
    at = cup_on_green()
    before = at.session_state["canvas_cache"][1]
    at.segmented_control(key="edge").set_value(S.EDGE_MATTE).run()
    no_exception(at)
    assert at.session_state["canvas_cache"][1] != before


def test_progress_names_the_edge_stage():
    task = SimpleNamespace(stage="edge", fraction=0.4, elapsed=2.0)
    assert job.progress_text(task).startswith("Refining the edge… 40%")


def test_models_page_offers_the_vitmatte_weights():
    """The fallback notice sends people to the Models page: ViTMatte is listed there with its
    Download button."""
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    at.switch_page("pages/models.py").run()
    no_exception(at)
    assert any(h.value.startswith("Matting") for h in at.subheader)
    assert "vitmatte-small" in "\n".join(str(d.value) for d in at.dataframe)
    assert any(b.key == "dl-matte-vitmatte-small" for b in at.button)


def test_the_overlay_follows_a_defocused_border_as_the_run_does():
    """A subject whose border is a wide defocused ramp: with the band on Auto the overlay's matte
    widens its band to hold the ramp, as the full-size run does (not the sharp border's band)."""
    import cv2

    from core.matte import edge_matte
    from core.segment import SegmentResult

    h, w = 600, 900
    disc = np.zeros((h, w), np.float32)
    cv2.circle(disc, (w // 2, h // 2), 180, 1.0, -1)
    soft = cv2.GaussianBlur(disc, (0, 0), 10)                       # a defocused outline
    rgb = (np.array([30, 60, 200], np.float32) * soft[..., None]
           + np.array([240, 230, 200], np.float32) * (1 - soft[..., None])).astype(np.uint8)
    state: dict = {}
    S.init_session(state)
    photo.load_upload(state, png_bytes(rgb), "defocused.png")
    prompts.add_click(state, w // 2, h // 2)
    pw, ph = photo.preview_size(state)
    hard = cv2.resize((soft >= 0.5).astype(np.uint8) * 255, (pw, ph), interpolation=cv2.INTER_NEAREST)
    result = SegmentResult(masks=(hard > 0)[None], scores=np.ones(1, np.float32), best=0)
    state["edge"] = S.EDGE_MATTE
    alpha = canvas.preview_mask(state, result)
    soft_px = ((alpha > 0) & (alpha < 255)).sum()
    fixed = edge_matte(state["preview"].rgb, hard, "guided", canvas.preview_band(state)).alpha()
    assert soft_px > 2 * ((fixed > 0) & (fixed < 255)).sum()          # the ramp, not a thin rim
    full = edge_matte(rgb, (soft >= 0.5).astype(np.uint8) * 255, "guided")
    full_soft = ((full.alpha() > 0) & (full.alpha() < 255)).sum() * (pw * ph) / (w * h)
    assert 0.4 < soft_px / full_soft < 2.5                            # about what the run gets
