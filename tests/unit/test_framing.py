"""Framing and shadows for catalogue shots (core/framing.py): the subject's box lands where the
margin and alignment say, unscaled subjects keep their pixels, shadows stay under the subject."""
from __future__ import annotations

import numpy as np
import pytest

from core.compose import compose, solid
from core.errors import ImageError, InvalidOptionError
from core.framing import Frame, Shadow, over, place, reframe, shadow_alpha, subject_box


def photo_with_subject(w: int, h: int, box: tuple[int, int, int, int], seed: int = 0):
    """A noisy photo (so any resampling or shift shows) and a subject mask covering `box`."""
    rng = np.random.default_rng(seed)
    rgb = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    mask = np.zeros((h, w), np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 255
    return rgb, mask


def framed(rgb, mask, frame):
    layer = compose(rgb, mask, "transparent")
    where = place(layer[..., 3], frame)
    return layer, where, reframe(layer, where)


@pytest.mark.parametrize("size,box,frame", [
    ((400, 300), (100, 50, 300, 250), Frame(1000, 1000, 5)),        # wide subject, square frame
    ((301, 503), (20, 40, 121, 433), Frame(2000, 2000, 10)),        # tall subject, odd sizes
    ((640, 480), (0, 100, 640, 380), Frame(800, 600, 5)),           # touching the border
    ((640, 480), (300, 200, 310, 203), Frame(1200, 900, 5)),        # a tiny subject, upscaled a lot
])
def test_the_subject_fills_the_frame_less_the_margin_on_its_tighter_side_and_is_centred(size, box, frame):
    rgb, mask = photo_with_subject(*size, box)
    _layer, where, out = framed(rgb, mask, frame)
    assert out.shape == (frame.height, frame.width, 4)
    x1, y1, x2, y2 = subject_box(out[..., 3])
    mx, my = frame.width * frame.margin / 100, frame.height * frame.margin / 100
    left, right, top, bottom = x1, frame.width - x2, y1, frame.height - y2
    tol = max(2.0, where.scale)                          # the box's edge moves by < 1 photo px
    assert abs(left - right) <= tol and abs(top - bottom) <= tol           # centred
    tight = min(abs(left - mx), abs(top - my))                              # margin on the tighter side
    assert tight <= tol and left >= mx - tol and top >= my - tol
    reach = int(3 * where.scale) + 2                     # Lanczos's ring: faint, and only that far
    assert out[..., 3][:, :max(0, x1 - reach)].max(initial=0) == 0         # nothing but the subject
    assert out[..., 3][:, x2 + reach:].max(initial=0) == 0


def test_align_bottom_puts_the_base_one_margin_above_the_bottom():
    rgb, mask = photo_with_subject(500, 500, (200, 100, 300, 400))
    frame = Frame(1000, 1000, 8, "bottom")
    _, where, out = framed(rgb, mask, frame)
    x1, y1, x2, y2 = subject_box(out[..., 3])
    assert abs((frame.height - y2) - 80) <= 2                                # 8 % of 1000
    assert abs(x1 - (frame.width - x2)) <= 2


def test_an_unscaled_subject_keeps_its_pixels_bit_for_bit_and_a_scaled_one_is_resampled_once():
    rgb, mask = photo_with_subject(500, 400, (100, 100, 300, 300))
    frame = Frame(250, 250, 10)                  # 200 px box + 2 x 25 px: scale exactly 1
    layer, where, out = framed(rgb, mask, frame)
    assert where.exact and where.scale == 1.0
    fx, fy = (int(v) for v in where.to_frame(100, 100))
    assert np.array_equal(out[fy:fy + 200, fx:fx + 200, :3], rgb[100:300, 100:300])
    white = over(solid((250, 250), (255, 255, 255)), out)
    assert np.array_equal(white[fy:fy + 200, fx:fx + 200], rgb[100:300, 100:300])

    _, where2, out2 = framed(rgb, mask, Frame(500, 500, 10))          # scale 2
    assert not where2.exact and where2.scale == pytest.approx(2.0)
    inner = out2[120:380, 120:380]                                     # well inside the subject
    assert inner[..., 3].min() == 255
    # One Lanczos resample of the photo's window, not two: compare with PIL doing it in one go.
    from PIL import Image
    ref = np.asarray(Image.fromarray(rgb[100:300, 100:300]).resize((400, 400), Image.Resampling.LANCZOS))
    assert np.abs(inner[..., :3].astype(int) - ref[70:330, 70:330].astype(int)).mean() < 3


def test_the_old_backgrounds_colour_never_bleeds_into_a_resampled_edge():
    """Transparent pixels of the subject layer carry no colour into the edge (premultiplied)."""
    rgb = np.full((200, 200, 3), 255, np.uint8)
    rgb[50:150, 50:150] = (10, 20, 200)                  # a blue square on white
    mask = np.zeros((200, 200), np.uint8)
    mask[50:150, 50:150] = 255
    layer = compose(rgb, mask, "transparent")
    layer[..., :3][layer[..., 3] == 0] = (255, 0, 0)     # garbage colour under transparent pixels
    out = reframe(layer, place(layer[..., 3], Frame(333, 333, 7)))
    edge = (out[..., 3] > 20) & (out[..., 3] < 235)
    assert edge.any()
    assert out[..., 0][edge].max() < 60                 # no red in the edge


def test_a_contact_shadow_lies_under_the_subject_and_never_over_it():
    rgb, mask = photo_with_subject(600, 600, (200, 100, 400, 450))
    _, _, out = framed(rgb, mask, Frame(1000, 1000, 10, "bottom"))
    bg = solid((1000, 1000), (255, 255, 255))
    shaded = over(bg, out, Shadow("contact", 0.6, 0.5))
    plain = over(bg, out)
    opaque = out[..., 3] == 255
    assert np.array_equal(shaded[opaque], plain[opaque])               # subject pixels untouched
    x1, y1, x2, y2 = subject_box(out[..., 3])
    darker = (plain.astype(int) - shaded.astype(int)).sum(axis=2) > 6
    ys, xs = np.nonzero(darker & ~opaque)
    bw = x2 - x1
    assert ys.size and ys.min() >= y2 - 0.15 * bw and ys.max() <= y2 + 0.2 * bw   # at the base
    assert xs.min() >= x1 - 0.1 * bw and xs.max() <= x2 + 0.1 * bw
    assert darker[y2 + 3, (x1 + x2) // 2]                               # right under the middle


def test_drop_and_reflection_shadows_and_the_transparent_export_keeps_the_shadow():
    rgb, mask = photo_with_subject(400, 400, (100, 100, 300, 300))
    _, _, out = framed(rgb, mask, Frame(600, 600, 15, "bottom"))
    opaque = out[..., 3] == 255
    x1, y1, x2, y2 = subject_box(out[..., 3])
    drop = shadow_alpha(out[..., 3], Shadow("drop", 0.5, 0.3))
    assert drop[y2 + 5, (x1 + x2) // 2 + 20] > 0.05 and drop[:y1 - 10].max() < 0.01
    bg = solid((600, 600), (200, 200, 200))
    refl = over(bg, out, Shadow("reflection", 0.8, 0.5))
    assert np.array_equal(refl[opaque], out[..., :3][opaque])
    assert not np.array_equal(refl[y2 + 2:y2 + 10], bg[y2 + 2:y2 + 10])          # mirrored below
    assert np.array_equal(refl[:y1 - 12], bg[:y1 - 12])                          # nothing above
    rgba = over(None, out, Shadow("contact", 0.6, 0.5))
    assert rgba.shape == (600, 600, 4)
    assert np.array_equal(rgba[opaque], out[opaque])
    under = rgba[y2 + 2, (x1 + x2) // 2]
    assert 0 < under[3] < 255 and under[:3].max() == 0                        # semi-transparent black


def test_bad_frames_and_empty_subjects_are_one_line():
    for bad in ("2000", "0x100", "20000x10", "axb"):
        with pytest.raises(InvalidOptionError):
            Frame.parse(bad)
    with pytest.raises(InvalidOptionError, match="margin"):
        Frame(100, 100, 60)
    with pytest.raises(InvalidOptionError, match="align"):
        Frame(100, 100, 5, "top")
    with pytest.raises(InvalidOptionError, match="shadow"):
        Shadow("halo")
    with pytest.raises(ImageError, match="nothing to frame"):
        place(np.zeros((10, 10), np.uint8), Frame(100, 100))


def test_a_run_staged_without_frame_or_shadow_is_the_plain_composite():
    """core.catalogue with no frame and no shadow gives what compose gives (the band within one
    level of rounding), so adding a shadow changes nothing but the shadow."""
    from core.catalogue import finish, stage
    from core.compose import feather_matte
    from core.spec import Background
    rgb, mask = photo_with_subject(320, 240, (60, 40, 260, 200), seed=3)
    matte = feather_matte(mask >= 128, 4)
    for bg in ("color:#336699", "blur:12", "transparent"):
        want = compose(rgb, mask, bg, matte=matte)
        got = finish(stage(rgb, mask, matte, None), Background.parse(bg))
        assert got.shape == want.shape
        assert np.abs(got.astype(int) - want.astype(int)).max() <= 1, bg
        core = matte.core
        assert np.array_equal(got[core], want[core])


def test_a_framed_run_paints_the_padding_and_keeps_the_subject():
    from core.catalogue import finish, stage
    from core.spec import Background
    rgb, mask = photo_with_subject(300, 300, (100, 100, 200, 200), seed=4)
    staged = stage(rgb, mask, None, Frame(200, 200, 25))     # 100 px box + 2 x 50 px: scale 1
    assert staged.where.exact and staged.size == (200, 200)
    region = staged.paint_region
    assert region[0, 0] == 255 and region[100, 100] == 0
    generated = np.full((200, 200, 3), 7, np.uint8)
    out = finish(staged, Background.parse("sd"), Shadow("contact"), generated=generated)
    assert np.array_equal(out[50:150, 50:150], rgb[100:200, 100:200])
    assert tuple(out[5, 5]) == (7, 7, 7)
    with pytest.raises(InvalidOptionError, match="200x200"):
        finish(staged, Background.parse("sd"), generated=np.zeros((10, 10, 3), np.uint8))
