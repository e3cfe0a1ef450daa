"""Automatic subject for studio product shots, no learned weights: what finds the product in a photo
taken on a plain or gradient backdrop (white sweep, grey paper, black velvet, a radial light
fall-off).

Two files: this one fits the backdrop, gathers the evidence, refines the outline and scores the
result; core/auto_shadow.py separates the subject from the backdrop, its cast shadow, its floor
reflection and the floor seen through it (steps 3 and 4). They are one method, tuned together.

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
     outline stays). A piece's rows walled by sharp edges at both ends from its top down, above
     its soft rest, are a grey face joined to its shadow through an open base (a grey pot under
     tall leaves) and stay. A white label on a dark bottle is enclosed by the bottle's edges and stays
     subject (holes are filled). Specks (pieces much smaller than the largest) are dropped.
  4. A floor reflection and the contact shadow at the foot (also where it reaches past a narrow or
     rounded base) are taken off; see-through holes (plain backdrop enclosed by the subject with no
     print inside and a sharp rim: a mug's handle, the floor between legs, the backdrop between
     crossed stems) are left out, with the floor under them down to the contact line (its shadows).
  5. The outline is decided again at full resolution in a band of BAND working px along it only:
     a pixel is subject when its colour is nearer the subject's colour there than the backdrop's
     (or the shaded backdrop, next to a shadow), so the outline follows the photo's own edge.

Known limits: a product part that matches the backdrop and touches the outline (a white cap on a
white sweep, a highlight stripe running the product's whole height, a white belly) is lost; an
off-white product cut by the frame, or a white label reaching the frame's edge, may be lost; a
grey face in the product's lower half whose sides are not sharp may be taken with its shadow; a blank
label of exactly the backdrop's colour is taken as a hole; a floor reflection of a coloured product
is partly taken as subject (its colour is not the backdrop's); a product cut by every side of the
frame has no backdrop to model; a narrow gap between two stems (or a tail and a leg) is filled; a
silver or off-white product on a grey backdrop loses the parts as light as the backdrop. Figures:
`python bench/catalogue.py`.
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Optional

import numpy as np

from core import arrays, auto_shadow
from core.errors import ImageError

__all__ = ["AutoSubject", "NoSubjectError", "NoBackdropError", "find_subject", "WORK_SIDE", "REVIEW_BELOW"]

WORK_SIDE = 640          # long side of the working copy
REVIEW_BELOW = 0.6       # a result under this confidence should be checked by a person (batch's
                         # review list): on the tune half (even seeds 0-286, 1600x1200) it lists
                         # 27 % of the shots, 18 of the 21 under IoU 0.9; those it leaves average
                         # IoU 0.980, those it lists 0.889
BORDER = 0.03            # border strip, share of the short side
T_OFF = 10.0             # colour off the backdrop's (levels, RGB distance) that counts as subject
DARK = 0.32              # darker than this share of the backdrop: no cast shadow, subject
EDGE = 0.05              # a sharp edge: the colour relative to the backdrop changes this much per px
EDGE_LOW = 0.012         # ... or this much, when it is SHARP times steeper than at 3x the scale
SHARP = 1.8
EDGE_FLOOR = 120.0       # edges are measured against the backdrop, or this brightness if darker
STEM = 9                 # a thin part at least this tall (working px) and upright is kept
MIN_PART = 0.02          # a piece smaller than this share of the largest piece is a speck
MIN_AREA = 0.0008        # a subject under this share of the photo is no subject
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
    when much of the outline is faint (a white product on white) or the product is as pale as its
    shadow, where a user should check it.
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
    # misses is one smooth area, not noise speckle (the subject's own pixels are left out of the
    # smoothing: a bright product on a dark backdrop would spread a halo of 'brighter' around it)
    free = (~subject).astype(np.float32)
    smooth = cv2.GaussianBlur(s * free, (0, 0), 2.0) / np.maximum(cv2.GaussianBlur(free, (0, 0), 2.0), 1e-3)
    bright = ~subject & (smooth > 1 + 2 * t_s)
    shadow = ~subject & (s < 1 - t_s)
    return s, off, subject, shadow, bright, t_off


def _edges(s: np.ndarray, img: np.ndarray, model: np.ndarray) -> np.ndarray:
    """Sharp edges: where the colour relative to the backdrop changes fast (more than EDGE per
    working px), or changes by a little more than the noise but abruptly (much faster at a fine
    scale than at a coarse one: an outline, where a soft shadow's ramp is as steep at both)."""
    import cv2
    rel = img / np.maximum(model, EDGE_FLOOR)      # (on a dark backdrop, noise is no edge)

    def grad(sigma):
        r = cv2.GaussianBlur(rel, (0, 0), sigma)
        gx = cv2.Sobel(r, cv2.CV_32F, 1, 0, ksize=3) / 8
        gy = cv2.Sobel(r, cv2.CV_32F, 0, 1, ksize=3) / 8
        return np.sqrt((gx * gx + gy * gy).max(axis=2))
    fine = grad(0.8)
    coarse = cv2.dilate(grad(2.5), np.ones((3, 3), np.uint8))
    return (fine > EDGE) | ((fine > EDGE_LOW) & (fine > SHARP * coarse))


def _fill_holes(found: np.ndarray) -> np.ndarray:
    """Fill what the subject encloses (a label, a highlight), and what it encloses with the
    frame's bottom edge (a white label on a product cut by the frame)."""
    out = ~auto_shadow.components_touching_border(~found)
    if found[-1].any():
        pad = np.vstack([out, np.ones((1, found.shape[1]), bool)])
        out = ~auto_shadow.components_touching_border(~pad)[:-1]
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
    # (within BAND px of one in the product's lower part, where its shadows lie on the floor: the
    # working copy's outline may have taken the shaded backdrop right at the edge)
    cast = shadow & ~found
    near = cv2.dilate(cast.view(np.uint8), k) > 0
    upper = int(auto_shadow.upper_line(found))
    near[:upper] = cast[:upper]
    shaded = near[sy, sx]
    if shaded.any():
        b = back[shaded]
        level = np.clip((px[shaded] * b).sum(axis=1) / (b * b).sum(axis=1), DARK, 1.0)
        d_back[shaded] = np.minimum(d_back[shaded], np.abs(px[shaded] - level[:, None] * b).sum(axis=1))
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
        background = auto_shadow.background(subject, shadow, bright, edge)
        subject = subject | (bright & ~background)
        found = ~background
        # a shadow sliver walled off by its own (contact) edge is not subject: drop thin shadow bits
        solid = cv2.morphologyEx(found.view(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) > 0
        # (a thin upright part, a glass's stem, is no sliver of shadow on the floor)
        solid |= cv2.morphologyEx(found.view(np.uint8), cv2.MORPH_OPEN, np.ones((STEM, 1), np.uint8)) > 0
        found = found & (solid | ~shadow)
        before = found
        found = auto_shadow.drop_reflection(found, np.abs(img - model).sum(axis=2))
        found = auto_shadow.drop_foot_shadow(found, shadow, (s < DARK) & (off <= t_off), s)
        if (before & ~found).any():
            # what the contact shadow or the reflection walled in (the floor between a figure's
            # legs) is backdrop again when it is backdrop-like and reaches what was dropped
            plain = ~subject & ~shadow
            back = auto_shadow.grow(~found, found & plain & ~edge)
            found = ~auto_shadow.grow(back, found & plain & edge)
        found = _drop_specks(found, int(MIN_AREA * sw * sh))
        if np.count_nonzero(found) < MIN_AREA * sw * sh:
            raise NoSubjectError("no subject found: the photo looks like plain backdrop")
        # fill enclosed holes (labels, highlights)
        found = _fill_holes(auto_shadow.bridge(_fill_holes(found), subject))
        holes = auto_shadow.see_through(found, ~subject & ~shadow, edge, bright, shadow)
        found = found & ~auto_shadow.floor_below(found, holes, subject, edge)
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
    and where the subject reaches the top or the sides of the frame (a backdrop fitted badly), and
    by half the share of the subject that is shadow-like (a pale product: it and its shadow were
    told apart by shape and position, not by colour)."""
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
    pale = float(shadow[found].mean())
    conf = (clear * min(1.0, share / 0.9) * (1 - min(1.0, max(0.0, shaded - 0.2) * 2)) * (1 - min(0.5, cut))
            * (1 - 0.5 * pale))
    return round(max(0.0, min(1.0, conf)), 3)
