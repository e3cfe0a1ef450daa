"""Mask operations: invert, grow/shrink, feather, fill holes, drop specks, resize, refine, overlay.

Conventions (see docs/CONTRACTS.md): a mask is an HxW uint8 numpy array, 255 = subject, 0 = background.
Functions also accept HxW bool masks (True = subject). "Hard" operations (grow, fill_holes,
remove_small, refine) first binarise the input (values >= 128 are subject) and return only 0/255;
`feather` returns a soft mask (any value 0..255). Radii and distances are Euclidean, in pixels,
between pixel centres. Nothing outside the image counts as subject or as background: a subject cut
by the frame is not eaten away from the frame edge by shrinking or feathering.

Bad arguments (not 2-D, wrong dtype, negative radius, ...) raise `core.errors.InvalidOptionError`.
cv2 is imported lazily inside the functions that need it.
"""
from __future__ import annotations

import numbers
from typing import Any, Iterable

import numpy as np

from core import arrays
from core.errors import InvalidOptionError
from core.spec import MaskOptions

THRESHOLD = 128
"""Mask values >= THRESHOLD count as subject wherever a hard (0/255) mask is needed."""


# How a mask is cleaned up is part of the run spec (core/spec.py): grow, feather, fill_holes,
# min_area, invert.


def _int(value: Any, name: str, minimum: int | None = None) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise InvalidOptionError(f"{name} must be a whole number of pixels, got {value!r}")
    if minimum is not None and value < minimum:
        raise InvalidOptionError(f"{name} must be {minimum} or more, got {value}")
    return int(value)


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise InvalidOptionError(f"{name} must be true or false, got {value!r}")
    return bool(value)


def _subject(mask: Any) -> np.ndarray:
    """HxW bool: True where the mask is subject (>= THRESHOLD)."""
    m = arrays.mask(mask)
    return m >= THRESHOLD


def _to_u8(subject: np.ndarray) -> np.ndarray:
    return subject.astype(np.uint8) * np.uint8(255)


def _distance(inside: np.ndarray) -> np.ndarray:
    """For each True pixel, the exact Euclidean distance (float32) to the nearest False pixel; 0 on False.

    Pixels outside the image do not count as False (OpenCV's convention), so with no False pixel at all
    the distances are huge (~1.8e19).
    """
    import cv2
    return cv2.distanceTransform(inside.astype(np.uint8), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)


def _within(dist: np.ndarray, radius: int) -> np.ndarray:
    """dist <= radius for distances between pixel centres (sqrt of integers), robust to float32 error.

    The next possible distance above r is sqrt(r*r + 1) ~ r + 1/(2r); a quarter of that gap is slack.
    """
    return dist <= radius + 0.25 / (2 * radius + 1)


# ----------------------------------------------------------------------------------------- operations

def invert(mask: np.ndarray) -> np.ndarray:
    """255 - mask (works for soft masks too). HxW uint8 in, HxW uint8 out (a new array)."""
    return np.uint8(255) - arrays.mask(mask)


def grow(mask: np.ndarray, px: int) -> np.ndarray:
    """Grow the subject by `px` pixels (negative `px` shrinks it); returns HxW uint8 0/255.

    Equivalent to a dilation (erosion) with a disk {dx^2 + dy^2 <= px^2}: a pixel joins when some
    subject pixel lies within `px` of it; a subject pixel survives shrinking when no background pixel
    lies within `|px|` of it. A 10x10 square grown by 3 spans 16x16 (rounded corners). Runs in time
    independent of `px` (distance transform).
    """
    px = _int(px, "grow")
    subject = _subject(mask)
    if px > 0:
        subject = subject | _within(_distance(~subject), px)
    elif px < 0:
        subject = subject & ~_within(_distance(subject), -px)
    return _to_u8(subject)


def feather(mask: np.ndarray, px: int) -> np.ndarray:
    """Soft edge of radius `px`: returns HxW uint8 alpha 0..255 (255 = subject).

    The mask is binarised, then each pixel within `px` of the edge gets an S-shaped ramp value
    (smoothstep of the signed distance to the edge over [-px, px], close to a Gaussian blur's
    profile, symmetric: feather(invert(m)) ~ 255 - feather(m)). Guarantees, used by compositing:
    pixels of grow(mask, -px) are exactly 255 and pixels outside grow(mask, px) are exactly 0.
    px == 0 returns the hard 0/255 mask.
    """
    px = _int(px, "feather", minimum=0)
    subject = _subject(mask)
    if px == 0:
        return _to_u8(subject)
    d_in = _distance(subject)       # subject pixels: distance to the nearest background pixel
    d_out = _distance(~subject)     # background pixels: distance to the nearest subject pixel
    # signed distance of each pixel centre to the edge, which lies half a pixel outside the subject
    u = np.where(subject, d_in - 0.5, 0.5 - d_out).astype(np.float32)
    t = np.clip((u + px) / np.float32(2 * px), 0.0, 1.0)
    alpha = np.rint(255.0 * t * t * (3.0 - 2.0 * t)).astype(np.uint8)
    alpha[subject & ~_within(d_in, px)] = 255
    alpha[~subject & ~_within(d_out, px)] = 0
    return alpha


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """Fill background regions enclosed by the subject; returns HxW uint8 0/255.

    A background region (4-connected) that touches the image border is not a hole and stays.
    """
    import cv2
    subject = _subject(mask)
    count, labels = cv2.connectedComponents((~subject).astype(np.uint8), connectivity=4)
    if count <= 1:
        return _to_u8(subject)
    border = np.unique(np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]]))
    is_hole = np.ones(count, dtype=bool)
    is_hole[0] = False           # label 0 = the subject itself
    is_hole[border] = False
    return _to_u8(subject | is_hole[labels])


def remove_small(mask: np.ndarray, min_area: int) -> np.ndarray:
    """Drop subject specks (8-connected components) with fewer than `min_area` pixels; HxW uint8 0/255."""
    import cv2
    min_area = _int(min_area, "min_area", minimum=0)
    subject = _subject(mask)
    if min_area <= 1:
        return _to_u8(subject)
    count, labels, stats, _ = cv2.connectedComponentsWithStats(subject.astype(np.uint8), connectivity=8)
    keep = stats[:, cv2.CC_STAT_AREA] >= min_area
    keep[0] = False              # label 0 = background
    return _to_u8(keep[labels])


def resize_mask(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize to `size` = (width, height); returns HxW uint8 with H, W = size[1], size[0].

    A hard mask (only 0 and 255, or bool) uses pixel-centre-aligned nearest neighbour and stays hard;
    a soft mask uses area averaging when shrinking and bilinear interpolation otherwise.
    """
    import cv2
    m = arrays.mask(mask)
    if not isinstance(size, (tuple, list)) or len(size) != 2:
        raise InvalidOptionError(f"size must be (width, height), got {size!r}")
    w, h = (_int(v, "size", minimum=1) for v in size)
    if (h, w) == m.shape:
        return m.copy()
    hard = mask.dtype == np.bool_ or bool(np.all((m == 0) | (m == 255)))
    if hard:
        interp = cv2.INTER_NEAREST_EXACT
    elif w <= m.shape[1] and h <= m.shape[0]:
        interp = cv2.INTER_AREA
    else:
        interp = cv2.INTER_LINEAR
    return cv2.resize(np.ascontiguousarray(m), (w, h), interpolation=interp)


def refine(mask: np.ndarray, options: MaskOptions | None = None) -> np.ndarray:
    """Apply `options` in order fill_holes -> remove_small -> grow -> invert; returns HxW uint8 0/255.

    Feather is not applied here (compositing does it with `options.feather`).
    """
    if options is None:
        options = MaskOptions()
    if not isinstance(options, MaskOptions):
        raise InvalidOptionError(f"options must be MaskOptions, got {type(options).__name__}")
    m = _to_u8(_subject(mask))
    if options.fill_holes:
        m = fill_holes(m)
    if options.min_area:
        m = remove_small(m, options.min_area)
    if options.grow:
        m = grow(m, options.grow)
    if options.invert:
        m = invert(m)
    return m


# ----------------------------------------------------------------------------------------- overlay

POSITIVE_COLOR = (40, 200, 40)
NEGATIVE_COLOR = (230, 40, 40)


def overlay(rgb: np.ndarray, mask: np.ndarray | None, color: tuple[int, int, int] = (30, 144, 255),
            alpha: float = 0.5, clicks: Iterable[Any] = ()) -> np.ndarray:
    """Render a mask over a photo for preview; returns a new HxWx3 uint8 RGB array.

    rgb:    HxWx3 uint8 RGB (usually the preview).
    mask:   HxW uint8 (soft ok) or bool of the same H, W, or None for clicks only. Subject pixels are
            tinted: out = rgb * (1 - a) + color * a with a = alpha * mask / 255; the edge of the hard
            mask (>= 128) is outlined in `color`.
    clicks: points in rgb's own pixel coordinates: objects with .x, .y and optional .label
            (e.g. core.segment.Click), or (x, y) / (x, y, label) tuples. label 1 = positive (green dot),
            0 = negative (red dot); a missing label means positive.
    """
    import cv2
    arrays.rgb(rgb, "rgb")
    if isinstance(alpha, bool) or not isinstance(alpha, numbers.Real) or not 0.0 <= float(alpha) <= 1.0:
        raise InvalidOptionError(f"alpha must be a number from 0 to 1, got {alpha!r}")
    tint = _color(color, "color")
    h, w = rgb.shape[:2]
    out = rgb.copy()
    if mask is not None:
        m = arrays.mask(mask, shape=(h, w))
        a = m.astype(np.float32) * np.float32(float(alpha) / 255.0)
        solid = np.empty_like(rgb)
        solid[:] = tint
        out = cv2.blendLinear(solid, rgb, a, 1.0 - a)  # 3x faster than the same blend in numpy
        # Outline = the hard mask minus its erosion: constant cost however speckled the mask is
        # (tracing contours took tens of ms on a noisy 1024 px mask).
        hard = (m >= THRESHOLD).astype(np.uint8)
        t = max(1, round(max(h, w) / 500))
        inner = cv2.erode(hard, cv2.getStructuringElement(cv2.MORPH_RECT, (2 * t + 1, 2 * t + 1)))
        cv2.copyTo(solid, cv2.subtract(hard, inner), out)  # out = tint where the outline is
    radius = max(3, round(max(h, w) / 120))
    ring = max(1, radius // 3)
    for click in clicks:
        x, y, positive = _click(click)
        center = (int(round(x)), int(round(y)))
        cv2.circle(out, center, radius + ring, (255, 255, 255), thickness=-1, lineType=cv2.LINE_AA)
        cv2.circle(out, center, radius, POSITIVE_COLOR if positive else NEGATIVE_COLOR, thickness=-1,
                   lineType=cv2.LINE_AA)
    return out


def _color(color: Any, name: str) -> tuple[int, int, int]:
    try:
        values = tuple(int(c) for c in color)
        ok = len(values) == 3 and all(0 <= c <= 255 for c in values) and not isinstance(color, (str, bytes))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidOptionError(f"{name} must be three integers 0..255 (R, G, B), got {color!r}")
    return values


def _click(click: Any) -> tuple[float, float, bool]:
    if hasattr(click, "x") and hasattr(click, "y"):
        x, y, label = click.x, click.y, getattr(click, "label", 1)
    elif isinstance(click, (tuple, list)) and len(click) in (2, 3):
        x, y, label = (*click, 1) if len(click) == 2 else click
    else:
        raise InvalidOptionError(f"a click must be (x, y), (x, y, label) or have .x/.y, got {click!r}")
    for v in (x, y):
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not np.isfinite(float(v)):
            raise InvalidOptionError(f"click coordinates must be finite numbers, got {click!r}")
    return float(x), float(y), bool(label) and label > 0
