"""Alpha matting at the subject's border: from a photo and a binary subject mask, a soft alpha and the
subject's own colours where it meets the background.

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
            brings back strands the mask cut off; a wide defocus ramp needs cf or vitmatte.
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
    ~band / 6, 1 px at 1 MP) and eps = 0.01 were tuned with bench/edges.py."""
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
               band: Optional[int] = None, decontaminate: bool = True):
    """The matte of `mask`'s border in `rgb` (see the module docstring) as a core.compose.Matte:
    core = the sure subject (copied bit for bit), band_idx / band_alpha / band_fg = the unknown
    pixels, their alpha and (with `decontaminate`) their foreground colour. A mask with no edge
    (empty, or all subject) gives an empty band. InvalidOptionError on bad input;
    MissingWeightsError for vitmatte without its weights."""
    from core.compose import Matte
    arrays.rgb(rgb, "image")
    m = arrays.mask(mask, "subject mask", shape=rgb.shape, keep_bool=True)
    hard = m if m.dtype == bool else m >= 128
    if method not in METHODS:
        raise InvalidOptionError(f"unknown matting method {method!r}; known: {', '.join(METHODS)}")
    given, band = band is not None, _band(band, hard.shape)
    if method == "cf":
        band = _cf_band(hard, band, given)
    tri = trimap(hard, band)
    unknown = tri == UNKNOWN
    core = tri == 255
    empty = Matte(core, np.zeros(0, np.int64), np.zeros(0, np.float32))
    if not unknown.any():
        return empty
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
    return Matte(core, np.concatenate([p[0] for p in parts]),
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
