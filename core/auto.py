"""Automatic subject for studio product shots, no learned weights: what finds the product in a photo
taken on a plain or gradient backdrop (white sweep, grey paper, a radial light fall-off).

Why one file (~500 lines): the steps below pass the backdrop model, the evidence maps and the
working scale from one to the next; they are one method, tuned together.

    found = find_subject(rgb)          # rgb HxWx3 uint8
    found.mask        HxW uint8, 255 = subject, full resolution
    found.confidence  0..1 (see AutoSubject)
    found.box         (x1, y1, x2, y2) of the mask, x2/y2 exclusive
    found.method      "studio"

How (on a copy with long side WORK_SIDE px, then the edge at full resolution):
  1. The backdrop is modelled from the photo's border: per channel a cubic polynomial in (x, y)
     fitted to the border strip, refitted without the pixels that do not fit (a product or its
     shadow may touch the border). Its residual is the photo's noise level. No plain backdrop at the
     border (most of it does not fit, or it is busy) -> NoBackdropError.
  2. Each pixel is compared with the backdrop there: a shadow or shade darkens the backdrop and keeps
     its colour (pixel = s x backdrop, s < 1), so the pixel's colour off that line and its darkness
     below what a cast shadow does (s < DARK) are subject evidence. Pixels that fit s x backdrop are
     backdrop (s ~ 1), shadow-like (s < 1) or brighter (s > 1, judged on a smoothed s: a light
     fall-off the cubic misses, or a product's bright face).
  3. A cast shadow is soft: it fades into the backdrop. The product's outline is a sharp edge. So
     the background is grown from the border over backdrop-like pixels, never across a sharp edge
     (edges widened to WALL px, which closes small gaps), then over the shadow-like and brighter
     pieces whose rim mostly fades into it (split at necks narrower than 2 NECK + 1 px first);
     what it does not reach is the subject. A piece that reaches the upper part of the product
     (above UPPER of the height its sharp outline spans) is no floor shadow: it goes only when
     nearly all of its rim fades (a grey face whose highlight, as white as the backdrop, opens the
     outline stays). A white label on a dark bottle is enclosed by the bottle's edges and stays
     subject (holes are filled). Specks (pieces much smaller than the largest) are dropped.
  4. A floor reflection and the contact shadow at the foot are taken off; see-through holes (plain
     backdrop enclosed by the subject with no print inside: a mug's handle, the floor between
     legs) are left out, with the floor under them down to the contact line (its shadows).
  5. The outline is decided again at full resolution in a band of BAND working px along it only:
     a pixel is subject when its colour is nearer the subject's colour there than the backdrop's
     (or the shaded backdrop, next to a shadow), so the outline follows the photo's own edge.

Known limits: a product part that matches the backdrop and touches the outline (a white cap on a
white sweep, a highlight stripe running the product's whole height, a white belly) is lost; an
off-white product cut by the frame, or a white label reaching the frame's edge, may be lost; a
grey face next to the cast shadow in the product's lower half may be taken with the shadow; a blank
label of exactly the backdrop's colour is taken as a hole; a floor reflection of a coloured product
is partly taken as subject (its colour is not the backdrop's); a product cut by every side of the
frame has no backdrop to model. Figures: `python bench/catalogue.py`.
(Over the ~400-line guide: one method whose steps feed each other; split, they would be private.)
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from core import arrays
from core.errors import ImageError

__all__ = ["AutoSubject", "NoSubjectError", "NoBackdropError", "find_subject", "WORK_SIDE", "REVIEW_BELOW"]

WORK_SIDE = 640          # long side of the working copy
REVIEW_BELOW = 0.6       # a result under this confidence should be checked by a person (batch's
                         # review list): on the tune half it lists 28 % of the shots, 16 of the 28
                         # under IoU 0.9, and the shots it leaves average IoU 0.96
BORDER = 0.03            # border strip, share of the short side
T_OFF = 10.0             # colour off the backdrop's (levels, RGB distance) that counts as subject
DARK = 0.32              # darker than this share of the backdrop: no cast shadow, subject
EDGE = 0.05              # a sharp edge: the colour relative to the backdrop changes this much per px
EDGE_LOW = 0.012         # ... or this much, when it is SHARP times steeper than at 3x the scale
SHARP = 1.8
WALL = 3                 # edges are widened to this many working px before they wall anything in
NECK = 5                 # shadow-like areas are split at necks narrower than 2 x NECK + 1 working px
OPEN_RIM = 0.7           # ... or, for one standing in the product's upper part, this much
UPPER = 0.5              # a cast shadow does not reach above this share of the product's height
SOFT_RIM = 0.22          # a shadow-like piece whose rim is at least this much soft backdrop is shadow
MIRROR = 0.5             # a reflection is at most this strong against the backdrop as its mirror pixel
FLOOR = 0.3              # the floor under a see-through hole is at most this share of the height
FOOT = 0.03              # a contact shadow under the product is at most this share of the height tall
MIN_PART = 0.02          # a piece smaller than this share of the largest piece is a speck
MIN_AREA = 0.0008        # a subject under this share of the photo is no subject
HOLE_MIN = 30            # an enclosed plain area this big (working px) may be a see-through hole
BAND = 2                 # the outline is decided again at full size within this many working px


class NoSubjectError(ImageError):
    """The photo looks like plain backdrop: there is nothing to cut out."""


class NoBackdropError(ImageError):
    """The photo's border is not a plain backdrop: the studio method cannot model it."""


@dataclass(frozen=True)
class AutoSubject:
    """The subject found in a studio shot.

    mask: HxW uint8, 255 = subject. box: (x1, y1, x2, y2), x2/y2 exclusive. method: "studio".
    confidence: how clearly the subject stands apart from the backdrop, 0..1: the share of its
    outline where it differs from the backdrop by a clear margin (weighted by how well the border
    fits one smooth backdrop). Near 1 for a dark or coloured product on white; about 0.5 or less
    when much of the outline is faint (a white product on white), where a user should check it.
    """
    mask: np.ndarray
    confidence: float
    box: tuple[int, int, int, int]
    method: str = "studio"


@contextlib.contextmanager
def _cv_threads(threads: Optional[int]):
    import cv2
    if threads is None:
        yield
        return
    old = cv2.getNumThreads()
    cv2.setNumThreads(int(threads))
    try:
        yield
    finally:
        cv2.setNumThreads(old)


def _design(xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Cubic polynomial terms of normalised coordinates (-1..1)."""
    return np.stack([np.ones_like(xs), xs, ys, xs * xs, xs * ys, ys * ys,
                     xs ** 3, xs * xs * ys, xs * ys * ys, ys ** 3], axis=1)


def _robust_fit(A: np.ndarray, vals: np.ndarray, keep: np.ndarray):
    """Least squares of vals on A, refitted without the samples that do not fit (4 rounds).
    Returns (coefficients, the samples kept) or None when too few are left."""
    for _ in range(4):
        if keep.sum() < 2 * A.shape[1] + 10:
            return None
        Ak = A[keep]
        coef = np.linalg.solve(Ak.T @ Ak + 1e-9 * np.eye(A.shape[1]), Ak.T @ vals[keep])
        res = np.abs(vals - A @ coef).max(axis=1)
        tol = max(3.0, 4.0 * 1.4826 * float(np.median(res[keep])))
        keep = keep & (res <= tol)
    return coef, keep


def _backdrop(img: np.ndarray):
    """Fit the backdrop to the border strip of img (HxWx3 float32). Returns (model HxWx3, noise
    sigma per channel, share of the border that fits). Candidates: a cubic on all four sides and
    a quadratic on each three of them (a product cut by the frame's bottom edge hides most of that
    side); of those that most of the whole border fits, the tightest wins."""
    import cv2
    h, w = img.shape[:2]
    b = max(2, int(round(BORDER * min(h, w))))
    edge = np.zeros((h, w), bool)
    edge[:b], edge[-b:], edge[:, :b], edge[:, -b:] = True, True, True, True
    yy, xx = np.nonzero(edge)
    step = max(1, len(yy) // 6000)
    yy, xx = yy[::step], xx[::step]
    side = np.where(yy < b, 0, np.where(yy >= h - b, 1, np.where(xx < b, 2, 3)))
    nx = lambda v, n: v.astype(np.float64) / max(n - 1, 1) * 2 - 1  # noqa: E731
    A = _design(nx(xx, w), nx(yy, h))
    vals = img[yy, xx].astype(np.float64)
    fits = []
    for left_out in (None, 0, 1, 2, 3):
        terms = 10 if left_out is None else 6
        fit = _robust_fit(A[:, :terms], vals, side != left_out)
        if fit is not None:
            res = np.abs(vals - A[:, :terms] @ fit[0]).max(axis=1)
            fits.append((left_out, terms, res, 1.4826 * float(np.median(res[fit[1]]))))
    best = None
    if fits:
        # one tolerance for all (from the best fit's noise), so that a bad fit cannot widen its own;
        # of the fits most of the border agrees with, the tightest (all four sides preferred)
        tol = max(6.0, 4.0 * min(f[3] for f in fits))
        counts = [int((f[2] <= tol).sum()) for f in fits]
        for (left_out, terms, res, sig), count in zip(fits, counts):
            if count < 0.8 * max(counts):
                continue
            score = sig * (0.9 if left_out is None else 1.0)
            if best is None or score < best[0]:
                best = (score, terms, res <= tol)
    if best is None:
        return np.repeat(img.mean(axis=(0, 1), keepdims=True), h, 0).repeat(w, 1), np.full(3, 99.0), 0.0
    _, terms, inliers = best
    fit = _robust_fit(A[:, :terms], vals, inliers)
    if fit is None:
        return np.repeat(img.mean(axis=(0, 1), keepdims=True), h, 0).repeat(w, 1), np.full(3, 99.0), 0.0
    coef, keep = fit
    sigma = np.maximum(1.4826 * np.median(np.abs(vals[keep] - A[keep, :terms] @ coef), axis=0), 0.5)
    share = float(keep.mean())
    gw, gh = max(2, w // 4), max(2, h // 4)           # smooth: evaluated on a coarse grid, upscaled
    X, Y = np.meshgrid(np.linspace(-1, 1, gw), np.linspace(-1, 1, gh))
    coarse = (_design(X.ravel(), Y.ravel())[:, :terms] @ coef).reshape(gh, gw, 3).astype(np.float32)
    model = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_LINEAR)
    return np.clip(model, 1.0, 300.0), sigma, share


def _evidence(img: np.ndarray, model: np.ndarray, sigma: np.ndarray):
    """Per pixel: shading ratio s (pixel ~ s x backdrop), colour off that line (levels), subject
    evidence (bool) and shadow-like (bool)."""
    import cv2
    dot = (img * model).sum(axis=2)
    nb = (model * model).sum(axis=2)
    s = dot / nb
    off = np.sqrt(np.maximum(((img - s[..., None] * model) ** 2).sum(axis=2), 0))
    sig = float(np.linalg.norm(sigma))
    bright = np.sqrt(nb) / np.sqrt(3)
    t_off = max(T_OFF, 4.0 * sig)
    t_s = max(0.025, 4.0 * sig / np.sqrt(3) / max(float(bright.mean()), 1.0))
    subject = (off > t_off) | (s < DARK)
    # brighter than the backdrop model, judged on a smoothed ratio: a light fall-off the model
    # misses is one smooth area, not noise speckle
    bright = ~subject & (cv2.GaussianBlur(s, (0, 0), 2.0) > 1 + 2 * t_s)
    shadow = ~subject & (s < 1 - t_s)
    return s, off, subject, shadow, bright, t_off


def _edges(s: np.ndarray, img: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Sharp edges: where the colour relative to the backdrop changes fast (more than EDGE per
    working px), or changes by a little more than the noise but abruptly (much faster at a fine
    scale than at a coarse one: an outline, where a soft shadow's ramp is as steep at both)."""
    import cv2
    rel = img / model

    def grad(sigma):
        r = cv2.GaussianBlur(rel, (0, 0), sigma)
        gx = cv2.Sobel(r, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(r, cv2.CV_32F, 0, 1, ksize=3) / 8
        return np.sqrt((gx * gx + gy * gy).max(axis=2))
    fine = grad(0.8)
    coarse = cv2.dilate(grad(2.5), np.ones((3, 3), np.uint8))
    return (fine > EDGE) | ((fine > EDGE_LOW) & (fine > SHARP * coarse))


def _components_touching_border(passable: np.ndarray) -> np.ndarray:
    import cv2
    n, lab = cv2.connectedComponents(passable.view(np.uint8), connectivity=4)
    border = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
    border = border[border > 0]
    reached = np.zeros(n, bool)
    reached[border] = True
    return reached[lab]


def _grow(seed: np.ndarray, into: np.ndarray) -> np.ndarray:
    """seed plus the pieces of `into` (4-connected) that touch it."""
    import cv2
    n, lab = cv2.connectedComponents((seed | into).view(np.uint8), connectivity=4)
    hit = np.zeros(n, bool)
    hit[np.unique(lab[seed])] = True
    hit[0] = False
    return hit[lab]


def _background(subject: np.ndarray, shadow: np.ndarray, bright: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The backdrop and its shadows: grown from the border over backdrop-like pixels, then over the
    shadow-like pieces whose rim mostly fades into that backdrop (a cast shadow) rather than
    meeting sharp edges (a grey product, walled by its outline). Shadow-like areas are split at
    narrow necks first, so a grey product standing in its shadow is not taken with it."""
    import cv2
    plain = ~subject & ~shadow & ~bright
    edge_px = edge
    edge = cv2.dilate(edge.view(np.uint8), np.ones((WALL, WALL), np.uint8)) > 0   # close small gaps
    bg = _components_touching_border(plain & ~edge)
    pending = (shadow | bright) & ~edge & ~bg
    if pending.any():
        disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * NECK + 1, 2 * NECK + 1))
        core = cv2.erode(pending.view(np.uint8), disc) > 0
        n, lab = cv2.connectedComponents(core.view(np.uint8), connectivity=8)
        k3 = np.ones((3, 3), np.uint8)
        lab = lab.astype(np.int32)
        for _ in range(NECK + 1):                     # give the pixels cut off by the erosion back
            grown = cv2.dilate(lab.astype(np.float32), k3).astype(np.int32)
            free = pending & (lab == 0)
            lab[free] = grown[free]
        if n > 1:
            ring = np.zeros(n, np.float64)
            soft = np.zeros(n, np.float64)
            big = cv2.dilate(lab.astype(np.float32), np.ones((3, 3), np.uint8)).astype(np.int32)
            rim = (big > 0) & (lab == 0)
            np.add.at(ring, big[rim], 1)
            np.add.at(soft, big[rim & bg], 1)
            is_shadow = soft >= SOFT_RIM * np.maximum(ring, 1)
            is_shadow &= ~_standing(lab, n, (edge_px | subject) & ~bg) | (soft >= OPEN_RIM * ring)
            is_shadow[0] = False
            bg = bg | is_shadow[lab]
        # shadow pixels no piece took (thin bits) go with the backdrop they touch
        bg = _grow(bg, pending & (lab == 0) if n > 1 else pending)
    # backdrop-like pixels cut off from the border only by shadows, and the backdrop side of edges
    bg = _grow(bg, plain & ~edge)
    for _ in range(WALL // 2 + 1):                    # the backdrop side of the walls, a step at a time
        bg = bg | ((cv2.dilate(bg.view(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~subject & edge & ~edge_px)
    return _grow(bg, plain & edge_px)


def _standing(lab: np.ndarray, n: int, sharp: np.ndarray) -> np.ndarray:
    """Per piece: a dark piece that reaches the upper part of the product (the rows and columns its
    sharp outline and clear subject pixels span) cannot be the cast shadow, which lies on the
    floor at the base: it is a grey face of the product (a highlight as bright as the backdrop can
    open its outline at the top, so its rim alone does not tell)."""
    ys, xs = np.nonzero(sharp)
    out = np.zeros(n, bool)
    if len(ys) == 0:
        return out
    top, bottom, left, right = ys.min(), ys.max(), xs.min(), xs.max()
    py, px = np.nonzero(lab)
    k = lab[py, px]
    ptop = np.full(n, 1 << 30)
    np.minimum.at(ptop, k, py)
    pl, pr = np.full(n, 1 << 30), np.full(n, -1)
    np.minimum.at(pl, k, px)
    np.maximum.at(pr, k, px)
    out = (ptop < top + UPPER * (bottom - top)) & (pl >= left) & (pr <= right)
    return out


def _fill_holes(found: np.ndarray) -> np.ndarray:
    """Fill what the subject encloses (a label, a highlight)."""
    return ~_components_touching_border(~found)


def _see_through(found: np.ndarray, plain: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The see-through holes in the subject: pieces of plain backdrop (the backdrop's colour and
    brightness, no edge) enclosed by subject pixels on every side, at least HOLE_MIN working px,
    with nothing inside them (a label with print has its print inside): the hole of a mug's
    handle, the floor between a figure's legs. A blank label of exactly the backdrop's colour
    looks the same and is taken out too."""
    import cv2
    cand = found & plain & ~edge
    n, lab, stats, _ = cv2.connectedComponentsWithStats(cand.view(np.uint8), connectivity=4)
    if n <= 1:
        return np.zeros_like(found)
    near = cv2.dilate((~found).view(np.uint8), np.ones((3, 3), np.uint8)) > 0
    touches = np.zeros(n, bool)
    touches[np.unique(lab[near & cand])] = True              # next to the backdrop: an outline part
    solid = np.zeros(n, bool)
    for k in np.nonzero(~touches & (stats[:, cv2.CC_STAT_AREA] >= HOLE_MIN))[0]:
        if k == 0:
            continue
        x, y, bw, bh = stats[k, :4]
        piece = (lab[y:y + bh, x:x + bw] == k).astype(np.uint8)
        filled = ~_components_touching_border(~piece.astype(bool)) if min(bw, bh) > 2 else piece > 0
        if np.count_nonzero(filled) > 1.01 * stats[k, cv2.CC_STAT_AREA] + 2:
            continue
        # across a thin line of print there is more of the same paper: a printed label
        y0, x0 = max(0, y - 4), max(0, x - 4)
        sub = lab[y0:y + bh + 4, x0:x + bw + 4]
        ring = cv2.dilate((sub == k).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        solid[k] = np.count_nonzero(ring & (sub > 0) & (sub != k)) <= 0.02 * stats[k, cv2.CC_STAT_AREA]
    return solid[lab]


def _floor_below(found: np.ndarray, holes: np.ndarray, subject: np.ndarray, edge: np.ndarray) -> np.ndarray:
    """The see-through holes and, under each, the floor down to the subject's lowest row in that
    column when, above the contact line (the lowest FOOT of the photo's height), nothing there is
    clearly subject and no edge crosses it: between a figure's legs the floor carries the cast
    and contact shadows, which the legs and the contact line wall in."""
    out = holes.copy()
    if not holes.any():
        return out
    h = found.shape[0]
    rows = np.arange(h)[:, None]
    lowest_hole = np.where(holes, rows, -1).max(axis=0)
    bottom = np.where(found, rows, -1).max(axis=0)
    top = int(np.nonzero(found.any(axis=1))[0][0])
    foot = max(2, int(round(FOOT * h)))
    cols = np.nonzero((lowest_hole >= 0) & (bottom > lowest_hole)
                      & (bottom - lowest_hole <= FLOOR * (bottom.max() - top + 1)))[0]
    for c in cols:
        y0, y1 = lowest_hole[c] + 1, bottom[c] + 1
        above = max(y0, y1 - foot)                   # above the contact line
        if not subject[y0:above, c].any() and not edge[y0:above, c].any():
            out[y0:y1, c] = True
    return out


def _drop_reflection(found: np.ndarray, contrast: np.ndarray) -> np.ndarray:
    """Take a floor reflection off the bottom of the subject: below some line y0 every row is a
    faint mirror image of the rows above it (each pixel's contrast with the backdrop under
    MIRROR x that of its mirror pixel at 2 y0 - y) in 8 rows of 10, down to the subject's lowest
    row. The highest such y0 with at least 3 rows below it wins; the faint pixels below it are
    dropped."""
    rows = np.nonzero(found.any(axis=1))[0]
    if len(rows) < 8:
        return found
    top, bottom = int(rows[0]), int(rows[-1])
    height = bottom - top + 1
    best = None
    for y0 in range(bottom - 3, bottom - int(0.45 * height), -1):
        d = bottom - y0                                     # rows below y0
        if y0 - d < top:
            break
        below = found[y0 + 1:bottom + 1]
        mirror = found[y0 - d:y0][::-1]
        faint = below & mirror & (contrast[y0 + 1:bottom + 1] < MIRROR * contrast[y0 - d:y0][::-1])
        n_below = below.sum(axis=1)
        share = faint.sum(axis=1) / np.maximum(n_below, 1)
        if np.mean(share[n_below > 0] >= 0.7) < 0.8:       # (a contact shadow's rows may fail)
            if best is not None:
                break
            continue
        best = (y0, faint)
    if best is None:
        return found
    y0, faint = best
    out = found.copy()
    out[y0 + 1:y0 + 1 + faint.shape[0]] &= ~faint
    return out


def _drop_foot_shadow(found: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """Take the contact shadow off the subject's foot: in each column, shadow-like pixels at the
    bottom of the subject, at most FOOT x the photo's height tall, right under pixels that are
    clearly subject (the product's base), go back to the backdrop. (A contact shadow is dark and
    thin, and often sharp enough to be walled in with the product.)"""
    h, w = found.shape
    limit = max(2, int(round(FOOT * h)))
    has = found.any(axis=0)
    if not has.any():
        return found
    bottom = h - 1 - np.argmax(found[::-1], axis=0)          # lowest subject row per column
    cols = np.nonzero(has)[0]
    out = found.copy()
    run = np.zeros(len(cols), np.int32)
    alive = np.ones(len(cols), bool)
    for k in range(limit + 1):
        y = bottom[cols] - k
        ok = y >= 0
        yy = np.clip(y, 0, h - 1)
        sh = ok & found[yy, cols] & shadow[yy, cols]
        ends = alive & ~sh
        # the run ended at row y: clear it when that pixel is clearly subject (the product's base)
        base = ends & ok & found[yy, cols] & (run > 0)
        for c, r in zip(cols[base], run[base]):
            out[bottom[c] - r + 1:bottom[c] + 1, c] = False
        alive &= sh
        run += alive
        if not alive.any():
            break
    return out


def _drop_specks(mask: np.ndarray, min_area: int) -> np.ndarray:
    import cv2
    n, lab, stats, _ = cv2.connectedComponentsWithStats(mask.view(np.uint8), connectivity=8)
    if n <= 1:
        return mask
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = np.zeros(n, bool)
    keep[1:] = (areas >= MIN_PART * areas.max()) & (areas >= min_area)
    return keep[lab]


def _refine(rgb: np.ndarray, found: np.ndarray, img: np.ndarray, model: np.ndarray,
            evidence: np.ndarray, shadow: np.ndarray) -> np.ndarray:
    """The working mask brought to full size, its outline decided again at full resolution: in a
    band of BAND working px along it, a pixel is subject when its colour is nearer the subject's
    colour there (the average of the subject pixels within a few working px) than the backdrop's
    (the fitted model). So the outline follows the photo's own edge, not the small copy's pixels,
    and JPEG ringing next to the edge falls back to the backdrop."""
    import cv2
    h, w = rgb.shape[:2]
    sh, sw = found.shape
    u8 = found.view(np.uint8)
    k = np.ones((2 * BAND + 1, 2 * BAND + 1), np.uint8)
    band_small = (cv2.dilate(u8, k) > 0) & ~(cv2.erode(u8, k) > 0)
    out = cv2.resize(u8 * 255, (w, h), interpolation=cv2.INTER_LINEAR)
    cv2.threshold(out, 127, 255, cv2.THRESH_BINARY, dst=out)
    band = cv2.resize(band_small.view(np.uint8), (w, h), interpolation=cv2.INTER_NEAREST)
    pts = cv2.findNonZero(band)
    if pts is None:
        return out
    pts = pts.reshape(-1, 2)
    xs, ys = pts[:, 0], pts[:, 1]
    sure = (found & evidence).astype(np.float32)
    win = (4 * BAND + 1, 4 * BAND + 1)
    cnt = cv2.boxFilter(sure, -1, win, normalize=False)
    colour = cv2.boxFilter(img * sure[..., None], -1, win, normalize=False) / np.maximum(cnt, 1e-6)[..., None]
    sy = np.minimum((ys * (sh / h)).astype(np.int32), sh - 1)
    sx = np.minimum((xs * (sw / w)).astype(np.int32), sw - 1)
    px = rgb[ys, xs].astype(np.float32)
    d_subject = np.abs(px - colour[sy, sx]).sum(axis=1)
    back = model[sy, sx]
    d_back = np.abs(px - back).sum(axis=1)
    # next to a shadow the coarse copy left out, the backdrop may be shaded: s x backdrop
    shaded = (shadow & ~found)[sy, sx]
    if shaded.any():
        b = back[shaded]
        k = np.clip((px[shaded] * b).sum(axis=1) / (b * b).sum(axis=1), DARK, 1.0)
        d_back[shaded] = np.minimum(d_back[shaded], np.abs(px[shaded] - k[:, None] * b).sum(axis=1))
    known = cnt[sy, sx] >= 1
    decided = np.where(d_subject < d_back, 255, 0).astype(np.uint8)
    out[ys[known], xs[known]] = decided[known]
    return out


def find_subject(rgb: np.ndarray, *, threads: Optional[int] = None) -> AutoSubject:
    """The product in a studio shot (plain or gradient backdrop), without learned weights.

    Raises NoSubjectError ("no subject found: the photo looks like plain backdrop") and
    NoBackdropError ("no plain backdrop around the subject: click on it instead"), both
    core.errors.ImageError with one line. `threads` limits OpenCV's threads for the call.
    """
    import cv2
    rgb = arrays.rgb(rgb, "photo")
    h, w = rgb.shape[:2]
    if min(h, w) < 16:
        raise ImageError(f"the photo is too small to find a subject in ({w}x{h} px)")
    with _cv_threads(threads):
        scale = min(1.0, WORK_SIDE / max(h, w))
        sw, sh = max(16, int(round(w * scale))), max(16, int(round(h * scale)))
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA) if scale < 1 else rgb
        img = small.astype(np.float32)
        model, sigma, share = _backdrop(img)
        if share < 0.5 or float(np.max(sigma)) > 10:
            raise NoBackdropError("no plain backdrop around the subject: click on it instead")
        s, off, subject, shadow, bright, t_off = _evidence(img, model, sigma)
        edge = _edges(s, img, model)
        background = _background(subject, shadow, bright, edge)
        subject = subject | (bright & ~background)
        found = ~background
        # a shadow sliver walled off by its own (contact) edge is not subject: drop thin shadow bits
        solid = cv2.morphologyEx(found.view(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) > 0
        found = found & (solid | ~shadow)
        before = found
        found = _drop_reflection(found, np.abs(img - model).sum(axis=2))
        found = _drop_foot_shadow(found, shadow)
        if (before & ~found).any():
            # what the contact shadow or the reflection walled in (the floor between a figure's
            # legs) is backdrop again when it is backdrop-like and reaches what was dropped
            plain = ~subject & ~shadow
            back = _grow(~found, found & plain & ~edge)
            found = ~_grow(back, found & plain & edge)
        found = _drop_specks(found, int(MIN_AREA * sw * sh))
        if np.count_nonzero(found) < MIN_AREA * sw * sh:
            raise NoSubjectError("no subject found: the photo looks like plain backdrop")
        # fill enclosed holes (labels, highlights)
        found = _fill_holes(found)
        found = found & ~_floor_below(found, _see_through(found, ~subject & ~shadow, edge), subject, edge)
        conf = _confidence(found, off, s, t_off, share, shadow)
        mask = _refine(rgb, found, img, model, subject, shadow)
    x, y, bw, bh = cv2.boundingRect(mask)
    if bw == 0:
        raise NoSubjectError("no subject found: the photo looks like plain backdrop")
    box = (int(x), int(y), int(x + bw), int(y + bh))
    return AutoSubject(mask=np.ascontiguousarray(mask), confidence=conf, box=box)


def _confidence(found: np.ndarray, off: np.ndarray, s: np.ndarray, t_off: float, share: float,
                shadow: np.ndarray) -> float:
    """How clearly the subject stands apart: the contrast just inside its outline (colour off the
    backdrop, or darkness), times the share of the border that fits one backdrop, lowered where
    the outline runs along shadow-like backdrop (a grey face may have been taken for a shadow)
    and where the subject reaches the top or the sides of the frame (a backdrop fitted badly)."""
    import cv2
    k3 = np.ones((3, 3), np.uint8)
    ring = cv2.erode(found.view(np.uint8), k3) > 0
    ring = ring & ~(cv2.erode(ring.view(np.uint8), k3) > 0)
    if not ring.any():
        ring = found
    strength = np.maximum(off / (2 * t_off), np.abs(1 - s) / 0.2)
    vals = strength[ring]
    if vals.size == 0:
        return 0.0
    clear = float(np.mean(np.clip(vals, 0, 1)))
    outside = (cv2.dilate(found.view(np.uint8), k3) > 0) & ~found
    shaded = float(shadow[outside].mean()) if outside.any() else 0.0
    edges = np.concatenate([found[0], found[:, 0], found[:, -1]])
    cut = float(edges.mean()) / 0.05
    conf = clear * min(1.0, share / 0.9) * (1 - min(1.0, max(0.0, shaded - 0.2) * 2)) * (1 - min(0.5, cut))
    return round(max(0.0, min(1.0, conf)), 3)
