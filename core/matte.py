"""Alpha matting at the subject's border: from a photo and a binary subject mask, a soft alpha and the
subject's own colours where it meets the background.

Why one file (~480 lines): the three methods share the band, the colour decontamination and the
per-tile choice between them, which only make sense together.

    m = edge_matte(rgb, mask)                        # method "guided", band from the image size
    m = edge_matte(rgb, mask, method="cf", band=12)  # closed-form matting (pymatting), slower
    out = core.compose.compose(rgb, mask, "color:#ffffff", matte=m)

Conventions: rgb HxWx3 uint8 RGB; mask HxW uint8 255 = subject (>= 128 counts; bool accepted).
Only a band around the mask's edge is worked on: the unknown region of a trimap (`trimap`), the mask
shrunk and grown by `band` px (Euclidean). Inside the shrunk mask ("core") pixels are copied bit for
bit by compositing; outside the grown mask alpha is 0; in the band each pixel gets an alpha in [0, 1]
and a foreground colour F with the old background's colour taken out ("colour decontamination"),
so that compositing `alpha * F + (1 - alpha) * B` on a new background B carries none of the old one.

Methods (each sees a crop of the photo, its trimap and the mask, returns the crop's alpha):
  guided    no weights, the default: the binary mask smoothed by a colour guided filter (He et al.
            2010; OpenCV contrib's ximgproc), a small window so it follows the photo's own edges and
            strands; box filters only, ~linear in the band's area. Softens anti-aliased edges and
            brings back strands the mask cut off. It adapts to the border it sees (edge_blur): the
            photo's blur across the mask's outline is measured per tile (two-scale gradient ratio);
            where the border is defocused or motion-blurred the band widens to hold the ramp
            (BAND_PER_SIGMA x its sigma) and the same filter runs on the photo scaled down until
            the ramp is ~1 px wide ("ramp path"), read back bilinearly; crisp tiles keep the small
            window and the default band, tiles between take both, weighted.
  cf        closed-form matting (Levin et al. 2008) from pymatting, solved per tile of the band;
            its cost is capped (CF_MAX_WORK): a band too wide for the photo is refused in one line.
  vitmatte  ViTMatte (learned, transformers), via core.vitmatte; needs its weights.

Foreground colours: the "blur fusion" estimate (Forte & Pitie 2021), box filters again. The work is cut into tiles that contain band
pixels, so the cost follows the length of the edge, not the image's area.
"""
from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from core import arrays
from core.errors import InvalidOptionError
from core.spec import EDGE_METHODS, MAX_EDGE_BAND, MaskOptions

UNKNOWN = 128
TILE = 128
# cf's cost grows with the band's area times its width (the solver's iterations follow the distance
# between the sure regions): ~3 us per (unknown pixel x band px) on one core here, so this is ~30 s.
# Wider work is refused (a band given) or the band lowered (the automatic one), so that no spec can
# tie up a process for minutes (bench: `python bench/edges.py`).
CF_MAX_WORK = 10_000_000

log = logging.getLogger(__name__)


def band_width(shape: tuple[int, ...]) -> int:
    """The default band (px each side of the mask's edge) for an image of `shape` (H, W, ...):
    about 0.6 % of the long side, at least 3 px (6 px at 1024 px, 27 px at 12 MP)."""
    return int(min(MAX_EDGE_BAND, max(3, round(max(shape[0], shape[1]) / 150))))


def _band(band: Optional[int], shape) -> int:
    if band is None:
        return band_width(shape)
    if isinstance(band, (bool, np.bool_)) or not isinstance(band, (int, np.integer)) \
            or not 1 <= band <= MAX_EDGE_BAND:
        raise InvalidOptionError(f"edge band must be a whole number of pixels from 1 to {MAX_EDGE_BAND}, "
                                 f"got {band!r}")
    return int(band)


def _cf_band(hard: np.ndarray, band: int, given: bool) -> int:
    """`band`, or the widest band under CF_MAX_WORK: the automatic band is lowered (logged), a
    band the user gave is refused with the widest that fits. InvalidOptionError when none fits."""
    def work(b: int) -> int:
        return int(np.count_nonzero(trimap(hard, b) == UNKNOWN)) * b
    if work(band) <= CF_MAX_WORK:
        return band
    lo, hi = 0, band                      # work(lo) fits (or lo == 0), work(hi) does not
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (mid, hi) if work(mid) <= CF_MAX_WORK else (lo, mid)
    if lo == 0:
        raise InvalidOptionError("the subject's edge is too long for cf matting on this photo; "
                                 "use the guided method")
    if given:
        raise InvalidOptionError(f"an edge band of {band} px is too much work for cf matting on this "
                                 f"photo: use at most {lo} px, or the guided method")
    log.warning("cf matting: the automatic edge band is lowered from %d to %d px on this photo "
                "(cost cap)", band, lo)
    return lo


def trimap(mask: np.ndarray, band: Optional[int] = None) -> np.ndarray:
    """HxW uint8: 255 = sure subject (the mask shrunk by `band` px), 0 = sure background (outside
    the mask grown by `band` px), 128 = unknown (within `band` px of the edge, either side)."""
    import cv2
    hard = arrays.mask(mask, "subject mask", keep_bool=True)
    hard = hard if hard.dtype == bool else hard >= 128
    band = _band(band, hard.shape)
    if not hard.any() or hard.all():
        return np.full(hard.shape, 255 if hard.any() else 0, np.uint8)
    u8 = hard.view(np.uint8)
    d_in = cv2.distanceTransform(u8, cv2.DIST_L2, cv2.DIST_MASK_5)        # subject -> background
    d_out = cv2.distanceTransform(1 - u8, cv2.DIST_L2, cv2.DIST_MASK_5)   # background -> subject
    sure = cv2.compare(d_in, float(band), cv2.CMP_GT)                     # 255 on the core
    grown = cv2.compare(d_out, float(band), cv2.CMP_LE)                   # 255 on subject + outer band
    out = cv2.max(cv2.bitwise_and(grown, UNKNOWN), sure)
    return out


# ------------------------------------------------------------------------------------- methods --
# (photo crop HxWx3 uint8, trimap crop HxW uint8, hard mask crop HxW bool, band px) -> alpha HxW float32
Method = Callable[[np.ndarray, np.ndarray, np.ndarray, int], np.ndarray]


def _alpha_guided(img: np.ndarray, tri: np.ndarray, hard: np.ndarray, band: int) -> np.ndarray:
    """The binary mask smoothed by a colour guided filter (He et al. 2010): in each small window
    alpha is fitted as a linear function of the photo's colour, so it follows the photo's own
    edges — soft where the border is a blend, up strands the mask cut off. The window (radius
    ~band / 6, 1 px at 1 MP) and eps = 0.01 were tuned with bench/edges.py (its sharp family)."""
    import cv2
    guide = img.astype(np.float32) / 255
    return cv2.ximgproc.guidedFilter(guide, hard.astype(np.float32), max(1, band // 6), 1e-2)


def _alpha_cf(img: np.ndarray, tri: np.ndarray, hard: np.ndarray, band: int) -> np.ndarray:
    import contextlib
    import io
    from pymatting import estimate_alpha_cf
    if not (tri == 255).any() or not (tri == 0).any():
        # a subject thinner than the band (or a band wider than the picture): closed-form matting
        # needs both sure regions in the tile; the guided filter does not
        return _alpha_guided(img, tri, hard, band)
    with contextlib.redirect_stdout(io.StringIO()):     # its solver prints performance warnings
        alpha = estimate_alpha_cf(img.astype(np.float64) / 255, tri.astype(np.float64) / 255)
    return alpha.astype(np.float32)


def _alpha_vitmatte(img: np.ndarray, tri: np.ndarray, hard: np.ndarray, band: int) -> np.ndarray:
    from core.vitmatte import predict_alpha
    return predict_alpha(img, tri)


METHODS: dict[str, Method] = {"guided": _alpha_guided, "cf": _alpha_cf, "vitmatte": _alpha_vitmatte}
assert tuple(METHODS) == EDGE_METHODS


def estimate_foreground(img: np.ndarray, alpha: np.ndarray, r: int) -> np.ndarray:
    """Foreground colours (HxWx3 float32, 0..255) of a crop given its alpha: blur fusion, two
    passes (boxes of radius `r`, then r / 2), so F carries the subject's colour where alpha < 1
    and none of the old background's. cv2 arithmetic throughout (several times numpy's speed)."""
    import cv2
    I = img.astype(np.float32)
    a = np.clip(alpha, 0, 1).astype(np.float32)
    A = cv2.merge((a, a, a))
    NA = 1 - A                 # (cv2 applies a scalar to the first channel only: numpy here)
    F = I
    for radius in (r, max(1, r // 2)):
        k = (2 * radius + 1, 2 * radius + 1)
        wf = np.maximum(cv2.blur(A, k), 1e-6)
        wb = np.maximum(cv2.blur(NA, k), 1e-6)
        Fm = cv2.divide(cv2.blur(cv2.multiply(F, A), k), wf)
        Bm = cv2.divide(cv2.blur(cv2.multiply(I, NA), k), wb)
        # F = Fm + A * (I - A * Fm - (1 - A) * Bm)
        resid = cv2.subtract(cv2.subtract(I, cv2.multiply(A, Fm)), cv2.multiply(NA, Bm))
        F = np.clip(cv2.add(Fm, cv2.multiply(A, resid)), 0, 255, out=resid)
    return F


# ------------------------------------------------------------------------------ border softness --
WORK = 768                 # the border's blur is measured on the photo scaled to this long side
WORK_TILE = 128            # ... per tile of this many px there
SCALES = (2.0, 8.0)        # Gaussian scales (px at WORK) of the two gradients compared
TILE_PCT = 30              # a tile's blur for choosing the path: this percentile of its outline's
SHARP, SOFT = 0.8, 1.8     # blur sigma (px at WORK): below SHARP the small window, above SOFT the ramp path
RAMP_SIGMA = 0.8           # the ramp path scales the photo down until the blur's sigma is this (px)
RAMP_R, RAMP_EPS = 1, 0.03  # its guided filter there
MAX_SIGMA = 16.0           # the widest blur taken (sigma, px at WORK; a 40 px ramp): wider is shading
MIN_STEP = 30.0            # the least contrast across a border (0..255 colour units) to call it blurred
BAND_PER_SIGMA = 3.0       # a soft border's band (px each side) per px of its blur's sigma


@dataclass
class Softness:
    """How blurred a photo's border is, measured at the working scale (long side WORK): `small`
    and `hard` the photo and mask there, `k` the scale factor (>= 1), `choose` and `sigma` HxW
    float32 maps there (px at WORK) of the blur: a low percentile per tile (which path) and the
    median (how wide)."""
    small: np.ndarray
    hard: np.ndarray
    k: float
    choose: np.ndarray
    sigma: np.ndarray


def edge_blur(rgb: np.ndarray, hard: np.ndarray) -> Optional[Softness]:
    """How blurred the photo is across the mask's outline (a defocused or motion-blurred border
    is wide, a crisp one ~1 px or less); None when no outline point has contrast. A blurred step
    keeps more of its gradient under extra smoothing than a sharp one: the ratio r of the colour's
    derivative across the outline at two scales t1 < t2 gives sigma^2 = (t2^2 - r^2 t1^2) /
    (r^2 - 1), per outline point; per tile of WORK_TILE px its percentiles, tiles without outline
    filled from their neighbours, interpolated between the tiles' centres."""
    import warnings
    import cv2
    H, W = hard.shape
    k = max(1.0, max(H, W) / WORK)
    if k > 1:
        size = (max(1, round(W / k)), max(1, round(H / k)))
        small = cv2.resize(rgb, size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(hard.view(np.uint8) * np.uint8(255), size, interpolation=cv2.INTER_AREA) >= 128
    else:
        small, m = rgb, hard
    img = small.astype(np.float32)
    u8 = m.view(np.uint8)
    outline = (u8 ^ cv2.erode(u8, np.ones((3, 3), np.uint8))).astype(bool)
    # the outline's normal, from the mask smoothed a little
    sm = cv2.GaussianBlur(u8.astype(np.float32), (0, 0), 2.0)
    nx = cv2.Sobel(sm, cv2.CV_32F, 1, 0, ksize=3)
    ny = cv2.Sobel(sm, cv2.CV_32F, 0, 1, ksize=3)
    ys, xs = np.nonzero(outline)
    if ys.size == 0:
        return None
    n = np.stack([nx[ys, xs], ny[ys, xs]], axis=1)
    n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-6)
    grads = []
    for t in SCALES:
        g = cv2.GaussianBlur(img, (0, 0), t)
        gx = cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3, scale=0.125)[ys, xs]
        gy = cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3, scale=0.125)[ys, xs]
        d = gx * n[:, :1] + gy * n[:, 1:]                   # the colour's derivative across the edge
        grads.append(np.sqrt((d * d).sum(axis=1)))
    ok = grads[1] > 0.5                                     # some contrast across the edge
    ys, xs = ys[ok], xs[ok]
    if ys.size == 0:
        return None
    r2 = (grads[0][ok] / grads[1][ok]) ** 2
    t1, t2 = SCALES[0] ** 2 + 0.5, SCALES[1] ** 2 + 0.5                 # Sobel's own smoothing
    s2 = (t2 - r2 * t1) / np.maximum(r2 - 1, 1e-3)
    sigma = np.sqrt(np.clip(s2, 0, min(MAX_SIGMA, MAX_EDGE_BAND / BAND_PER_SIGMA / k) ** 2))
    # a blurred border needs a real step across it: the contrast the fit implies (colour units);
    # a mask crossing smooth or faint content says nothing about blur and counts as crisp
    step = grads[1][ok] * np.sqrt(2 * np.pi * (sigma * sigma + t2))
    sigma = np.where(step >= MIN_STEP, sigma, 0)
    h, w = m.shape
    gh, gw = -(-h // WORK_TILE), -(-w // WORK_TILE)
    cell = (ys // WORK_TILE).astype(np.int64) * gw + xs // WORK_TILE
    order = np.argsort(cell, kind="stable")
    cell, sigma = cell[order], sigma[order]
    cells, starts, counts = np.unique(cell, return_index=True, return_counts=True)
    grid = np.full((2, gh * gw), np.nan, np.float32)
    for c, a, cnt in zip(cells, starts, counts):
        if cnt >= 4:
            grid[:, c] = np.percentile(sigma[a:a + cnt], (TILE_PCT, 50))
    grid = grid.reshape(2, gh, gw)
    if np.isnan(grid).all():
        return None
    while np.isnan(grid).any():                      # fill empty tiles from their neighbours
        pad = np.pad(grid, ((0, 0), (1, 1), (1, 1)), constant_values=np.nan)
        near = np.stack([pad[:, 1 + dy:1 + dy + gh, 1 + dx:1 + dx + gw]
                         for dy in (-1, 0, 1) for dx in (-1, 0, 1)])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            fill = np.nanmean(near, axis=0)
        grid = np.where(np.isnan(grid), fill, grid)
    maps = [np.ascontiguousarray(cv2.resize(g, (gw * WORK_TILE, gh * WORK_TILE),
                                            interpolation=cv2.INTER_LINEAR)[:h, :w]) for g in grid]
    return Softness(small, m, k, maps[0], maps[1])


def _sample(img: np.ndarray, u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """`img` (h x w or h x w x c float32) at the points (u, v) (px, bilinear, edges clamped):
    N x c float32."""
    import cv2
    n = u.size
    cols = 1024
    rows = max(1, -(-n // cols))
    mu = np.zeros(rows * cols, np.float32)
    mv = np.zeros(rows * cols, np.float32)
    mu[:n], mv[:n] = u, v                               # remap wants 2-D maps: the points in rows
    out = cv2.remap(img, mu.reshape(rows, cols), mv.reshape(rows, cols), cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(rows * cols, -1)[:n]


def _at(soft: Softness, img: np.ndarray, ys: np.ndarray, xs: np.ndarray) -> np.ndarray:
    """A working-scale map read at full-scale pixels (ys, xs)."""
    k = soft.k
    return _sample(img, ((xs + 0.5) / k - 0.5).astype(np.float32), ((ys + 0.5) / k - 0.5).astype(np.float32))


def _ramp_at(soft: Softness, ys: np.ndarray, xs: np.ndarray, sigma: np.ndarray, decontaminate: bool):
    """The ramp path at the pixels (ys, xs) whose border is blurred by `sigma` px (at WORK): the
    photo scaled down until the blur is RAMP_SIGMA px (the anti-aliased rim the small guided
    window was tuned on), alpha by the guided filter there, read back at the pixels (bilinear);
    likewise the foreground's correction to the photo (F - I). Scales in half-octave steps, a
    pixel between two taking both, weighted. Returns (alpha N, F - I N x 3 or None)."""
    import cv2
    h, w = soft.hard.shape
    level = np.log2(np.maximum(sigma / RAMP_SIGMA, 1.0)) * 2
    lo = level.astype(np.int64)
    order = np.argsort(lo, kind="stable")              # the pixels by level, each level a slice
    bounds = np.concatenate([[0], np.cumsum(np.bincount(lo))])
    frac = (level[order] - lo[order]).astype(np.float32)
    wy = ((ys[order] + 0.5) / soft.k - 0.5).astype(np.float32)        # at the working scale
    wx = ((xs[order] + 0.5) / soft.k - 0.5).astype(np.float32)
    planes_n = 4 if decontaminate else 1
    got = np.zeros((2, ys.size, planes_n), np.float32)  # [0]: at the pixel's level, [1]: the next up
    for L in range(len(bounds)):
        # level L serves its own pixels (slice a0:a1) and, as the next level up, those of L - 1
        a0, a1 = bounds[min(L, len(bounds) - 1)], bounds[min(L + 1, len(bounds) - 1)]
        b0 = bounds[L - 1] if L >= 1 else a0
        if a1 == b0:
            continue
        f = 2.0 ** (L / 2)
        grow = int(np.ceil(f * 8)) + 2                 # context: the filter's and the colour boxes' reach
        py, px = wy[b0:a1], wx[b0:a1]
        y0, y1 = max(0, int(py.min()) - grow), min(h, int(py.max()) + 2 + grow)
        x0, x1 = max(0, int(px.min()) - grow), min(w, int(px.max()) + 2 + grow)
        size = (max(2, round((x1 - x0) / f)), max(2, round((y1 - y0) / f)))
        small = cv2.resize(soft.small[y0:y1, x0:x1], size, interpolation=cv2.INTER_AREA)
        m = cv2.resize(soft.hard[y0:y1, x0:x1].view(np.uint8) * np.float32(1), size,
                       interpolation=cv2.INTER_AREA)
        a = np.clip(cv2.ximgproc.guidedFilter(small.astype(np.float32) / 255, m, RAMP_R, RAMP_EPS), 0, 1)
        sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
        planes = a[..., None]
        if decontaminate:
            planes = np.dstack([a, estimate_foreground(small, a, 2) - small.astype(np.float32)])
        vals = _sample(np.ascontiguousarray(planes, dtype=np.float32), (px - x0 + 0.5) * sx - 0.5,
                       (py - y0 + 0.5) * sy - 0.5)
        got[1, b0:a0] = vals[:a0 - b0]
        got[0, a0:a1] = vals[a0 - b0:]
    mixed = got[0] + frac[:, None] * (got[1] - got[0])
    out = np.empty_like(mixed)
    out[order] = mixed
    alpha = np.clip(out[:, 0], 0, 1)
    resid = out[:, 1:4] if decontaminate else None
    return np.clip(alpha, 0, 1), resid


# --------------------------------------------------------------------------------------- tiling --
def _patches(unknown: np.ndarray, margin: int):
    """(tile box, patch box) pairs covering every unknown pixel: tiles of TILE px holding some,
    joined into runs along each tile row; each patch is its tile run grown by `margin`."""
    H, W = unknown.shape
    gh, gw = -(-H // TILE), -(-W // TILE)
    pad = np.zeros((gh * TILE, gw * TILE), bool)
    pad[:H, :W] = unknown
    has = pad.reshape(gh, TILE, gw, TILE).any(axis=(1, 3))
    for ty in range(gh):
        row = has[ty].view(np.uint8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row, [0]))))
        y0, y1 = ty * TILE, min(H, (ty + 1) * TILE)
        for start, stop in zip(edges[::2], edges[1::2]):
            x0, x1 = start * TILE, min(W, stop * TILE)
            yield (y0, y1, x0, x1), (max(0, y0 - margin), min(H, y1 + margin),
                                     max(0, x0 - margin), min(W, x1 + margin))


def edge_matte(rgb: np.ndarray, mask: np.ndarray, method: str = EDGE_METHODS[0],
               band: Optional[int] = None, decontaminate: bool = True, adapt: bool = True):
    """The matte of `mask`'s border in `rgb` (see the module docstring) as a core.compose.Matte:
    core = the sure subject (copied bit for bit), band_idx / band_alpha / band_fg = the unknown
    pixels, their alpha and (with `decontaminate`) their foreground colour. A mask with no edge
    (empty, or all subject) gives an empty band. The guided method with `adapt` measures how
    blurred the border is (edge_blur) and follows a wide, defocused or motion-blurred border with
    the ramp path and a band that holds it (`band` given: that band). InvalidOptionError on bad
    input; MissingWeightsError for vitmatte without its weights."""
    from core.compose import Matte
    arrays.rgb(rgb, "image")
    m = arrays.mask(mask, "subject mask", shape=rgb.shape, keep_bool=True)
    hard = m if m.dtype == bool else m >= 128
    if method not in METHODS:
        raise InvalidOptionError(f"unknown matting method {method!r}; known: {', '.join(METHODS)}")
    given, band = band is not None, _band(band, hard.shape)
    if method == "cf":
        band = _cf_band(hard, band, given)
    soft = edge_blur(rgb, hard) if method == "guided" and adapt and hard.any() and not hard.all() else None
    if soft is None or soft.choose.max() <= SHARP:    # a crisp border all round: the small window
        tri = trimap(hard, band)
        unknown = tri == UNKNOWN
        if not unknown.any():
            return Matte(tri == 255, np.zeros(0, np.int64), np.zeros(0, np.float32))
        return Matte(tri == 255, *_solve_tiles(rgb, tri, hard, unknown, band, method, decontaminate))

    import cv2
    # 0: the small window (sharp border), 1: the ramp path (blurred), between: both, weighted
    weight = np.clip((soft.choose - SHARP) / (SOFT - SHARP), 0, 1)
    if given:
        tri = trimap(hard, band)
    else:   # the band: wide enough for the ramp where the border is blurred
        u8 = hard.view(np.uint8)
        d_in = cv2.distanceTransform(u8, cv2.DIST_L2, cv2.DIST_MASK_5)
        d_out = cv2.distanceTransform(1 - u8, cv2.DIST_L2, cv2.DIST_MASK_5)
        widths = np.clip(BAND_PER_SIGMA * soft.k * soft.sigma * (weight > 0), band, MAX_EDGE_BAND)
        widths = cv2.resize(widths.astype(np.float32), (hard.shape[1], hard.shape[0]),
                            interpolation=cv2.INTER_LINEAR)
        sure = cv2.compare(d_in, widths, cv2.CMP_GT)
        grown = cv2.compare(d_out, widths, cv2.CMP_LE)
        tri = cv2.max(cv2.bitwise_and(grown, UNKNOWN), sure)
    unknown = tri == UNKNOWN
    ys, xs = np.nonzero(unknown)
    if ys.size == 0:
        return Matte(tri == 255, np.zeros(0, np.int64), np.zeros(0, np.float32))
    idx = ys.astype(np.int64) * hard.shape[1] + xs
    w = _at(soft, weight, ys, xs)[:, 0]
    alpha = np.zeros(idx.size, np.float32)
    fg = np.zeros((idx.size, 3), np.float32) if decontaminate else None
    if (w < 1).any():                                  # the small window where the border is sharp
        sub = np.zeros_like(unknown)
        sub[ys[w < 1], xs[w < 1]] = True
        i_s, a_s, f_s = _solve_tiles(rgb, tri, hard, sub, band, method, decontaminate)
        pos = np.searchsorted(idx, i_s)
        keep = 1 - w[pos]
        alpha[pos] += keep * a_s
        if decontaminate:
            fg[pos] += keep[:, None] * f_s
    if (w > 0).any():                                  # the ramp path where it is blurred
        pos = np.flatnonzero(w > 0)
        sig = _at(soft, soft.sigma, ys[pos], xs[pos])[:, 0]
        a_r, resid = _ramp_at(soft, ys[pos], xs[pos], sig, decontaminate)
        alpha[pos] += w[pos] * a_r
        if decontaminate:
            fg[pos] += w[pos, None] * np.clip(rgb[ys[pos], xs[pos]] + resid, 0, 255)
    return Matte(tri == 255, idx, alpha, fg)


def _solve_tiles(rgb, tri, hard, unknown, band, method, decontaminate):
    """(band_idx, band_alpha, band_fg) of the `unknown` pixels by `method`, tile by tile."""
    solve = METHODS[method]
    W = hard.shape[1]
    # what a band pixel's result depends on: the colour boxes (radius band) and the guided filter
    margin = band + 2 * max(1, band // 6) + 2

    def patch(boxes):
        (y0, y1, x0, x1), (py0, py1, px0, px1) = boxes
        img = np.ascontiguousarray(rgb[py0:py1, px0:px1])
        t = np.ascontiguousarray(tri[py0:py1, px0:px1])
        alpha = solve(img, t, hard[py0:py1, px0:px1], band)
        ys, xs = np.nonzero(unknown[y0:y1, x0:x1])
        cy, cx = ys + (y0 - py0), xs + (x0 - px0)
        fg = None
        if decontaminate:
            full = alpha.astype(np.float32)
            full[t == 255], full[t == 0] = 1, 0
            fg = estimate_foreground(img, full, band)[cy, cx]
        return (ys + y0).astype(np.int64) * W + (xs + x0), np.clip(alpha[cy, cx], 0, 1), fg

    if method == "vitmatte":
        # ViTMatte wants context (it was trained on 512 px crops) and tiles big inputs itself,
        # skipping tiles without unknown pixels: one call on the band's bounding box
        ys, xs = np.nonzero(unknown)
        H = hard.shape[0]
        box = (int(ys.min()), int(ys.max()) + 1, int(xs.min()), int(xs.max()) + 1)
        grow = max(margin, 64)
        boxes = [(box, (max(0, box[0] - grow), min(H, box[1] + grow),
                        max(0, box[2] - grow), min(W, box[3] + grow)))]
    else:
        boxes = _patches(unknown, margin)
    # the fast method is numpy/OpenCV work that releases the GIL: patches run on a few threads
    threads = min(4, os.cpu_count() or 1) if method == "guided" else 1
    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(patch, boxes))
    band_fg = np.concatenate([p[2] for p in parts]).astype(np.float32) if decontaminate else None
    return (np.concatenate([p[0] for p in parts]),
            np.concatenate([p[1] for p in parts]).astype(np.float32), band_fg)


def for_options(rgb: np.ndarray, mask: np.ndarray, options: MaskOptions):
    """The matte a run uses: `options.edge` hard -> the feathered mask (compose.feather_matte),
    matte:METHOD -> edge_matte with `options.edge_band`."""
    from core.compose import feather_matte
    if not options.matted:
        arrays.rgb(rgb, "image")
        return feather_matte(arrays.mask(mask, "subject mask", shape=rgb.shape, keep_bool=True),
                             options.feather)
    return edge_matte(rgb, mask, options.edge_method, options.edge_band)
