"""Catalogue benchmark: the no-weights automatic subject finder (core.auto.find_subject) on
photograph-like studio product shots, against masks known exactly; and its time at 12 MP.

    python bench/catalogue.py [--quick] [--n 36] [--size 1600x1200] [--reps 3] [--big 3] [--no-12mp] [--half tune]
                              [--learned] [--batch 100]

The set (fixed seeds, `make_shot(seed, size)`): one product per shot, drawn anti-aliased, 25-75 %
of the frame's height, standing on the floor of a studio backdrop. Products: bottles (cap, neck,
a label that is inset or spans the body, white or printed), mugs (a handle whose hole shows the
backdrop), boxes and books (two lit faces, covers cut from real photos), stones and fruit (smooth
random outlines), a figurine (scikit-image's horse silhouette), a sticker (scikit-image's logo with
its own alpha), wine glasses (a tinted, partly see-through bowl on a thin stem) and potted plants
(thin stems, leaves). Their colours: crops of the real photos bundled with scikit-image (coffee,
chelsea, astronaut, rocket, immunohistochemistry, brick, gravel, grass, retina), or a solid colour (saturated,
pastel, black, grey, silver, off-white), always shaded (cylinder or side light) with a specular
stripe on round products. White labels sit on dark bottles. Backdrops: white (232-255), light grey
(195-235) or a sweep (a vertical or radial gradient, light to a darker floor), a slight tint,
vignetting. Below the product: a soft cast shadow (its silhouette squashed onto the floor, sheared
towards a side, blurred 1-4 % of the height, opacity 0.25-0.6) and a contact shadow (a thin dark
ellipse at the base); on a third of the shots a floor reflection (the product mirrored at its base,
opacity 0.1-0.3, fading out). Some products are cropped by the frame's bottom edge. Then sensor
noise (sigma 0.5-3 levels) and JPEG (quality 70-95). The truth is the product's alpha >= 0.5: the
shadows and the reflection are not subject, a see-through handle hole is not subject, a label is.

Split: even seeds are the tune half, odd seeds the held-out half, reported here (`--half tune`
runs the first --n even seeds). The thresholds of core.auto and core.auto_shadow were set looking
at even seeds only: 0-214 at 800x600 first, then 0-430 at 1600x1200 (the grey/off-white products
taken for their shadow, the radial light fall-off, the floor between legs; REVIEW_BELOW on 0-286;
then the contact shadow past a narrow or rounded base, the reflection under a dark contact shadow,
holes between crossed stems, glossy and round labels kept, the outline beside a cast shadow).
Only held-out shots 1-71 were ever looked at one by one; `--n 216` measures all 216 odd seeds.
IoU per shot at --size; mean and worst over the half, per product kind, and the shots under 0.9
are named.

Baseline in the same run (same shots): `border_threshold`: the colour distance from the median
border colour, Otsu-thresholded, specks removed and holes filled (what a quick script does); and
`grabcut_border`: OpenCV GrabCut at long side 512, initialised with a 3 % border as sure
background and everything else probable foreground, 5 iterations, upscaled (slow: on the first
--grabcut shots only, compared with ours on the same shots). Ratios: the baseline's mean error
(1 - IoU) over ours.

Timing (--no-12mp skips it): the first held-out shots built at 4000x3000 (drawn at half size, upscaled, then noise and
JPEG), OpenCV/BLAS/torch
limited to 2 threads, find_subject timed (median of --reps after one warm-up call, each shot), and
its process CPU time. Target: <= 2 s per photo (auto_s_12mp), mean held-out IoU >= 0.95. The VERY
LAST line is one JSON object with the figures (iou_heldout_mean, auto_s_12mp, confidence_iou_corr; with
--learned, learned_s from bench/salient.py's learned_s(); with --batch N, batch_per_min from
bench/catalogue_batch.py's run(N); each left out with a line when that module is absent).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

THREADS = 2
BIG = (4000, 3000)                # (w, h): 12 MP
IOU_TARGET = 0.95
TIME_TARGET_S = 2.0
KINDS = ("bottle", "mug", "box", "book", "stone", "figurine", "sticker", "glass", "plant")
PHOTOS = ("coffee", "chelsea", "astronaut", "rocket", "immunohistochemistry", "brick", "gravel", "grass",
          "retina")


@dataclass
class Shot:
    seed: int
    kind: str
    image: np.ndarray        # HxWx3 uint8, the photo
    truth: np.ndarray        # HxW bool, the product (alpha >= 0.5)
    notes: dict = field(default_factory=dict)


_PHOTO_CACHE: dict = {}


def photo(name: str) -> np.ndarray:
    """A bundled scikit-image photo as HxWx3 float32 0..255 (nothing downloaded)."""
    if name not in _PHOTO_CACHE:
        from skimage import data
        img = getattr(data, name)()
        img = np.dstack([img] * 3) if img.ndim == 2 else img[..., :3]
        _PHOTO_CACHE[name] = np.ascontiguousarray(img).astype(np.float32)
    return _PHOTO_CACHE[name]


# -- drawing helpers ----------------------------------------------------------------------------

SHIFT = 4


def _pts(p) -> np.ndarray:
    return np.round(np.asarray(p, np.float64) * (1 << SHIFT)).astype(np.int32)


def _poly(canvas, pts, value=1.0):
    import cv2
    cv2.fillPoly(canvas, [_pts(pts)], value, cv2.LINE_AA, SHIFT)


def _ellipse(canvas, c, axes, value=1.0, angle=0.0, thickness=-1):
    import cv2
    cv2.ellipse(canvas, tuple(int(v) for v in _pts(c)), tuple(int(v) for v in _pts(axes)), angle,
                0, 360, value, thickness, cv2.LINE_AA, SHIFT)


def _rounded_rect(x1, y1, x2, y2, r, n=12):
    """Polygon points of a rectangle with corner radius r."""
    pts = []
    for cx, cy, a0 in ((x2 - r, y1 + r, -90), (x2 - r, y2 - r, 0), (x1 + r, y2 - r, 90),
                       (x1 + r, y1 + r, 180)):
        for t in np.linspace(a0, a0 + 90, n):
            pts.append((cx + r * math.cos(math.radians(t)), cy + r * math.sin(math.radians(t))))
    return pts


def _blob(cx, cy, rx, ry, rng, n=400, harm=0.12):
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    rho = np.ones_like(t)
    for j in range(2, 6):
        rho += rng.uniform(0, harm / (j - 1)) * np.cos(j * t + rng.uniform(0, 2 * np.pi))
    return np.stack([cx + rx * rho * np.cos(t), cy + ry * rho * np.sin(t)], axis=1)


def _texture(rng, h, w, dark_ok=True):
    """HxWx3 float32 0..255: a crop of a real photo (random place, scale, colour shift) or a solid
    colour; returns (texture, material name)."""
    import cv2
    r = rng.random()
    if r < 0.4:
        name = PHOTOS[rng.integers(len(PHOTOS))]
        src = photo(name)
        sh, sw = src.shape[:2]
        cw = int(sw * rng.uniform(0.3, 0.8))
        ch = max(8, min(sh, int(cw * h / max(w, 1))))
        cw = max(8, min(sw, cw))
        y0 = rng.integers(0, sh - ch + 1)
        x0 = rng.integers(0, sw - cw + 1)
        tex = cv2.resize(src[y0:y0 + ch, x0:x0 + cw], (w, h), interpolation=cv2.INTER_LINEAR)
        return tex * rng.uniform(0.8, 1.1, 3).astype(np.float32), "photo:" + name
    options = ["saturated", "pastel", "grey", "silver", "offwhite"] + (["black"] if dark_ok else [])
    mat = options[rng.integers(len(options))]
    if mat == "saturated":
        import colorsys
        c = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.5, 1), rng.uniform(0.35, 0.9))) * 255
    elif mat == "pastel":
        import colorsys
        c = np.array(colorsys.hsv_to_rgb(rng.random(), rng.uniform(0.2, 0.4), rng.uniform(0.8, 0.95))) * 255
    elif mat == "grey":
        c = np.full(3, rng.uniform(60, 170))
    elif mat == "silver":
        c = np.full(3, rng.uniform(150, 200)) * rng.uniform(0.97, 1.03, 3)
    elif mat == "offwhite":
        c = np.full(3, rng.uniform(195, 220)) * rng.uniform(0.96, 1.02, 3)
    else:
        c = np.full(3, rng.uniform(12, 45))
    tex = np.empty((h, w, 3), np.float32)
    tex[:] = c.astype(np.float32)
    return tex, mat


def _shade(w, h, x1, x2, rng, kind):
    """HxW float32 multiplicative light: a cylinder (cos across x1..x2) or a side light."""
    xs = np.arange(w, dtype=np.float32)
    ys = np.arange(h, dtype=np.float32)
    if kind == "cylinder":
        u = np.clip((xs - x1) / max(x2 - x1, 1) * 2 - 1, -1, 1)
        light = rng.uniform(-0.4, 0.4)
        prof = 0.55 + 0.5 * np.clip(np.cos((u - light) * 1.35), 0, 1)
        return np.broadcast_to(prof[None, :], (h, w)).astype(np.float32)
    gx, gy = rng.uniform(-0.25, 0.25, 2)
    return (1 + gx * (xs[None, :] / w - 0.5) + gy * (ys[:, None] / h - 0.5)).astype(np.float32)


# -- one shot -----------------------------------------------------------------------------------

def _backdrop(w, h, rng):
    """HxWx3 float32 0..255 and its name."""
    xs = np.arange(w, dtype=np.float32)[None, :] / w
    ys = np.arange(h, dtype=np.float32)[:, None] / h
    r = rng.random()
    tint = rng.uniform(0.985, 1.015, 3).astype(np.float32)
    if r < 0.4:
        name, base = "white", rng.uniform(232, 255)
        lum = np.full((h, w), base, np.float32) * (1 + rng.uniform(-0.02, 0.02) * (ys - 0.5))
    elif r < 0.65:
        name, base = "grey", rng.uniform(195, 235)
        lum = np.full((h, w), base, np.float32) * (1 + rng.uniform(-0.03, 0.03) * (xs - 0.5))
    elif r < 0.85:
        name = "sweep"
        top, bottom = rng.uniform(225, 255), rng.uniform(170, 225)
        lum = top + (bottom - top) * np.clip(ys, 0, 1) ** rng.uniform(0.7, 1.6) + 0 * xs
    else:
        name = "radial"
        cx, cy = rng.uniform(0.35, 0.65), rng.uniform(0.3, 0.6)
        d2 = (xs - cx) ** 2 + ((ys - cy) * h / w) ** 2
        centre, edge = rng.uniform(235, 255), rng.uniform(175, 220)
        lum = centre + (edge - centre) * np.clip(d2 / 0.35, 0, 1)
    v = rng.uniform(0, 0.12)                                       # vignetting
    vig = 1 - v * (((xs - 0.5) ** 2 + ((ys - 0.5) * h / w) ** 2) / 0.3125)
    lum = lum * vig
    return (lum[..., None] * tint).astype(np.float32), name


def _product(kind, w, h, rng):
    """alpha (HxW float32), colour (HxWx3 float32), base y (where it stands), x range, notes."""
    import cv2
    alpha = np.zeros((h, w), np.float32)
    notes: dict = {}
    ph = h * rng.uniform(0.3, 0.72)                        # product height
    cx = w * rng.uniform(0.38, 0.62)
    base = h * rng.uniform(0.72, 0.9)
    if rng.random() < 0.12:                                 # cropped by the bottom edge
        base = h * rng.uniform(1.02, 1.15)
        notes["cropped"] = True
    top = base - ph
    shade_kind = "cylinder"
    parts = []                                              # extra layers: (alpha, colour)
    if kind == "bottle":
        bw = ph * rng.uniform(0.28, 0.42)
        nw = bw * rng.uniform(0.3, 0.45)
        shoulder = top + ph * rng.uniform(0.25, 0.4)
        neck_top = top + ph * rng.uniform(0.06, 0.12)
        pts = _rounded_rect(cx - bw / 2, shoulder, cx + bw / 2, base, bw * 0.12)
        _poly(alpha, pts)
        _poly(alpha, [(cx - nw / 2, neck_top), (cx + nw / 2, neck_top), (cx + bw / 2 - bw * 0.05, shoulder + bw * 0.2),
                      (cx - bw / 2 + bw * 0.05, shoulder + bw * 0.2)])
        x1, x2 = cx - bw / 2, cx + bw / 2
        col, mat = _texture(rng, h, w)
        if rng.random() < 0.7:                                                   # a label
            cap = np.zeros((h, w), np.float32)
            _poly(cap, _rounded_rect(cx - nw / 2 - 2, top, cx + nw / 2 + 2, neck_top + 2, 3))
            parts.append((cap, _texture(rng, h, w)[0]))
            lab = np.zeros((h, w), np.float32)
            full = rng.random() < 0.5
            lx1, lx2 = (x1, x2) if full else (cx - bw * 0.38, cx + bw * 0.38)
            ly1 = shoulder + (base - shoulder) * rng.uniform(0.15, 0.3)
            ly2 = shoulder + (base - shoulder) * rng.uniform(0.6, 0.85)
            _poly(lab, [(lx1, ly1), (lx2, ly1), (lx2, ly2), (lx1, ly2)])
            lab *= alpha
            paper = np.empty((h, w, 3), np.float32)
            paper[:] = rng.uniform(236, 255) * rng.uniform(0.99, 1.01, 3)
            text = np.zeros((h, w), np.float32)                                 # printed lines
            for k in range(rng.integers(2, 6)):
                ty = ly1 + (ly2 - ly1) * rng.uniform(0.15, 0.85)
                tw = (lx2 - lx1) * rng.uniform(0.2, 0.55)
                tx = cx + rng.uniform(-0.15, 0.15) * (lx2 - lx1) - tw / 2
                _poly(text, [(tx, ty), (tx + tw, ty), (tx + tw, ty + ph * 0.012), (tx, ty + ph * 0.012)])
            ink = rng.uniform(10, 120, 3).astype(np.float32)
            paper = paper * (1 - text[..., None]) + ink * text[..., None]
            parts.append((lab, paper))
            notes["label"] = "full" if full else "inset"
            if mat != "black" and rng.random() < 0.6:
                col = np.full((h, w, 3), rng.uniform(15, 70), np.float32) * rng.uniform(0.8, 1.2, 3).astype(np.float32)
                mat = "dark"
        notes["material"] = mat
    elif kind == "mug":
        bw = ph * rng.uniform(0.75, 1.0)
        x1, x2 = cx - bw / 2, cx + bw / 2
        _poly(alpha, _rounded_rect(x1, top, x2, base, bw * 0.06))
        hand = np.zeros((h, w), np.float32)
        side = 1 if rng.random() < 0.5 else -1
        hx = x2 if side > 0 else x1
        ax, ay = ph * rng.uniform(0.18, 0.26), ph * rng.uniform(0.22, 0.3)
        _ellipse(hand, (hx, top + ph * 0.45), (ax, ay), 1.0, 0, thickness=max(2, int(ph * 0.07)))
        alpha = np.maximum(alpha, hand)
        col, mat = _texture(rng, h, w)
        notes["material"] = mat
    elif kind in ("box", "book"):
        bw = ph * (rng.uniform(0.6, 1.2) if kind == "box" else rng.uniform(0.6, 0.8))
        depth = bw * rng.uniform(0.15, 0.4) * (1 if kind == "box" else 0.3)
        x1 = cx - bw / 2
        front = [(x1, top + depth * 0.5), (x1 + bw, top + depth * 0.5), (x1 + bw, base), (x1, base)]
        side_ = [(x1 + bw, top + depth * 0.5), (x1 + bw + depth, top), (x1 + bw + depth, base - depth * 0.5),
                 (x1 + bw, base)]
        lid = [(x1, top + depth * 0.5), (x1 + depth, top), (x1 + bw + depth, top), (x1 + bw, top + depth * 0.5)]
        for quad in (front, side_, lid):
            _poly(alpha, quad)
        x2 = x1 + bw + depth
        col, mat = _texture(rng, h, w)
        if kind == "book":
            col, mat = cv2.resize(photo(PHOTOS[rng.integers(4)]), (w, h)), "cover"
        sidem = np.zeros((h, w), np.float32)
        _poly(sidem, side_)
        lidm = np.zeros((h, w), np.float32)
        _poly(lidm, lid)
        col = col * (1 - 0.3 * sidem[..., None]) * (1 + 0.1 * lidm[..., None])
        shade_kind = "side"
        notes["material"] = mat
    elif kind == "stone":
        rx = ph * rng.uniform(0.4, 0.8)
        pts = _blob(cx, base - ph / 2, rx, ph / 2, rng)
        _poly(alpha, pts)
        x1, x2 = cx - rx, cx + rx
        col, mat = _texture(rng, h, w)
        notes["material"] = mat
    elif kind == "figurine":
        from skimage import data
        horse = (~data.horse()).astype(np.float32)                  # True on the horse
        ys_, xs_ = np.nonzero(horse > 0.5)
        horse = horse[ys_.min():ys_.max() + 1, xs_.min():xs_.max() + 1]
        hh, hw = horse.shape
        fw = ph * hw / hh
        fx1 = int(round(cx - fw / 2))
        ftop = int(round(top))
        small = cv2.resize(cv2.GaussianBlur(horse, (0, 0), 1.0), (max(1, int(fw)), max(1, int(ph))),
                           interpolation=cv2.INTER_LINEAR)
        small = np.clip((small - 0.5) * 2.5 + 0.5, 0, 1)
        ya, yb = max(0, ftop), min(h, ftop + small.shape[0])
        xa, xb = max(0, fx1), min(w, fx1 + small.shape[1])
        alpha[ya:yb, xa:xb] = small[ya - ftop:yb - ftop, xa - fx1:xb - fx1]
        x1, x2 = cx - fw / 2, cx + fw / 2
        col, mat = _texture(rng, h, w)
        shade_kind = "side"
        notes["material"] = mat
    elif kind == "sticker":
        from skimage import data
        logo = data.logo().astype(np.float32)                       # RGBA, a real alpha
        ys_, xs_ = np.nonzero(logo[..., 3] > 0)
        logo = logo[ys_.min():ys_.max() + 1, xs_.min():xs_.max() + 1]
        lh, lw = logo.shape[:2]
        fw = min(ph * lw / lh, w * 0.8)
        ph2 = fw * lh / lw
        small = cv2.resize(logo, (max(1, int(fw)), max(1, int(ph2))), interpolation=cv2.INTER_AREA)
        fx1, ftop = int(round(cx - fw / 2)), int(round(base - ph2))
        ya, yb = max(0, ftop), min(h, ftop + small.shape[0])
        xa, xb = max(0, fx1), min(w, fx1 + small.shape[1])
        disc = np.zeros(small.shape[:2], np.float32)               # the round sticker, cut out
        _ellipse(disc, (small.shape[1] / 2, small.shape[0] / 2), (small.shape[1] * 0.47, small.shape[0] * 0.47))
        alpha[ya:yb, xa:xb] = (small[..., 3] / 255 * disc)[ya - ftop:yb - ftop, xa - fx1:xb - fx1]
        col = np.zeros((h, w, 3), np.float32)
        col[ya:yb, xa:xb] = small[ya - ftop:yb - ftop, xa - fx1:xb - fx1, :3]
        x1, x2 = cx - fw / 2, cx + fw / 2
        shade_kind = "side"
        notes["material"] = "logo"
    elif kind == "glass":
        bw = ph * rng.uniform(0.45, 0.6)
        bowl_h = ph * rng.uniform(0.4, 0.5)
        stem_w = max(2.0, ph * rng.uniform(0.02, 0.04))
        _ellipse(alpha, (cx, top + bowl_h * 0.45), (bw / 2, bowl_h * 0.55))
        alpha[: int(top), :] = 0
        _poly(alpha, [(cx - stem_w / 2, top + bowl_h * 0.9), (cx + stem_w / 2, top + bowl_h * 0.9),
                      (cx + stem_w / 2, base - ph * 0.03), (cx - stem_w / 2, base - ph * 0.03)])
        _ellipse(alpha, (cx, base - ph * 0.02), (bw * 0.38, ph * 0.02))
        x1, x2 = cx - bw / 2, cx + bw / 2
        col, mat = _texture(rng, h, w, dark_ok=True)
        alpha *= rng.uniform(0.62, 0.85)                   # see-through, still subject (>= 0.5)
        notes["material"] = "glass/" + mat
    else:                                                  # plant: a pot, thin stems, leaves
        pw = ph * rng.uniform(0.3, 0.45)
        pot_h = ph * rng.uniform(0.3, 0.4)
        _poly(alpha, [(cx - pw / 2, base - pot_h), (cx + pw / 2, base - pot_h), (cx + pw * 0.38, base),
                      (cx - pw * 0.38, base)])
        col, mat = _texture(rng, h, w)
        green = np.zeros((h, w), np.float32)
        for k in range(rng.integers(3, 7)):
            ang = rng.uniform(-0.7, 0.7)
            length = ph * rng.uniform(0.5, 0.7)
            sx, sy = cx + rng.uniform(-0.2, 0.2) * pw, base - pot_h
            ex, ey = sx + length * math.sin(ang), sy - length * math.cos(ang)
            import cv2 as _cv
            _cv.line(green, tuple(int(v) for v in _pts((sx, sy))), tuple(int(v) for v in _pts((ex, ey))),
                     1.0, max(1, int(ph * 0.008)), _cv.LINE_AA, SHIFT)
            _ellipse(green, (ex, ey), (ph * rng.uniform(0.05, 0.09), ph * rng.uniform(0.02, 0.035)),
                     1.0, angle=math.degrees(ang) + 90)
        green[int(base - pot_h):] = 0
        leaf = np.empty((h, w, 3), np.float32)
        leaf[:] = np.array([rng.uniform(20, 80), rng.uniform(90, 160), rng.uniform(20, 70)], np.float32)
        parts.append((green, leaf))
        alpha = np.maximum(alpha, green)
        x1, x2 = cx - pw / 2, cx + pw / 2
        shade_kind = "side"
        notes["material"] = mat
    shade = _shade(w, h, x1, x2, rng, shade_kind)[..., None]
    for a, c in parts:
        col = col * (1 - a[..., None]) + c * a[..., None]
    col = col * shade
    if shade_kind == "cylinder" and kind != "glass":                 # a specular stripe
        sx = x1 + (x2 - x1) * rng.uniform(0.2, 0.4)
        sw = (x2 - x1) * rng.uniform(0.03, 0.08)
        xs = np.arange(w, dtype=np.float32)
        stripe = np.exp(-0.5 * ((xs - sx) / sw) ** 2)[None, :] * rng.uniform(0.4, 0.9)
        col = col + (250 - col) * stripe[..., None]
    return np.clip(alpha, 0, 1), np.clip(col, 0, 255), base, (x1, x2), notes


def make_shot(seed: int, size: tuple[int, int] = (1600, 1200), render: float = 1.0) -> Shot:
    """The shot of `seed` at size (w, h): photo and truth, as described in the module docstring.
    render < 1 draws it that much smaller and upscales it (bicubic) before the noise and JPEG: how
    the 12 MP shots are made in reasonable time."""
    import cv2
    W, H = size
    w, h = max(1, round(W * render)), max(1, round(H * render))
    rng = np.random.default_rng(seed)
    kind = KINDS[seed % len(KINDS)] if seed >= 0 else KINDS[rng.integers(len(KINDS))]
    back, back_name = _backdrop(w, h, rng)
    alpha, col, base, (x1, x2), notes = _product(kind, w, h, rng)
    # cast shadow: the silhouette squashed onto the floor at the base, sheared sideways, blurred
    squash = rng.uniform(0.08, 0.3)
    shear = rng.uniform(-1.2, 1.2) * squash
    M = np.float32([[1, shear, -shear * base], [0, squash, base * (1 - squash)]])
    # (y' = base + squash*(y - base): a shadow lying behind the product, over the floor up to it)
    shadow = cv2.warpAffine(alpha, M, (w, h), flags=cv2.INTER_LINEAR)
    flip = rng.random() < 0.5                              # in front of the product, towards the camera
    if flip:
        M2 = np.float32([[1, shear, -shear * base], [0, -squash, base * (1 + squash)]])
        shadow = cv2.warpAffine(alpha, M2, (w, h), flags=cv2.INTER_LINEAR)
    blur = h * rng.uniform(0.01, 0.04)
    shadow = cv2.GaussianBlur(shadow, (0, 0), blur)
    contact = np.zeros((h, w), np.float32)
    _ellipse(contact, ((x1 + x2) / 2, base), ((x2 - x1) * 0.48, h * 0.008))
    contact = cv2.GaussianBlur(contact, (0, 0), h * 0.004)
    op, cop = rng.uniform(0.25, 0.6), rng.uniform(0.3, 0.6)
    back = back * (1 - op * shadow)[..., None] * (1 - cop * contact)[..., None]
    if rng.random() < 0.33:                                # floor reflection
        Mr = np.float32([[1, 0, 0], [0, -1, 2 * base]])
        ra = cv2.warpAffine(alpha, Mr, (w, h), flags=cv2.INTER_LINEAR)
        rc = cv2.warpAffine(col, Mr, (w, h), flags=cv2.INTER_LINEAR)
        ys = np.arange(h, dtype=np.float32)[:, None]
        fade = np.clip(1 - (ys - base) / (h * rng.uniform(0.05, 0.15)), 0, 1) * (ys >= base)
        ra = ra * fade * rng.uniform(0.1, 0.3)
        back = back * (1 - ra[..., None]) + rc * ra[..., None]
        notes["reflection"] = True
    img = back * (1 - alpha[..., None]) + col * alpha[..., None]
    if (w, h) != (W, H):
        img = cv2.resize(img, (W, H), interpolation=cv2.INTER_CUBIC)
        alpha = cv2.resize(alpha, (W, H), interpolation=cv2.INTER_LINEAR)
    img = img + rng.normal(0, rng.uniform(0.5, 3.0), img.shape).astype(np.float32)
    img = np.clip(img + 0.5, 0, 255).astype(np.uint8)
    q = int(rng.integers(70, 96))
    ok, buf = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, q])
    img = np.ascontiguousarray(cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1])
    notes.update(backdrop=back_name, jpeg=q, shadow=round(op, 2))
    return Shot(seed, kind, img, alpha >= 0.5, notes)


# -- metrics and baselines ----------------------------------------------------------------------

def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    union = np.count_nonzero(a | b)
    return 1.0 if union == 0 else np.count_nonzero(a & b) / union


def border_threshold(rgb: np.ndarray) -> np.ndarray:
    """Baseline: distance from the median border colour, Otsu, specks out, holes filled."""
    import cv2
    from scipy import ndimage
    f = rgb.astype(np.float32)
    b = max(2, int(0.03 * min(rgb.shape[:2])))
    border = np.concatenate([f[:b].reshape(-1, 3), f[-b:].reshape(-1, 3), f[:, :b].reshape(-1, 3),
                             f[:, -b:].reshape(-1, 3)])
    d = np.linalg.norm(f - np.median(border, axis=0), axis=2)
    d8 = np.clip(d, 0, 255).astype(np.uint8)
    _, m = cv2.threshold(d8, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    m = cv2.morphologyEx(m, cv2.MORPH_OPEN, np.ones((5, 5), np.uint8))
    return ndimage.binary_fill_holes(m > 0)


def grabcut_border(rgb: np.ndarray) -> np.ndarray:
    """Baseline: GrabCut at long side 512, a 3 % border as sure background, 5 iterations."""
    import cv2
    h, w = rgb.shape[:2]
    s = 512 / max(h, w)
    small = cv2.resize(rgb, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    m = np.full((sh, sw), cv2.GC_PR_FGD, np.uint8)
    b = max(2, int(0.03 * min(sh, sw)))
    m[:b], m[-b:], m[:, :b], m[:, -b:] = cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD, cv2.GC_BGD
    bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
    cv2.grabCut(small[..., ::-1].copy(), m, None, bgd, fgd, 5, cv2.GC_INIT_WITH_MASK)
    fg = ((m == cv2.GC_FGD) | (m == cv2.GC_PR_FGD)).astype(np.uint8) * 255
    return cv2.resize(fg, (w, h), interpolation=cv2.INTER_LINEAR) >= 128


def limit_threads(n: int = THREADS) -> None:
    import cv2
    cv2.setNumThreads(n)
    try:
        from threadpoolctl import threadpool_limits
        threadpool_limits(n)
    except ImportError:
        pass
    try:
        import torch
        torch.set_num_threads(n)
    except ImportError:
        pass


def evaluate(seeds, size, baselines=True, grabcut=12, log=print) -> dict:
    """IoU of find_subject (and the baselines) on the shots of `seeds`; the GrabCut baseline on
    the first `grabcut` shots only (it takes ~10-30 s a shot on a loaded 2-core machine)."""
    from core.auto import find_subject
    from core.errors import BackdropError
    rows = []
    for i, seed in enumerate(seeds):
        shot = make_shot(seed, size)
        row = {"seed": seed, "kind": shot.kind, **shot.notes}
        try:
            res = find_subject(shot.image)
            row["iou"] = iou(res.mask >= 128, shot.truth)
            row["confidence"] = round(res.confidence, 3)
        except BackdropError as exc:
            row["iou"], row["error"] = 0.0, str(exc)
        if baselines:
            row["iou_threshold"] = iou(border_threshold(shot.image), shot.truth)
            if i < grabcut:
                row["iou_grabcut"] = iou(grabcut_border(shot.image), shot.truth)
        rows.append(row)
        log(f"  seed {seed:3d} {shot.kind:9s} iou {row['iou']:.4f}"
            + (f"  (threshold {row['iou_threshold']:.3f}" if baselines else "")
            + (f", grabcut {row['iou_grabcut']:.3f}" if "iou_grabcut" in row else "") + (")" if baselines else "")
            + f"  conf {row.get('confidence', '-')}  {shot.notes}" + (f"  ERROR {row['error']}" if 'error' in row else ""))
    return {"rows": rows}


def summary(rows, key="iou") -> dict:
    vals = [r[key] for r in rows]
    if not vals:                                   # (--grabcut 0)
        return {"mean": float("nan"), "min": float("nan")}
    return {"mean": statistics.fmean(vals), "min": min(vals)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=36, help="shots per half")
    ap.add_argument("--size", default="1600x1200")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--grabcut", type=int, default=12, help="shots that also get the GrabCut baseline")
    ap.add_argument("--big", type=int, default=3, help="12 MP shots timed")
    ap.add_argument("--no-12mp", action="store_true")
    ap.add_argument("--quick", action="store_true", help="8 shots per half at 800x600, 1 shot timed")
    ap.add_argument("--half", choices=("heldout", "tune"), default="heldout")
    ap.add_argument("--learned", action="store_true", help="add learned_s (the salient model's time)")
    ap.add_argument("--batch", type=int, default=0, help="add batch_per_min from N photos (catalogue_batch)")
    args = ap.parse_args(argv)
    if args.quick:
        args.n, args.size, args.big, args.reps, args.grabcut = 8, "800x600", 1, 1, 2
    w, h = (int(v) for v in args.size.split("x"))
    limit_threads(THREADS)
    from core.auto import find_subject
    first = 1 if args.half == "heldout" else 0
    seeds = [first + 2 * i for i in range(args.n)]
    print(f"catalogue: {args.n} {args.half} shots (seeds {seeds[0]}..{seeds[-1]}) at {w}x{h}, "
          f"{THREADS} threads; load average {os.getloadavg()[0]:.2f}")
    rows = evaluate(seeds, (w, h), grabcut=args.grabcut)["rows"]
    ours, thr = summary(rows), summary(rows, "iou_threshold")
    gc_rows = [r for r in rows if "iou_grabcut" in r]
    gc, ours_gc = summary(gc_rows, "iou_grabcut"), summary(gc_rows)
    kinds = {}
    for r in rows:
        kinds.setdefault(r["kind"], []).append(r["iou"])
    print(f"auto (studio)      IoU mean {ours['mean']:.4f}  worst {ours['min']:.4f}")
    print(f"border threshold   IoU mean {thr['mean']:.4f}  worst {thr['min']:.4f}")
    print(f"grabcut (border)   IoU mean {gc['mean']:.4f}  worst {gc['min']:.4f}  on the first {len(gc_rows)} "
          f"shots (auto there: {ours_gc['mean']:.4f})")
    for k, v in sorted(kinds.items()):
        print(f"  {k:9s} mean {statistics.fmean(v):.4f}  worst {min(v):.4f}  ({len(v)})")
    low = [f"{r['seed']}:{r['kind']}:{r['iou']:.3f}" for r in rows if r["iou"] < 0.9]
    if low:
        print("under 0.9:", ", ".join(low))
    err = lambda s: 1 - s["mean"]  # noqa: E731
    out = {
        "half": args.half, "shots": len(rows), "size": f"{w}x{h}",
        "auto_iou_heldout_mean" if args.half == "heldout" else "auto_iou_tune_mean": round(ours["mean"], 4),
        "auto_iou_heldout_min" if args.half == "heldout" else "auto_iou_tune_min": round(ours["min"], 4),
        "baseline_threshold_iou_mean": round(thr["mean"], 4),
        "baseline_grabcut_iou_mean": round(gc["mean"], 4), "baseline_grabcut_shots": len(gc_rows),
        "auto_iou_on_grabcut_shots": round(ours_gc["mean"], 4),
        "error_ratio_threshold_over_auto": round(err(thr) / max(err(ours), 1e-6), 2),
        "error_ratio_grabcut_over_auto": round(err(gc) / max(err(ours_gc), 1e-6), 2),
        "iou_by_kind": {k: round(statistics.fmean(v), 4) for k, v in sorted(kinds.items())},
        "confidence_iou_corr": round(float(np.corrcoef([r["iou"] for r in rows],
                                                       [r.get("confidence", 0.0) for r in rows])[0, 1]), 3),
        "iou_target": IOU_TARGET,
    }
    if not args.no_12mp:
        times, cpus, big_iou = [], [], []
        for i in range(args.big):
            shot = make_shot(first + 2 * i, BIG, render=0.5)
            find_subject(shot.image)                                      # warm-up
            for _ in range(args.reps):
                c0 = resource.getrusage(resource.RUSAGE_SELF)
                t0 = time.perf_counter()
                res = find_subject(shot.image)
                times.append(time.perf_counter() - t0)
                c1 = resource.getrusage(resource.RUSAGE_SELF)
                cpus.append(c1.ru_utime - c0.ru_utime + c1.ru_stime - c0.ru_stime)
            big_iou.append(iou(res.mask >= 128, shot.truth))
            print(f"  12 MP seed {shot.seed} {shot.kind}: {statistics.median(times[-args.reps:]):.3f} s, "
                  f"IoU {big_iou[-1]:.4f}")
        out.update(auto_s_12mp=round(statistics.median(times), 3), auto_s_12mp_max=round(max(times), 3),
                   auto_cpu_s_12mp=round(statistics.median(cpus), 3),
                   auto_iou_12mp_mean=round(statistics.fmean(big_iou), 4), time_target_s=TIME_TARGET_S,
                   threads=THREADS, load_average=round(os.getloadavg()[0], 2))
        print(f"12 MP: {out['auto_s_12mp']} s median per photo ({THREADS} threads), "
              f"CPU {out['auto_cpu_s_12mp']} s")
    if args.half == "heldout":
        out["iou_heldout_mean"] = out["auto_iou_heldout_mean"]
    if args.learned:
        out.update(_optional("learned_s", "salient", "learned_s"))
    if args.batch:
        out.update(_optional("batch_per_min", "catalogue_batch", "run", args.batch))
    if not gc_rows:                                # no GrabCut shots: no GrabCut figures
        for key in ("baseline_grabcut_iou_mean", "auto_iou_on_grabcut_shots", "error_ratio_grabcut_over_auto"):
            out.pop(key, None)
    print(json.dumps(out))
    return 0


def _optional(key: str, module: str, func: str, *args) -> dict:
    """A figure from another benchmark module (bench/<module>.py or core/<module>.py), when it
    exists: {key: value}; {} and a line saying so when it does not."""
    import importlib
    for name in (module, "core." + module):
        try:
            mod = importlib.import_module(name)
        except ImportError:
            continue
        if hasattr(mod, func):
            value = getattr(mod, func)(*args)
            if isinstance(value, dict):
                value = value.get(key, next((v for k, v in value.items() if key in k), None))
            return {key: value}
    print(f"{key}: {module}.{func} not found, left out")
    return {}


if __name__ == "__main__":
    sys.exit(main())
