"""core.matte: a soft alpha and decontaminated colours at the subject's border, and compositing
with them (core.compose(..., matte=)), the subject's core always bit-exact."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from core import matte as M
from core.compose import BackgroundSpec, background_for, compose, feather_matte
from core.errors import InvalidOptionError
from core.images import LoadedImage, encode_png
from core.jobs import JobRequest, run_job
from core.spec import Generation, MaskOptions, RunSpec

RED, BLUE = np.array([220, 30, 30], np.float32), np.array([20, 40, 200], np.float32)


def ramp_scene(h=64, w=120, x0=50, width=12):
    """Red subject on the left fading linearly into a blue background over `width` px from x0:
    the true alpha is the ramp, the binary mask alpha > 0.5 is what a segmenter gives."""
    x = np.arange(w, dtype=np.float32)
    alpha = np.clip((x0 + width - x) / width, 0, 1)[None, :].repeat(h, axis=0)
    img = alpha[..., None] * RED + (1 - alpha[..., None]) * BLUE
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    return img, alpha, np.where(alpha > 0.5, 255, 0).astype(np.uint8)


def full_alpha(m) -> np.ndarray:
    a = m.core.astype(np.float32)
    a.ravel()[m.band_idx] = m.band_alpha
    return a


def ellipse(h, w, frac=0.3) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    inside = ((xx - w / 2) / (w * frac)) ** 2 + ((yy - h / 2) / (h * frac)) ** 2 <= 1
    return np.where(inside, 255, 0).astype(np.uint8)


# ------------------------------------------------------------------------------------- trimap --
def test_trimap_is_the_mask_shrunk_and_grown_by_the_band():
    mask = np.zeros((50, 80), np.uint8)
    mask[:, :40] = 255
    tri = M.trimap(mask, 5)
    row = tri[25]
    assert (row[:35] == 255).all() and (row[35:45] == 128).all() and (row[45:] == 0).all()
    assert M.band_width((768, 1024)) == 7 and M.band_width((3000, 4000)) == 27
    assert M.band_width((40, 30)) == 3


# ------------------------------------------------------------------------------------ methods --
def _band_errors(method, width, band):
    img, alpha, mask = ramp_scene(width=width)
    m = M.edge_matte(img, mask, method, band=band)
    inside = M.trimap(mask, band) == 128
    return (np.abs(full_alpha(m) - alpha)[inside].mean(), np.abs(mask / 255.0 - alpha)[inside].mean(),
            m, img, alpha, inside)


def test_closed_form_recovers_a_wide_soft_ramp_and_its_colour():
    err, binary_err, m, img, alpha, band = _band_errors("cf", width=12, band=10)
    assert err < 0.05 * binary_err, (err, binary_err)
    # where the subject shows (alpha > 0.2) its colour is the subject's red, not the blend with blue
    fg = np.zeros(img.shape, np.float32)
    fg.reshape(-1, 3)[m.band_idx] = m.band_fg
    seen = band & (alpha > 0.2)
    assert np.abs(fg[seen] - RED).mean() < 0.5 * np.abs(img[seen].astype(np.float32) - RED).mean()


def test_the_fast_method_softens_an_anti_aliased_edge():
    # The guided filter's window is small (it keeps fine strands); it softens a narrow ramp
    # towards the truth but does not recover a wide one (that is what cf and vitmatte are for).
    err, binary_err, *_ = _band_errors("guided", width=3, band=8)
    assert err < 0.6 * binary_err, (err, binary_err)


def soft_scene(fg, bg, sigma_left, sigma_right, shape=(360, 480)):
    """A photo `fg` over a photo `bg` inside an ellipse whose border is blurred by a Gaussian of
    `sigma_left` px on its left half and `sigma_right` px on its right (0: crisp, anti-aliased),
    as a defocused or motion-blurred outline looks; returns (image, true alpha, mask alpha > 0.5)."""
    import cv2
    h, w = shape
    hard = ellipse(h, w, 0.33).astype(np.float32) / 255
    hard = cv2.GaussianBlur(hard, (0, 0), 0.7)
    left = cv2.GaussianBlur(hard, (0, 0), sigma_left) if sigma_left else hard
    right = cv2.GaussianBlur(hard, (0, 0), sigma_right) if sigma_right else hard
    side = np.clip((np.arange(w) - w / 2) / 40 + 0.5, 0, 1)[None, :]   # left -> right over 40 px
    alpha = (1 - side) * left + side * right
    F, B = fg[:h, :w].astype(np.float32), bg[:h, :w].astype(np.float32)
    img = np.clip(B + (F - B) * alpha[..., None] + 0.5, 0, 255).astype(np.uint8)
    return img, alpha, np.where(alpha > 0.5, 255, 0).astype(np.uint8)


def _composite_error(m, img, alpha, fg, where):
    """Mean abs error of the matte's composite over green against the true one, on `where`."""
    F = img.astype(np.float32)
    F.reshape(-1, 3)[m.band_idx] = m.foreground(img)
    a = full_alpha(m)[..., None]
    green = np.array([0, 200, 0], np.float32)
    true = fg[:img.shape[0], :img.shape[1]].astype(np.float32) * alpha[..., None] + green * (1 - alpha[..., None])
    return np.abs(F * a + green * (1 - a) - true)[where].mean()


def test_the_blur_of_a_border_is_measured():
    import cv2
    for sigma in (0.7, 3.0, 8.0):
        step = np.zeros((240, 320), np.float32)
        step[:, :160] = 1
        step = cv2.GaussianBlur(step, (0, 0), sigma)
        img = np.clip(20 + 200 * step[..., None] * np.array([1.0, 0.6, 0.2]), 0, 255).astype(np.uint8)
        soft = M.edge_blur(img, step > 0.5)
        assert abs(float(np.median(soft.sigma)) - sigma) < 0.2 * sigma + 0.2, sigma


def test_the_default_follows_a_wide_defocused_border(coffee, astronaut):
    # a border blurred by a Gaussian of 7 px (a ramp ~18 px wide): the small window alone (the
    # default before) leaves most of the ramp hard; the default now measures the blur and follows it
    img, alpha, mask = soft_scene(coffee, astronaut, 7, 7)
    soft = (alpha > 0.02) & (alpha < 0.98)
    now = M.edge_matte(img, mask)
    before = M.edge_matte(img, mask, adapt=False)
    binary_err = np.abs(mask / 255.0 - alpha)[soft].mean()
    err_now = np.abs(full_alpha(now) - alpha)[soft].mean()
    err_before = np.abs(full_alpha(before) - alpha)[soft].mean()
    assert err_now < 0.35 * binary_err and err_now < 0.5 * err_before, (err_now, err_before, binary_err)
    assert _composite_error(now, img, alpha, coffee, soft) < 0.5 * _composite_error(before, img, alpha, coffee, soft)
    # the band grew to hold the ramp; the core is still copied bit for bit
    assert now.band_idx.size > 2 * before.band_idx.size
    out = compose(img, mask, "color:#00c800", matte=now)
    assert np.array_equal(out[now.core], img[now.core]) and now.core.sum() > 0.2 * mask.size


def test_a_crisp_border_keeps_the_small_window(coffee, astronaut):
    # an anti-aliased border between two textured photos: still the narrow band and small window
    img, alpha, mask = soft_scene(coffee, astronaut, 0, 0)
    now, before = M.edge_matte(img, mask), M.edge_matte(img, mask, adapt=False)
    assert now.band_idx.size < 1.1 * before.band_idx.size
    soft = (alpha > 0.02) & (alpha < 0.98)
    err_now = np.abs(full_alpha(now) - alpha)[soft].mean()
    err_before = np.abs(full_alpha(before) - alpha)[soft].mean()
    assert err_now < 1.1 * err_before, (err_now, err_before)


def test_one_outline_sharp_on_one_side_and_blurred_on_the_other(coffee, astronaut):
    img, alpha, mask = soft_scene(coffee, astronaut, 0, 7)
    now, before = M.edge_matte(img, mask), M.edge_matte(img, mask, adapt=False)
    h, w = mask.shape
    left, right = np.zeros(mask.shape, bool), np.zeros(mask.shape, bool)
    left[:, : w // 2 - 40], right[:, w // 2 + 40:] = True, True
    band_now = np.zeros(mask.shape, bool)
    band_now.ravel()[now.band_idx] = True
    band_before = np.zeros(mask.shape, bool)
    band_before.ravel()[before.band_idx] = True
    # the sharp side keeps its narrow band, the blurred side gets a wide one
    assert (band_now & left).sum() < 1.5 * (band_before & left).sum()
    assert (band_now & right).sum() > 4 * (band_before & right).sum()
    soft = (alpha > 0.02) & (alpha < 0.98)
    err = lambda m, side: np.abs(full_alpha(m) - alpha)[soft & side].mean()   # noqa: E731
    assert err(now, right) < 0.5 * err(before, right)
    assert err(now, left) < 1.1 * err(before, left)


def test_a_solid_subject_with_a_hard_edge_stays_solid():
    img = np.empty((60, 90, 3), np.uint8)
    img[:] = (20, 40, 200)
    mask = ellipse(60, 90)
    img[mask == 255] = (230, 200, 40)
    m = M.edge_matte(img, mask, band=6)
    a = full_alpha(m)
    assert np.abs(a - mask / 255.0).max() < 0.1
    out = compose(img, mask, "color:#00ff00", matte=m)
    near = M.trimap(mask, 6) == 128
    assert np.abs(out[mask == 255].astype(int) - img[mask == 255]).max() <= 26   # ~no green rim
    assert np.abs(out[(mask == 0) & near].astype(int) - (0, 255, 0)).max() <= 26  # ~no yellow rim
    assert (out[(mask == 0) & ~near] == (0, 255, 0)).all()


@pytest.mark.parametrize("fill", [0, 255])
def test_a_mask_without_an_edge_is_a_no_op(chelsea, fill):
    mask = np.full(chelsea.shape[:2], fill, np.uint8)
    m = M.edge_matte(chelsea, mask)
    assert m.band_idx.size == 0 and (m.core == bool(fill)).all()
    out = compose(chelsea, mask, "color:#102030", matte=m)
    expected = chelsea if fill else np.broadcast_to(np.uint8([16, 32, 48]), chelsea.shape)
    assert np.array_equal(out, expected)


def test_a_one_pixel_subject_and_a_thin_line_work(coffee):
    mask = np.zeros(coffee.shape[:2], np.uint8)
    mask[100, 200] = 255
    mask[300, 50:400] = 255
    m = M.edge_matte(coffee, mask, band=4)
    out = compose(coffee, mask, "transparent", matte=m)
    assert out.shape == (*coffee.shape[:2], 4) and not m.core.any()
    assert out[..., 3].max() > 0          # the line is still there, softly


@pytest.mark.parametrize("method", ["guided", "cf"])
def test_a_subject_thinner_than_the_band_works_with_every_method(coffee, method):
    mask = np.zeros(coffee.shape[:2], np.uint8)
    mask[150:160, 100:300] = 255                       # 10 px tall, band 33: no sure subject at all
    m = M.edge_matte(coffee[:256, :320], mask[:256, :320], method, band=33)
    assert not m.core.any() and m.band_idx.size and 0 <= m.band_alpha.min() <= m.band_alpha.max() <= 1


def test_bad_input_is_one_clear_line(astronaut):
    mask = ellipse(*astronaut.shape[:2])
    cases = [
        (lambda: M.edge_matte(astronaut, mask[:-1]), "subject mask"),
        (lambda: M.edge_matte(astronaut, mask, band=0), "band"),
        (lambda: M.edge_matte(astronaut, mask, band=True), "band"),
        (lambda: M.edge_matte(astronaut, mask, method="magic"), "magic"),
        (lambda: M.edge_matte(astronaut[..., 0], mask), "image"),
        (lambda: compose(astronaut, mask, "color:red", matte=M.edge_matte(astronaut[:100], mask[:100])),
         "matte"),
    ]
    for call, word in cases:
        with pytest.raises(InvalidOptionError) as e:
            call()
        assert word in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------------ compose --
@pytest.mark.parametrize("background", ["color:#00ff00", "blur:8", "image", "sd", "transparent"])
def test_every_background_uses_the_matte_and_keeps_the_core_bit_exact(astronaut, tmp_path, background):
    mask = ellipse(*astronaut.shape[:2])
    m = M.edge_matte(astronaut, mask)
    generated = None
    if background == "image":
        path = tmp_path / "bg.png"
        Image.fromarray(np.full((40, 50, 3), (250, 0, 250), np.uint8)).save(path)
        background = f"image:{path}"
    if background == "sd":
        generated = np.full(astronaut.shape, (0, 0, 255), np.uint8)
    out = compose(astronaut, mask, background, generated=generated, matte=m)
    hard = compose(astronaut, mask, background, generated=generated)
    assert np.array_equal(out[m.core][..., :3], astronaut[m.core])           # bit-exact core
    differs = np.any(out != hard, axis=-1)
    band = np.zeros(mask.shape, bool)
    band.ravel()[m.band_idx] = True
    assert differs.any() and not (differs & ~band).any()                     # only the band changed
    if out.shape[-1] == 3:   # the band is alpha * F + (1 - alpha) * background
        bg = background_for(astronaut, mask, BackgroundSpec.parse(background), generated).reshape(-1, 3)
        a = m.band_alpha[:, None]
        want = a * m.band_fg + (1 - a) * bg[m.band_idx]
        assert np.abs(out.reshape(-1, 3)[m.band_idx] - want).max() <= 1


def test_transparent_png_carries_the_soft_alpha_and_straight_decontaminated_colours():
    img, alpha, mask = ramp_scene()
    m = M.edge_matte(img, mask, band=10)
    rgba = compose(img, mask, "transparent", matte=m)
    back = np.asarray(Image.open(io.BytesIO(encode_png(rgba))))
    assert np.array_equal(back, rgba)                         # PNG round trip, nothing lost
    assert np.array_equal(back[..., 3], m.alpha())
    soft = (back[..., 3] > 40) & (back[..., 3] < 215)
    assert soft.any()
    # straight alpha: a half-transparent subject pixel is still full red, not red * alpha
    assert np.abs(back[soft][:, :3].astype(np.float32) - RED).mean() < 40
    assert (back[back[..., 3] == 0][:, :3] == 0).all()
    assert np.array_equal(back[m.core][:, :3], img[m.core])


def test_feather_still_works_without_a_matte(chelsea):
    mask = ellipse(*chelsea.shape[:2])
    assert np.array_equal(compose(chelsea, mask, "color:#fff", feather=4),
                          compose(chelsea, mask, "color:#fff", matte=feather_matte(mask, 4)))


# ---------------------------------------------------------------------------------------- runs --
def test_a_matted_run_is_recorded_and_soft_at_the_border(chelsea):
    mask = ellipse(*chelsea.shape[:2])
    spec = RunSpec(mask=MaskOptions(edge="matte", edge_band=6), background="color:#00ff00")
    soft = run_job(JobRequest(image=LoadedImage(rgb=chelsea, format="PNG"), spec=spec, mask=mask))
    hard = run_job(JobRequest(image=LoadedImage(rgb=chelsea, format="PNG"),
                              spec=spec.replace(mask=MaskOptions()), mask=mask), record=False)
    assert not np.array_equal(soft.outputs[0], hard.outputs[0])
    core = M.trimap(mask, 6) == 255
    assert np.array_equal(soft.outputs[0][core], chelsea[core])
    from core.history import open_store
    run = open_store().get_run(soft.run_id)
    assert run.spec.mask.edge == "matte:guided" and run.spec.mask.edge_band == 6
    assert "edge" in run.timings


def test_a_matted_sd_run_repaints_under_the_band(chelsea, tiny_inpaint, monkeypatch):
    from core import inpaint
    seen = {}
    real = inpaint.Inpainter.inpaint

    def spy(self, rgb, region, *a, **k):
        seen["region"] = region.copy()
        return real(self, rgb, region, *a, **k)

    monkeypatch.setattr(inpaint.Inpainter, "inpaint", spy)
    mask = ellipse(*chelsea.shape[:2])
    spec = RunSpec(mask=MaskOptions(edge="matte", edge_band=5), background="sd",
                   generation=Generation(prompt="a beach", steps=2, seed=1, model="tiny"))
    result = run_job(JobRequest(image=LoadedImage(rgb=chelsea, format="PNG"), spec=spec, mask=mask),
                     record=False)
    tri = M.trimap(mask, 5)
    region = seen["region"] > 0
    assert region[tri == 128].all() and region[tri == 0].all() and not region[tri == 255].any()
    assert np.array_equal(result.outputs[0][tri == 255], chelsea[tri == 255])


def test_the_learned_method_runs_through_the_registry_and_says_when_its_weights_are_missing(
        chelsea, weights_dir, monkeypatch):
    from core import vitmatte, weights
    from core.errors import MissingWeightsError
    mask = ellipse(*chelsea.shape[:2])
    with pytest.raises(MissingWeightsError) as e:
        M.edge_matte(chelsea, mask, "vitmatte")
    assert "\n" not in str(e.value) and "download" in str(e.value)
    weights.download("tiny", "matte")
    monkeypatch.setattr(vitmatte, "DEFAULT_MODEL", "tiny")
    m = M.edge_matte(chelsea, mask, "vitmatte", band=6)
    assert m.band_idx.size == (M.trimap(mask, 6) == 128).sum()
    out = compose(chelsea, mask, "color:#00ff00", matte=m)
    assert np.array_equal(out[m.core], chelsea[m.core])
