"""Display copies of a photo: `make_preview` downscales it, and `Preview` maps a click on the shown
copy back to the exact pixel of the original (points are (x, y) pixels, sizes (width, height))."""
from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

import numpy as np

from core.errors import InvalidOptionError
from core import arrays
from core.images.load import _readonly


@dataclass(frozen=True)
class Preview:
    """A downscaled copy of a photo for display, with exact coordinate mapping back to the original.

    rgb: the preview array (h'xw'x3 uint8, or whatever make_preview was given, downscaled).
    scale: preview pixels per original pixel along the long side (<= 1; 1.0 when not downscaled).
    original_size: (W, H) of the original.

    Pixel i covers [i, i+1) in its image, so its centre is i + 0.5; mapping goes centre to centre with
    the per-axis factors scale_x = w'/W and scale_y = h'/H (they differ slightly from `scale` because
    the preview size is rounded to whole pixels). Hence to_original(*to_preview(x, y)) == (x, y) for
    every integer pixel (x, y) of the original.
    """

    rgb: np.ndarray
    scale: float
    original_size: tuple[int, int]

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the preview."""
        return int(self.rgb.shape[1]), int(self.rgb.shape[0])

    @property
    def scale_x(self) -> float:
        return self.rgb.shape[1] / self.original_size[0]

    @property
    def scale_y(self) -> float:
        return self.rgb.shape[0] / self.original_size[1]

    def to_preview(self, x: float, y: float) -> tuple[float, float]:
        """Original pixel (x, y) -> the matching (float) point in preview pixels."""
        x, y = _finite(x, "x"), _finite(y, "y")
        return (x + 0.5) * self.scale_x - 0.5, (y + 0.5) * self.scale_y - 0.5

    def to_original(self, x: float, y: float) -> tuple[int, int]:
        """Preview point (x, y) -> the original pixel (int x, int y) under it, clamped inside the image."""
        x, y = _finite(x, "x"), _finite(y, "y")
        w, h = self.original_size
        # (x + 0.5) / scale is the point in original pixel-edge units; the pixel containing it wins.
        ox = math.floor((x + 0.5) / self.scale_x)
        oy = math.floor((y + 0.5) / self.scale_y)
        return min(max(ox, 0), w - 1), min(max(oy, 0), h - 1)

    def from_display(self, x: float, y: float, display_width: float,
                     display_height: float | None = None) -> tuple[int, int]:
        """A click on the preview shown `display_width` (x `display_height`) pixels wide -> original pixel.

        The photo component (ui/clicker) reports x, y in displayed pixels together with the displayed
        width/height; pass them here. When display_height is None the aspect ratio is assumed kept.
        """
        dw = _finite(display_width, "display_width")
        if dw <= 0:
            raise InvalidOptionError(f"display_width must be positive, got {display_width!r}")
        rx = dw / self.rgb.shape[1]
        if display_height is None:
            ry = rx
        else:
            dh = _finite(display_height, "display_height")
            if dh <= 0:
                raise InvalidOptionError(f"display_height must be positive, got {display_height!r}")
            ry = dh / self.rgb.shape[0]
        x, y = _finite(x, "x"), _finite(y, "y")
        return self.to_original((x + 0.5) / rx - 0.5, (y + 0.5) / ry - 0.5)


def _finite(v: object, what: str) -> float:
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise InvalidOptionError(f"{what} must be a finite number, got {v!r}")
    return float(v)


def make_preview(rgb: np.ndarray, max_side: int = 1024) -> Preview:
    """Downscale `rgb` (HxWx3 uint8; HxW and HxWx4 also work) so its long side is at most `max_side`.

    Never upscales: a small image is returned as is (scale 1.0, a read-only view of the same pixels).
    The preview's long side is exactly `max_side` when it is downscaled; area-averaged resampling.
    """
    arrays.image(rgb, "rgb", channels=(None, 3, 4))
    if isinstance(max_side, bool) or not isinstance(max_side, numbers.Integral) or max_side < 1:
        raise InvalidOptionError(f"max_side must be a positive integer, got {max_side!r}")
    h, w = rgb.shape[:2]
    long_side = max(w, h)
    if long_side <= max_side:
        return Preview(rgb=_readonly(rgb), scale=1.0, original_size=(w, h))
    s = max_side / long_side
    pw = max_side if w >= h else max(1, math.floor(w * s + 0.5))
    ph = max_side if h > w else max(1, math.floor(h * s + 0.5))
    import cv2
    # Area averaging: each preview pixel is the mean of the original area it covers (the same geometry
    # as the coordinate mapping), anti-aliased, and ~4x faster than Pillow's Lanczos on a 12 MP photo.
    small = cv2.resize(np.ascontiguousarray(rgb), (pw, ph), interpolation=cv2.INTER_AREA)
    return Preview(rgb=_readonly(small), scale=max(pw, ph) / long_side, original_size=(w, h))
