"""Framing for catalogue shots: the subject placed on a canvas of a fixed size with a fixed margin,
and a shadow under it so it does not float.

    frame = Frame.parse("2000x2000", margin=5, align="bottom")
    layer = compose(original, mask, "transparent", matte=...)   # the subject, RGBA at full size
    where = place(layer[..., 3], frame)                          # scale and window, from the subject
    subject = reframe(layer, where)                              # RGBA at 2000x2000
    out = over(solid((2000, 2000), (255, 255, 255)), subject, shadow=Shadow("contact"))

Geometry. The subject's box is measured on the alpha (>= 128: the subject, never its shadow or a
faint matte fringe). The scale makes the box fill the frame less the margin on its tighter side
(`margin` 5 = 5 % of the frame's width each side left and right, of its height top and bottom);
`align` "center" centres the box, "bottom" centres it across and puts its bottom edge one margin
above the frame's bottom (products stand on something). The window is the part of the photo (in
its own pixels, possibly past its edges: that is padding) that becomes the frame.

Pixels. Where the scale is 1 the window is moved to whole pixels and only cropped or padded: the
subject's pixels are bit-identical to the photo's. Otherwise the window is resampled exactly once
(Lanczos, on premultiplied alpha, so the old background's colour under transparent pixels never
bleeds into the edge). Shadows are drawn on the background before the subject goes over it, so
they never change a subject pixel that is opaque.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Optional

import numpy as np

from core import arrays
from core.errors import ImageError, InvalidOptionError

MAX_FRAME_SIDE = 12000            # px: a frame side above this is refused (one line)
MAX_MARGIN = 45.0                 # percent of the frame each side: 45 leaves a tenth for the subject
ALIGNS = ("center", "bottom")
SHADOWS = ("none", "contact", "drop", "reflection")
SUBJECT_ALPHA = 128               # alpha from which a pixel counts as the subject's, for its box


@dataclass(frozen=True)
class Frame:
    """The canvas a subject is placed on: `width`x`height` px, `margin` percent of the frame left
    free on each side of the subject's box (on the tighter side), `align` center or bottom."""
    width: int
    height: int
    margin: float = 5.0
    align: str = "center"

    def __post_init__(self) -> None:
        for side in (self.width, self.height):
            if isinstance(side, bool) or not isinstance(side, (int, np.integer)) \
                    or not 1 <= side <= MAX_FRAME_SIDE:
                raise InvalidOptionError(f"a frame side must be a whole number of pixels from 1 to "
                                         f"{MAX_FRAME_SIDE}, got {side!r}")
        if not isinstance(self.margin, (int, float)) or isinstance(self.margin, bool) \
                or not math.isfinite(self.margin) or not 0 <= self.margin <= MAX_MARGIN:
            raise InvalidOptionError(f"the margin must be a percentage from 0 to {MAX_MARGIN:g}, "
                                     f"got {self.margin!r}")
        if self.align not in ALIGNS:
            raise InvalidOptionError(f"align must be one of {', '.join(ALIGNS)}, got {self.align!r}")

    @classmethod
    def parse(cls, size: str, margin: float = 5.0, align: str = "center") -> "Frame":
        """`size` as WIDTHxHEIGHT (e.g. "2000x2000")."""
        m = re.fullmatch(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*", str(size))
        if not m:
            raise InvalidOptionError(f"a frame is WIDTHxHEIGHT in pixels (e.g. 2000x2000), got "
                                     f"{str(size)[:40]!r}")
        return cls(int(m.group(1)), int(m.group(2)), float(margin), align)


@dataclass(frozen=True)
class Placement:
    """Where the frame lies over the photo: the window's top-left (`x0`, `y0`, in the photo's
    pixels, negative or past the photo where the frame is padded) and the `scale` (frame px per
    photo px); `size` is the frame's (width, height)."""
    x0: float
    y0: float
    scale: float
    size: tuple[int, int]
    box: tuple[int, int, int, int]          # the subject's box in the photo: x1, y1, x2, y2 (end excl.)

    @property
    def exact(self) -> bool:
        """Crop and pad only, no resampling: the subject's pixels are the photo's own."""
        return self.scale == 1.0 and float(self.x0).is_integer() and float(self.y0).is_integer()

    @property
    def window(self) -> tuple[float, float, float, float]:
        w, h = self.size
        return (self.x0, self.y0, self.x0 + w / self.scale, self.y0 + h / self.scale)

    def to_frame(self, x: float, y: float) -> tuple[float, float]:
        """A point of the photo in frame pixels."""
        return ((x - self.x0) * self.scale, (y - self.y0) * self.scale)


def subject_box(alpha: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2), end exclusive, of the pixels with alpha >= 128; None when there are none."""
    hard = np.asarray(alpha) >= SUBJECT_ALPHA
    rows, cols = np.flatnonzero(hard.any(axis=1)), np.flatnonzero(hard.any(axis=0))
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def place(alpha: np.ndarray, frame: Frame) -> Placement:
    """Scale and window that put the subject (alpha >= 128) in `frame` (see the module docstring).
    ImageError (one line) when the mask holds no subject."""
    alpha = arrays.mask(alpha, "subject alpha")
    box = subject_box(alpha)
    if box is None:
        raise ImageError("nothing to frame: the subject mask is empty")
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    w, h = frame.width, frame.height
    keep = 1.0 - 2.0 * frame.margin / 100.0
    scale = min(w * keep / bw, h * keep / bh)
    if abs(scale - 1.0) < 1e-9:
        scale = 1.0
    x0 = (x1 + x2) / 2.0 - w / (2.0 * scale)
    if frame.align == "bottom":
        y0 = y2 + h * frame.margin / 100.0 / scale - h / scale
    else:
        y0 = (y1 + y2) / 2.0 - h / (2.0 * scale)
    if scale == 1.0:                  # whole pixels: crop and pad, the subject stays bit-exact
        x0, y0 = float(math.floor(x0 + 0.5)), float(math.floor(y0 + 0.5))
    return Placement(x0, y0, scale, (w, h), box)


def reframe(image: np.ndarray, where: Placement, *, pad: str = "transparent") -> np.ndarray:
    """The frame's pixels from `image` (HxWx4 RGBA straight alpha, or HxWx3 RGB): cropped/padded
    where `where.exact`, else resampled once (Lanczos; RGBA premultiplied). Padding: transparent
    for RGBA; for RGB `pad` "edge" repeats the photo's border (a blurred background), else black."""
    from PIL import Image

    image = arrays.image(image, "image", channels=(3, 4))
    h, w = image.shape[:2]
    fw, fh = where.size
    wx0, wy0, wx1, wy1 = where.window
    # Pad so the window lies inside (and, resampling, 3 px more for Lanczos's reach).
    reach = 0 if where.exact else 3
    left = max(0, -math.floor(wx0) + reach)
    top = max(0, -math.floor(wy0) + reach)
    right = max(0, math.ceil(wx1) - w + reach)
    bottom = max(0, math.ceil(wy1) - h + reach)
    # Only what the window needs is padded: crop first (a tiny window of a 12 MP photo stays small).
    cx0, cy0 = max(0, math.floor(wx0) - reach), max(0, math.floor(wy0) - reach)
    cx1, cy1 = min(w, math.ceil(wx1) + reach), min(h, math.ceil(wy1) + reach)
    part = image[cy0:max(cy0, cy1), cx0:max(cx0, cx1)]
    mode = "edge" if pad == "edge" and image.shape[2] == 3 and part.size else "constant"
    if left or top or right or bottom:
        part = np.pad(part, ((top, bottom), (left, right), (0, 0)), mode=mode)
    ox, oy = wx0 - cx0 + left, wy0 - cy0 + top          # the window's origin in `part`
    if where.exact:
        x, y = int(ox), int(oy)
        return np.ascontiguousarray(part[y:y + fh, x:x + fw])
    pil = Image.fromarray(np.ascontiguousarray(part), "RGBA" if part.shape[2] == 4 else "RGB")
    out = pil.resize((fw, fh), Image.Resampling.LANCZOS,
                     box=(ox, oy, ox + fw / where.scale, oy + fh / where.scale))
    return np.asarray(out)


# ---------------------------------------------------------------------------------------- shadows
@dataclass(frozen=True)
class Shadow:
    """A shadow made from the subject's own silhouette: `kind` contact (the base flattened and
    blurred under the subject), drop (the silhouette offset down-right and blurred) or reflection
    (the subject mirrored under its base, fading); `strength` 0..1 (how dark / how visible),
    `softness` 0..1 (how blurred, relative to the subject's size)."""
    kind: str = "contact"
    strength: float = 0.5
    softness: float = 0.5

    def __post_init__(self) -> None:
        if self.kind not in SHADOWS:
            raise InvalidOptionError(f"shadow must be one of {', '.join(SHADOWS)}, got {self.kind!r}")
        for name in ("strength", "softness"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
                    or not 0.0 <= v <= 1.0:
                raise InvalidOptionError(f"shadow {name} must be from 0 to 1, got {v!r}")


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur of a float32 layer; a wide one is done at a reduced size (a shadow has no
    detail finer than its blur: the same picture, a fraction of the time at 2000x2000)."""
    import cv2
    if sigma < 0.3:
        return a
    h, w = a.shape
    f = sigma / 4.0
    if f <= 1.5:
        return cv2.GaussianBlur(a, (0, 0), sigmaX=sigma, sigmaY=sigma, borderType=cv2.BORDER_CONSTANT)
    small = cv2.resize(a, (max(1, round(w / f)), max(1, round(h / f))), interpolation=cv2.INTER_AREA)
    small = cv2.GaussianBlur(small, (0, 0), sigmaX=4.0, sigmaY=4.0, borderType=cv2.BORDER_CONSTANT)
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def shadow_alpha(alpha: np.ndarray, shadow: Shadow) -> np.ndarray:
    """HxW float32 in [0, 1]: how much the background is darkened at each pixel (contact, drop),
    from the subject's alpha on the frame. Zeros for none, reflection, or an empty subject."""
    import cv2

    out = np.zeros(alpha.shape, np.float32)
    box = subject_box(alpha)
    if shadow.kind in ("none", "reflection") or box is None or shadow.strength == 0:
        return out
    x1, y1, x2, y2 = box
    bw, bh = x2 - x1, y2 - y1
    hard = (alpha >= SUBJECT_ALPHA).astype(np.float32)
    if shadow.kind == "drop":
        dx, dy = round(0.03 * bh), round(0.04 * bh)
        shifted = np.zeros_like(hard)
        h, w = hard.shape
        shifted[dy:, dx:] = hard[:h - dy, :w - dx] if dy or dx else hard
        out = _blur(shifted, (0.01 + 0.05 * shadow.softness) * bh) * (0.7 * shadow.strength)
    else:                                    # contact: an ellipse under the subject's footprint
        base = hard[max(y1, y2 - max(2, bh // 12)):y2]
        cols = np.flatnonzero(base.any(axis=0))
        fx1, fx2 = (int(cols[0]), int(cols[-1]) + 1) if cols.size else (x1, x2)
        rx = max(1.0, (fx2 - fx1) / 2.0 * 1.05)
        ry = max(1.0, 0.07 * (fx2 - fx1) * (0.5 + shadow.softness))
        cv2.ellipse(out, (round((fx1 + fx2) / 2.0), y2 - 1), (round(rx), round(ry)), 0, 0, 360,
                    1.0, thickness=-1, lineType=cv2.LINE_AA)
        out = _blur(out, max(1.0, ry * (0.3 + 0.7 * shadow.softness)))
        peak = float(out.max())
        if peak > 0:
            out *= (0.85 * shadow.strength) / peak
    return np.clip(out, 0.0, 1.0)


def _reflection(subject: np.ndarray, shadow: Shadow) -> Optional[np.ndarray]:
    """RGBA (float32, premultiplied, 0..1) of the subject mirrored under its base and fading."""
    alpha = subject[..., 3]
    box = subject_box(alpha)
    if box is None or shadow.strength == 0:
        return None
    _x1, y1, _x2, y2 = box
    h = subject.shape[0]
    length = max(1, round((y2 - y1) * (0.15 + 0.35 * shadow.softness)))
    rows = min(length, h - y2, y2 - y1)
    layer = np.zeros(subject.shape, np.float32)
    if rows <= 0:
        return None
    src = subject[y2 - rows:y2][::-1].astype(np.float32) / 255.0        # the base, mirrored
    fade = np.linspace(0.45 * shadow.strength, 0.0, rows, dtype=np.float32)[:, None]
    a = src[..., 3] * fade
    layer[y2:y2 + rows, :, :3] = src[..., :3] * a[..., None]
    layer[y2:y2 + rows, :, 3] = a
    return layer


def over(background: Optional[np.ndarray], subject: np.ndarray,
         shadow: Optional[Shadow] = None) -> np.ndarray:
    """`subject` (HxWx4 RGBA, straight alpha) over `background` (HxWx3 RGB), with `shadow` drawn
    on the background first. Opaque subject pixels are copied bit for bit. With no background
    (transparent export) the result is RGBA and the shadow is kept as semi-transparent black (the
    reflection as semi-transparent colour) under the subject."""
    import cv2

    subject = arrays.image(subject, "subject", channels=(4,))
    h, w = subject.shape[:2]
    if background is not None:
        background = arrays.rgb(background, "background")
        if background.shape[:2] != (h, w):
            raise InvalidOptionError(f"the background must be {w}x{h} like the subject, got "
                                     f"{background.shape[1]}x{background.shape[0]}")
    shadow = shadow or Shadow("none")
    alpha = subject[..., 3]
    dark = shadow_alpha(alpha, shadow)
    refl = _reflection(subject, shadow) if shadow.kind == "reflection" else None
    if background is None:
        return _over_nothing(subject, dark, refl)

    out = background.copy()
    rows, cols = np.flatnonzero(dark.any(axis=1)), np.flatnonzero(dark.any(axis=0))
    if rows.size:                       # only the shadow's box is touched: the rest stays as it was
        ys, xs = slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)
        block = out[ys, xs].astype(np.float32) * (1.0 - dark[ys, xs])[..., None]
        out[ys, xs] = np.clip(block + 0.5, 0, 255).astype(np.uint8)
    if refl is not None:
        rows = np.flatnonzero(refl[..., 3].any(axis=1))
        if rows.size:
            ys = slice(rows[0], rows[-1] + 1)
            block = refl[ys, :, :3] * 255.0 + out[ys].astype(np.float32) * (1 - refl[ys, :, 3:])
            out[ys] = np.clip(block + 0.5, 0, 255).astype(np.uint8)
    flat_a = alpha.ravel()
    idx = np.flatnonzero((flat_a > 0) & (flat_a < 255))            # the edge: blended
    if idx.size:
        a = flat_a[idx].astype(np.float32)[:, None] / 255.0
        flat_out = out.reshape(-1, 3)
        fg = subject[..., :3].reshape(-1, 3)[idx].astype(np.float32)
        bg = flat_out[idx].astype(np.float32)
        flat_out[idx] = np.clip(bg + (fg - bg) * a + 0.5, 0, 255).astype(np.uint8)
    return cv2.copyTo(np.ascontiguousarray(subject[..., :3]), (alpha == 255).view(np.uint8), out)


def _over_nothing(subject: np.ndarray, dark: np.ndarray, refl: Optional[np.ndarray]) -> np.ndarray:
    """`over` with no background: RGBA, the shadow as semi-transparent black (the reflection as
    semi-transparent colour) under the subject; opaque subject pixels copied bit for bit."""
    import cv2

    base_rgb = np.zeros(subject.shape[:2] + (3,), np.float32)
    base_a = dark.copy()
    if refl is not None:
        base_rgb = refl[..., :3] + base_rgb * (1 - refl[..., 3:])
        base_a = refl[..., 3] + base_a * (1 - refl[..., 3])
    a = subject[..., 3].astype(np.float32)[..., None] / 255.0
    rgb = subject[..., :3].astype(np.float32) / 255.0 * a + base_rgb * (1 - a)
    out_a = a[..., 0] + base_a * (1 - a[..., 0])
    straight = np.where(out_a[..., None] > 0, rgb / np.maximum(out_a[..., None], 1e-6), 0)
    out = np.clip(np.dstack([straight * 255.0, out_a * 255.0]) + 0.5, 0, 255).astype(np.uint8)
    return cv2.copyTo(subject, (subject[..., 3] == 255).view(np.uint8), out)
