"""`replace --edge hard|matte[:METHOD] --edge-band PX` end to end (issue 13): the soft alpha at the
subject's border on a colour and a transparent background, the subject untouched inside, the run
recorded with its edge, bad values refused with one line, ViTMatte without weights failing clearly."""
from __future__ import annotations


import numpy as np
import pytest
from PIL import Image

from cli_kit import assert_one_line_error, cli

BAND = 12


@pytest.fixture
def cat(tmp_path, chelsea):
    """The cat photo and a mask of its head drawn a little loose (as a click's mask is): an ellipse,
    so the border crosses fur, not just straight lines."""
    import cv2
    photo = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(photo)
    mask = np.zeros(chelsea.shape[:2], np.uint8)
    cv2.ellipse(mask, (250, 130), (110, 90), 0, 0, 360, 255, -1)
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    return photo, mask_path, mask > 0


def _far_inside(hard: np.ndarray, px: int) -> np.ndarray:
    import cv2
    return cv2.erode(hard.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) > 0


def _far_outside(hard: np.ndarray, px: int) -> np.ndarray:
    import cv2
    return cv2.dilate(hard.astype(np.uint8), np.ones((2 * px + 1, 2 * px + 1), np.uint8)) == 0


def test_help_names_the_edge_flags():
    out = " ".join(cli("replace", "--help").stdout.split())
    assert "--edge hard|matte[:METHOD]" in out and "--edge-band PX" in out
    assert "guided" in out and "cf" in out and "vitmatte" in out and "(default: hard)" in out
    assert "auto: ~0.6 % of the long side" in out


def test_matte_on_a_colour_background_softens_only_the_border_and_is_recorded(tmp_path, cat, chelsea):
    from core.history import open_store

    photo, mask_path, hard = cat
    hard_out, soft_out = tmp_path / "hard.png", tmp_path / "soft.png"
    base = ["replace", photo, "--mask", mask_path, "--background", "color:#ffffff"]
    cli(*base, "--feather", "0", "--out", hard_out)
    proc = cli(*base, "--edge", "matte", "--edge-band", str(BAND), "--out", soft_out)
    assert "history run" in proc.stdout
    h, s = np.asarray(Image.open(hard_out)), np.asarray(Image.open(soft_out))
    assert s.shape == chelsea.shape
    inside, outside = _far_inside(hard, BAND + 2), _far_outside(hard, BAND + 2)
    assert np.array_equal(s[inside], chelsea[inside])                   # the subject, bit for bit
    assert (s[outside] == 255).all()                                    # the new background
    border = ~inside & ~outside
    differs = (s != h).any(axis=-1)
    assert differs[border].mean() > 0.2                                 # the matte worked the border
    assert not differs[inside | outside].any()                          # and nothing else

    run = open_store().list_runs(limit=1).runs[0]
    assert (run.spec.mask.edge, run.spec.mask.edge_band) == ("matte:guided", BAND)
    assert run.params()["mask.edge"] == "matte:guided" and run.params()["mask.edge_band"] == BAND


def test_matte_on_a_transparent_background_carries_a_soft_alpha(tmp_path, cat, chelsea):
    photo, mask_path, hard = cat
    out = tmp_path / "cutout.png"
    cli("replace", photo, "--mask", mask_path, "--background", "transparent", "--edge", "matte",
        "--out", out, "--no-history")
    img = Image.open(out)
    assert img.mode == "RGBA"
    rgba = np.asarray(img)
    alpha = rgba[..., 3]
    # auto: 451 px long side -> the 3 px minimum where the border is crisp, wider where the photo
    # is blurred across it (the loose ellipse crosses the cat's defocused backdrop): the matte's own
    from core.matte import edge_matte
    m = edge_matte(chelsea, hard)
    inside, outside = m.core, ~m.subject
    border = ~inside & ~outside
    assert not (border & (_far_inside(hard, 30) | _far_outside(hard, 30))).any()   # still the border
    soft = (alpha > 0) & (alpha < 255)
    assert soft[border].sum() > 100 and not soft[inside | outside].any()
    assert (alpha[inside] == 255).all() and (alpha[outside] == 0).all()
    assert np.array_equal(rgba[inside][:, :3], chelsea[inside])        # straight alpha, colours kept


@pytest.mark.parametrize("background", ["color:#00ff00", "transparent"])
def test_closed_form_matte_with_a_band(tmp_path, cat, chelsea, background):
    pytest.importorskip("pymatting")
    photo, mask_path, hard = cat
    out = tmp_path / "cf.png"
    cli("replace", photo, "--mask", mask_path, "--background", background, "--edge", "matte:cf",
        "--edge-band", "8", "--out", out)
    rgba = np.asarray(Image.open(out))
    inside = _far_inside(hard, 10)
    assert np.array_equal(rgba[inside][:, :3], chelsea[inside])
    if background == "transparent":
        alpha = rgba[..., 3]
        assert ((alpha > 0) & (alpha < 255)).sum() > 100
    from core.history import open_store
    run = open_store().list_runs(limit=1).runs[0]
    assert (run.spec.mask.edge, run.spec.mask.edge_band) == ("matte:cf", 8)


@pytest.mark.parametrize("flags, fragments", [
    (["--edge", "soft"], ["edge must be hard or matte[:METHOD]", "'soft'"]),
    (["--edge", "matte:bayes"], ["guided, cf, vitmatte", "'matte:bayes'"]),
    (["--edge-band", "0"], ["edge_band must be from 1 to 256"]),
    (["--edge", "matte", "--edge-band", "300"], ["edge_band must be from 1 to 256"]),
    (["--edge-band", "wide"], ["--edge-band", "not a whole number"]),
])
def test_bad_edge_values_are_one_line_and_exit_2(tmp_path, cat, flags, fragments):
    photo, mask_path, _ = cat
    out = tmp_path / "never.png"
    proc = cli("replace", photo, "--mask", mask_path, "--background", "color:#ffffff", *flags,
               "--out", out, check=False)
    assert_one_line_error(proc, *fragments)
    assert not out.exists()


def test_vitmatte_without_weights_is_the_missing_weights_line(tmp_path, cat):
    """No silent fallback on the command line: a script asking for ViTMatte learns it is missing."""
    pytest.importorskip("core.vitmatte", reason="core/vitmatte.py (ViTMatte) is not in this tree yet")
    from core import vitmatte
    if vitmatte.available():
        pytest.skip("ViTMatte weights are present here")
    photo, mask_path, _ = cat
    out = tmp_path / "never.png"
    proc = cli("replace", photo, "--mask", mask_path, "--background", "color:#ffffff",
               "--edge", "matte:vitmatte", "--out", out, check=False)
    line = assert_one_line_error(proc, "is not downloaded", "python -m core models download")
    assert "guided" not in line.lower()
    assert not out.exists()


def test_a_closed_form_band_too_wide_for_the_photo_is_refused_at_once_with_the_widest_that_fits(tmp_path):
    """Issue 18 case 11: `--edge matte:cf --edge-band 256` on a 3 MP photo ran for minutes and took
    gigabytes; now it is one line naming the widest band that fits, and nothing is written."""
    import time

    from core import matte
    h, w = 1500, 2000
    rng = np.random.default_rng(0)
    photo = tmp_path / "big.png"
    Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(photo)
    mask = np.zeros((h, w), np.uint8)
    import cv2
    cv2.ellipse(mask, (w // 2, h // 2), (600, 500), 0, 0, 360, 255, -1)
    mask_path = tmp_path / "mask.png"
    Image.fromarray(mask).save(mask_path)
    out = tmp_path / "never.png"
    t = time.perf_counter()
    proc = cli("replace", photo, "--mask", mask_path, "--background", "color:#ffffff", "--edge", "matte:cf",
               "--edge-band", "256", "--out", out, check=False)
    assert time.perf_counter() - t < 120          # minutes before: refused before the solver runs
    assert_one_line_error(proc, "edge band of 256 px is too much work for cf matting", "use at most")
    assert not out.exists()
    widest = int(proc.stderr.split("use at most ")[1].split(" px")[0])
    hard = mask > 0
    assert matte._cf_band(hard, widest, given=True) == widest          # what it offers is accepted
    with pytest.raises(matte.InvalidOptionError):
        matte._cf_band(hard, widest + 1, given=True)


def test_the_automatic_closed_form_band_is_lowered_on_a_long_edge_and_says_so(caplog):
    """The automatic band of a 12 MP photo on a long edge would exceed cf's cost cap: it is lowered
    (logged in one line), never refused; a band the user gave is refused instead."""
    from core import matte
    h, w = 3000, 4000
    hard = np.zeros((h, w), bool)
    hard[:, : w // 2] = True
    hard[::7, w // 2:] = True                 # a comb: a very long edge
    auto = matte.band_width((h, w))
    with caplog.at_level("WARNING", logger="core.matte"):
        lowered = matte._cf_band(hard, auto, given=False)
    assert 1 <= lowered < auto
    assert any("lowered from" in r.getMessage() for r in caplog.records)
    with pytest.raises(matte.InvalidOptionError, match="too much work"):
        matte._cf_band(hard, auto, given=True)
