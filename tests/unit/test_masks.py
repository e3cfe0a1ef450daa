"""core.masks: each operation checked by pixel values against an independent construction."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from core.errors import InvalidOptionError
from core.masks import (NEGATIVE_COLOR, POSITIVE_COLOR, MaskOptions, feather, fill_holes, grow, invert,
                        overlay, refine, remove_small, resize_mask)


def square(size=(40, 40), top=15, left=15, side=10) -> np.ndarray:
    m = np.zeros(size, np.uint8)
    m[top:top + side, left:left + side] = 255
    return m


def bbox(mask: np.ndarray) -> tuple[int, int]:
    """(width, height) of the subject's bounding box, (0, 0) when empty."""
    ys, xs = np.nonzero(mask)
    if len(xs) == 0:
        return 0, 0
    return int(xs.max() - xs.min() + 1), int(ys.max() - ys.min() + 1)


def blobs(seed=0, shape=(61, 83)) -> np.ndarray:
    """Irregular random shapes (smoothed noise, thresholded): concave parts, holes, thin bits."""
    import cv2
    rng = np.random.default_rng(seed)
    noise = cv2.GaussianBlur(rng.random(shape).astype(np.float32), (0, 0), 3)
    return np.where(noise > np.median(noise), 255, 0).astype(np.uint8)


def disk(r: int) -> np.ndarray:
    yy, xx = np.mgrid[-r:r + 1, -r:r + 1]
    return (xx * xx + yy * yy <= r * r).astype(np.uint8)


# ----------------------------------------------------------------------------------------- invert

def test_invert():
    m = np.arange(256, dtype=np.uint8).reshape(16, 16)
    assert np.array_equal(invert(m), 255 - m.astype(int))
    assert np.array_equal(invert(invert(m)), m)
    assert np.array_equal(invert(m > 100), np.where(m > 100, 0, 255))


# ----------------------------------------------------------------------------------------- grow

@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_grow_and_shrink_a_square_by_n_changes_its_side_by_2n(n):
    m = square(side=10)
    grown = grow(m, n)
    assert bbox(grown) == (10 + 2 * n, 10 + 2 * n)
    assert np.all(grown[m > 0] == 255)                       # contains the original
    assert set(np.unique(grown)) == {0, 255}
    assert grown[20, 15 - n] == 255 and grown[20, 15 - n - 1] == 0   # exactly n px to the left
    shrunk = grow(m, -n)
    assert bbox(shrunk) == (10 - 2 * n, 10 - 2 * n)
    assert np.count_nonzero(shrunk) == (10 - 2 * n) ** 2
    assert np.all(m[shrunk > 0] == 255)
    assert not grow(m, -5).any()


def test_grow_rounds_corners_like_a_disk():
    m = square(side=10)
    g = grow(m, 4)
    # the corner pixel (15, 15) reaches (12, 12) at distance sqrt(18) > 4, but (12, 13) is sqrt(13) away
    assert g[12, 12] == 0 and g[11, 15] == 255 and g[13, 12] == 255
    quarter = sum(1 for dx in range(1, 5) for dy in range(1, 5) if dx * dx + dy * dy <= 16)
    assert np.count_nonzero(g) == 10 * 10 + 4 * (10 * 4) + 4 * quarter    # square + 4 sides + 4 corners


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8])
def test_grow_equals_morphology_with_a_disk(n):
    import cv2
    m = blobs(seed=n)
    assert np.array_equal(grow(m, n), cv2.dilate(m, disk(n)))
    assert np.array_equal(grow(m, -n), cv2.erode(m, disk(n)))   # OpenCV: outside the frame never erodes


def test_shrink_does_not_eat_from_the_frame_edge():
    m = np.zeros((20, 30), np.uint8)
    m[:, :8] = 255                       # a subject cut by the left edge of the photo
    s = grow(m, -3)
    assert np.all(s[:, :5] == 255) and not s[:, 5:].any()


def test_grow_zero_binarises_and_does_not_modify_input():
    m = np.array([[0, 127, 128, 255]], np.uint8)
    before = m.copy()
    assert grow(m, 0).tolist() == [[0, 0, 255, 255]]
    assert np.array_equal(m, before)


# ----------------------------------------------------------------------------------------- feather

@pytest.mark.parametrize("px", [1, 2, 3, 5, 9])
def test_feather_keeps_core_opaque_and_far_background_clear(px):
    m = blobs(seed=px)
    f = feather(m, px)
    assert f.dtype == np.uint8 and f.shape == m.shape
    assert np.all(f[grow(m, -px) > 0] == 255)
    assert np.all(f[grow(m, px) == 0] == 0)
    soft = (f > 0) & (f < 255)
    assert soft.any()
    assert np.all((grow(m, px) > 0)[soft]) and not np.any((grow(m, -px) > 0)[soft])


@pytest.mark.parametrize("px", [1, 2, 3, 5])
def test_feather_profile_across_a_straight_edge(px):
    m = np.zeros((30, 40), np.uint8)
    m[:, 20:] = 255
    row = feather(m, px)[15].astype(int)
    assert np.all(np.diff(row) >= 0)                     # monotone from background to subject
    assert np.count_nonzero((row > 0) & (row < 255)) == 2 * px   # px soft pixels on each side
    assert row[19] + row[20] == 255                      # symmetric about the edge
    assert np.all(feather(m, px) == feather(m, px)[15])  # same on every row


def test_feather_is_symmetric_under_inversion():
    m = blobs(seed=11)
    a, b = feather(m, 4).astype(int), feather(invert(m), 4).astype(int)
    assert np.abs(a + b - 255).max() <= 1


def test_feather_edge_cases():
    m = square()
    assert np.array_equal(feather(m, 0), m)
    assert np.all(feather(np.full((5, 5), 255, np.uint8), 3) == 255)
    assert not feather(np.zeros((5, 5), np.uint8), 3).any()
    edge = np.zeros((10, 10), np.uint8)
    edge[:, :3] = 255
    assert np.all(feather(edge, 2)[:, 0] == 255)         # the frame edge is not an edge of the subject


# ----------------------------------------------------------------------------------------- fill / specks

def test_fill_holes_fills_enclosed_background_only():
    ring = square(side=12)
    ring[18:24, 18:24] = 0                               # a 6x6 hole
    assert np.array_equal(fill_holes(ring), square(side=12))
    bars = np.zeros((20, 20), np.uint8)
    bars[4:6] = 255
    bars[12:14] = 255                                    # the gap between them touches the left/right edges
    assert np.array_equal(fill_holes(bars), bars)
    c_shape = square(side=12)
    c_shape[18:24, 18:27] = 0                            # opening to the outside on the right
    assert np.array_equal(fill_holes(c_shape), c_shape)
    framed = np.zeros((10, 10), np.uint8)
    framed[:, :6] = 255
    framed[3:6, 0:3] = 0                                 # a notch open to the photo's left edge: not a hole
    assert np.array_equal(fill_holes(framed), framed)


def test_fill_holes_treats_diagonal_gaps_as_closed():
    m = np.zeros((9, 9), np.uint8)
    for y, x in [(2, 4), (3, 3), (4, 2), (5, 3), (6, 4), (5, 5), (4, 6), (3, 5)]:   # a diamond of pixels
        m[y, x] = 255
    filled = fill_holes(m)
    assert filled[4, 4] == 255 and filled[3, 4] == 255 and np.count_nonzero(filled) == 8 + 5


def test_remove_small_drops_specks_below_min_area():
    m = np.zeros((40, 40), np.uint8)
    m[2:4, 2:4] = 255          # area 4
    m[10:15, 10:15] = 255      # area 25
    m[25:35, 25:35] = 255      # area 100
    assert np.array_equal(remove_small(m, 0), m)
    keep25 = remove_small(m, 25)
    assert keep25[3, 3] == 0 and keep25[12, 12] == 255 and keep25[30, 30] == 255
    keep100 = remove_small(m, 26)
    assert np.count_nonzero(keep100) == 100 and keep100[30, 30] == 255
    assert not remove_small(m, 101).any()


def test_remove_small_counts_diagonal_neighbours_as_one_speck():
    m = np.zeros((10, 10), np.uint8)
    m[1:4, 1:4] = 255
    m[4:7, 4:7] = 255          # touches the first square only at a corner
    assert np.array_equal(remove_small(m, 18), m)
    assert not remove_small(m, 19).any()


# ----------------------------------------------------------------------------------------- resize

def test_resize_hard_mask_is_nearest_and_stays_hard():
    rng = np.random.default_rng(3)
    cells = np.where(rng.random((5, 7)) > 0.5, 255, 0).astype(np.uint8)
    up = resize_mask(cells, (21, 15))                    # x3 in both directions
    assert up.shape == (15, 21)
    assert np.array_equal(up, np.kron(cells, np.ones((3, 3), np.uint8)))
    assert np.array_equal(resize_mask(up, (7, 5)), cells)
    odd = resize_mask(blobs(), (100, 71))
    assert odd.shape == (71, 100) and set(np.unique(odd)) <= {0, 255}
    assert abs((odd > 0).mean() - (blobs() > 0).mean()) < 0.03
    stripes = np.tile(np.array([0, 255, 0], np.uint8), (4, 7))    # 21 wide: the centre of each 3 is 255
    assert np.all(resize_mask(stripes, (7, 4)) == 255)              # pixel centres line up
    b = resize_mask(cells > 0, (14, 10))
    assert b.dtype == np.uint8 and np.array_equal(b, np.kron(cells, np.ones((2, 2), np.uint8)))


def test_resize_soft_mask_interpolates():
    ramp = np.tile(np.linspace(0, 200, 64).astype(np.uint8), (32, 1))
    small = resize_mask(ramp, (16, 8))
    assert small.shape == (8, 16)
    assert np.all(np.diff(small[4].astype(int)) > 0)
    assert abs(small.mean() - ramp.mean()) < 2
    same = resize_mask(ramp, (64, 32))
    assert np.array_equal(same, ramp) and same is not ramp


# ----------------------------------------------------------------------------------------- refine

def test_refine_matches_the_documented_order():
    m = blobs(seed=5)
    opts = MaskOptions(fill_holes=True, min_area=30, grow=2, invert=True, feather=6)
    expected = invert(grow(remove_small(fill_holes(m), 30), 2))
    out = refine(m, opts)
    assert np.array_equal(out, expected)
    assert set(np.unique(out)) <= {0, 255}                 # feather is not applied


def test_refine_order_is_observable():
    ring = square(side=12)
    ring[18:24, 18:24] = 0
    # invert comes last: the filled ring inverted leaves the whole square as background
    assert np.array_equal(refine(ring, MaskOptions(fill_holes=True, invert=True)), invert(square(side=12)))
    speck = np.zeros((30, 30), np.uint8)
    speck[10:12, 10:12] = 255
    # specks are dropped before growing (grown first, this one would be 36 px and survive)
    assert not refine(speck, MaskOptions(min_area=10, grow=2)).any()
    assert np.array_equal(refine(speck), speck)
    assert np.array_equal(refine(speck > 0, None), speck)


def test_mask_options_validation():
    assert MaskOptions(grow=np.int64(-3)).grow == -3 and type(MaskOptions(grow=np.int64(-3)).grow) is int
    for bad in (dict(feather=-1), dict(min_area=-5), dict(grow=1.5), dict(grow=True), dict(fill_holes="yes"),
                dict(invert=1)):
        with pytest.raises(InvalidOptionError):
            MaskOptions(**bad)


@pytest.mark.parametrize("call", [
    lambda: feather(square(), -1),
    lambda: feather(square(), 2.5),
    lambda: grow(square(), "3"),
    lambda: remove_small(square(), -1),
    lambda: grow(np.zeros((4, 4, 3), np.uint8), 1),
    lambda: invert(np.zeros((4, 4), np.float32)),
    lambda: fill_holes(np.zeros((0, 4), np.uint8)),
    lambda: invert([[0, 255]]),
    lambda: resize_mask(square(), (0, 10)),
    lambda: resize_mask(square(), 10),
    lambda: refine(square(), {"grow": 2}),
])
def test_bad_values_raise_invalid_option_error(call):
    with pytest.raises(InvalidOptionError) as info:
        call()
    assert "\n" not in str(info.value) and str(info.value)


# ----------------------------------------------------------------------------------------- overlay

def test_overlay_tints_outlines_and_draws_clicks(chelsea):
    rgb = chelsea
    h, w = rgb.shape[:2]
    mask = np.zeros((h, w), np.uint8)
    mask[100:200, 150:300] = 255
    before = rgb.copy()
    color = (30, 144, 255)
    out = overlay(rgb, mask, color=color, alpha=0.5,
                  clicks=[(50, 60, 1), SimpleNamespace(x=400.4, y=250.2, label=0), (20, 280)])
    assert np.array_equal(rgb, before)                              # input untouched
    assert out.shape == rgb.shape and out.dtype == np.uint8
    inner = (slice(110, 190), slice(160, 290))
    expected = np.rint(rgb[inner] * 0.5 + np.array(color) * 0.5)
    assert np.abs(out[inner].astype(int) - expected).max() <= 1
    far = np.ones((h, w), bool)
    far[95:205, 145:305] = False                                   # the mask and its outline
    for x, y in ((50, 60), (400, 250), (20, 280)):
        far[max(0, y - 12):y + 13, max(0, x - 12):x + 13] = False    # the dots
    assert np.array_equal(out[far], rgb[far])
    assert tuple(out[100, 220]) == color and tuple(out[150, 299]) == color   # outline on the edge
    assert tuple(out[60, 50]) == POSITIVE_COLOR and tuple(out[280, 20]) == POSITIVE_COLOR
    assert tuple(out[250, 400]) == NEGATIVE_COLOR


def test_overlay_soft_mask_and_no_mask(coffee):
    soft = np.full(coffee.shape[:2], 102, np.uint8)                # 40 % opacity everywhere
    out = overlay(coffee, soft, color=(0, 0, 0), alpha=1.0)
    expected = np.rint(coffee * (1 - 102 / 255))
    assert np.abs(out.astype(int) - expected)[5:-5, 5:-5].max() <= 1
    photo = coffee.copy()
    dots = overlay(photo, None, clicks=[(10, 10, 0)])
    assert tuple(dots[10, 10]) == NEGATIVE_COLOR
    assert np.array_equal(dots[50:], coffee[50:])
    assert np.array_equal(photo, coffee)                            # drawn on a copy


@pytest.mark.parametrize("kwargs", [
    dict(mask=np.zeros((10, 10), np.uint8)),
    dict(mask=np.zeros((300, 451), np.uint8), alpha=1.5),
    dict(mask=np.zeros((300, 451), np.uint8), color=(0, 0, 300)),
    dict(mask=np.zeros((300, 451), np.uint8), clicks=[(1,)]),
    dict(mask=np.zeros((300, 451), np.uint8), clicks=[(float("nan"), 2)]),
])
def test_overlay_rejects_bad_input(chelsea, kwargs):
    with pytest.raises(InvalidOptionError):
        overlay(chelsea, **kwargs)
