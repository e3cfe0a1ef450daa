"""Processing sizes and resizing: a photo goes to the model's native size and its result back."""
from __future__ import annotations

import numpy as np


def processing_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(w, h) with the aspect ratio of `size`, the long side ~= long_side, both multiples of 8 (>= 8)."""
    w, h = size
    s = long_side / max(w, h)
    return max(8, int(round(w * s / 8)) * 8), max(8, int(round(h * s / 8)) * 8)


def resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image/mask to (w, h). Shrinking: Gaussian-pyramid halvings while still at least 2x
    too big (fast and antialiased), then area averaging; enlarging: bicubic."""
    import cv2
    w, h = size
    if (arr.shape[1], arr.shape[0]) == (w, h):
        return arr
    if w * h < arr.shape[0] * arr.shape[1]:
        while arr.shape[1] >= 2 * w and arr.shape[0] >= 2 * h:
            arr = cv2.pyrDown(arr)
        return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(arr, size, interpolation=cv2.INTER_CUBIC)
