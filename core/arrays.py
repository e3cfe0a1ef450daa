"""The two array shapes every part of Backdrop passes around, checked in one place.

  * an image is an RGB uint8 numpy array of shape HxWx3 (H, W > 0);
  * a mask is an HxW numpy array, uint8 (0..255, 255 = subject or "repaint") or bool.

`rgb(a)` and `mask(a)` raise `InvalidOptionError` with one line naming the argument and what it
got; they never copy or rewrite a valid array (a bool mask becomes 0/255 uint8 unless
`keep_bool=True`).
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from core.errors import InvalidOptionError

__all__ = ["describe", "rgb", "image", "mask"]


def describe(a: Any) -> str:
    """'float32 array of shape (20, 30)' for an array, else the type's name (for error messages)."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} array of shape {a.shape}"
    return type(a).__name__


def rgb(a: Any, name: str = "image") -> np.ndarray:
    """`a` itself if it is a non-empty HxWx3 uint8 array, else InvalidOptionError."""
    if not isinstance(a, np.ndarray) or a.dtype != np.uint8 or a.ndim != 3 or a.shape[2] != 3:
        raise InvalidOptionError(f"{name} must be an RGB uint8 array of shape HxWx3, got {describe(a)}")
    h, w = a.shape[:2]
    if h == 0 or w == 0:
        raise InvalidOptionError(f"{name} is empty ({w}x{h})")
    return a


def image(a: Any, name: str = "image", channels: tuple[Optional[int], ...] = (3,)) -> np.ndarray:
    """`a` itself if it is a non-empty uint8 array of shape HxW (None in `channels`) or HxWxC with
    C in `channels` (e.g. (None, 3, 4) for anything PNG can hold), else InvalidOptionError."""
    ok = isinstance(a, np.ndarray) and a.dtype == np.uint8 and a.size > 0 and (
        (a.ndim == 2 and None in channels) or (a.ndim == 3 and a.shape[2] in channels))
    if not ok:
        shapes = " or ".join("HxW" if c is None else f"HxWx{c}" for c in channels)
        raise InvalidOptionError(f"{name} must be a non-empty uint8 array of shape {shapes}, got {describe(a)}")
    return a


def mask(a: Any, name: str = "mask", *, shape: Optional[tuple[int, ...]] = None,
         keep_bool: bool = False) -> np.ndarray:
    """A non-empty HxW mask as uint8: `a` itself when uint8, a bool mask as 0/255 (or unchanged
    with `keep_bool`). `shape` = the image's (h, w) (or the image's own shape; only the first two
    values count) that the mask must match. InvalidOptionError otherwise."""
    if not isinstance(a, np.ndarray):
        raise InvalidOptionError(f"{name} must be a numpy array (HxW uint8), got {type(a).__name__}")
    if a.ndim != 2:
        raise InvalidOptionError(f"{name} must be 2-D (HxW), got shape {a.shape}")
    if a.size == 0:
        raise InvalidOptionError(f"{name} is empty (shape {a.shape})")
    if shape is not None and a.shape != tuple(shape[:2]):
        h, w = shape[:2]
        raise InvalidOptionError(f"{name} is {a.shape[1]}x{a.shape[0]} but must match the image {w}x{h}")
    if a.dtype == np.bool_:
        return a if keep_bool else a.astype(np.uint8) * np.uint8(255)
    if a.dtype != np.uint8:
        raise InvalidOptionError(f"{name} must be uint8 (0..255) or bool, got {a.dtype}")
    return a
