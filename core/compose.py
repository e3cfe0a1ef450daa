"""Paste-back and the non-generative backgrounds, at the image's full resolution.

Conventions: images RGB uint8 HxWx3; the subject mask HxW uint8 with 255 = subject (values >= 128
count as subject; bool accepted). Sizes are (width, height).

    spec = BackgroundSpec.parse("color:#1e90ff")     # sd | color:#RRGGBB | blur:RADIUS | image:PATH | transparent
    out = compose(original, subject_mask, spec, feather=4)               # HxWx3 uint8
    out = compose(original, subject_mask, BackgroundSpec.parse("sd"), generated=variant.image)
    rgba = compose(original, subject_mask, BackgroundSpec.parse("transparent"))   # HxWx4 uint8

The promise: every subject pixel farther than `feather` px from the background (the mask eroded by
the feather radius; all subject pixels when feather = 0) is bit-identical to `original`. In the band
between that core and the mask edge the subject is blended over the background with a smooth ramp
(the feathered mask); outside the mask the result is the background. Only the band is computed in
floating point, so the cost at 12 MP is a few copies.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from core.errors import ImageError, InvalidOptionError

KINDS = ("sd", "color", "blur", "image", "transparent")
DEFAULT_BLUR = 20.0
MAX_BLUR = 500.0
MAX_FEATHER = 256
_USAGE = "use sd, color:#RRGGBB, blur:RADIUS, image:PATH or transparent"
_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', '#RGB' (the '#' optional) or a CSS colour name -> (r, g, b); InvalidOptionError."""
    t = text.strip()
    m = _HEX.match(t)
    if m:
        h = m.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if re.fullmatch(r"[A-Za-z]{3,30}", t):
        from PIL import ImageColor
        try:
            return tuple(ImageColor.getrgb(t)[:3])  # type: ignore[return-value]
        except ValueError:
            pass
    raise InvalidOptionError(f"bad colour {text!r}: use #RRGGBB, #RGB or a colour name like white")


@dataclass(frozen=True)
class BackgroundSpec:
    """What goes behind the subject. kind: "sd" (generated, needs `generated=` in compose),
    "color" (color=(r, g, b)), "blur" (radius = Gaussian sigma in px of the original),
    "image" (path, cover-fitted), "transparent" (RGBA cut-out). str(spec) round-trips via parse."""
    kind: str
    color: Optional[tuple[int, int, int]] = None
    radius: Optional[float] = None
    path: Optional[str] = None

    def __post_init__(self):
        if self.kind not in KINDS:
            raise InvalidOptionError(f"unknown background {self.kind!r}; {_USAGE}")
        if self.kind == "color":
            c = self.color
            if (not isinstance(c, tuple) or len(c) != 3
                    or not all(isinstance(v, (int, np.integer)) and 0 <= v <= 255 for v in c)):
                raise InvalidOptionError(f"bad colour {c!r}: need three values 0-255")
        if self.kind == "blur":
            r = self.radius
            if (not isinstance(r, (int, float)) or isinstance(r, bool) or not math.isfinite(r)
                    or not 0 < r <= MAX_BLUR):
                raise InvalidOptionError(f"blur radius must be a number above 0 and at most {MAX_BLUR:g}, got {r!r}")
        if self.kind == "image" and (not isinstance(self.path, str) or not self.path.strip()):
            raise InvalidOptionError("image background needs a path: image:PATH")

    @classmethod
    def parse(cls, text: "str | BackgroundSpec") -> "BackgroundSpec":
        """Parse sd | color:#RRGGBB (#RGB, names) | blur[:RADIUS] | image:PATH | transparent."""
        if isinstance(text, BackgroundSpec):
            return text
        if not isinstance(text, str) or not text.strip():
            raise InvalidOptionError(f"empty background; {_USAGE}")
        kind, sep, arg = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind in ("sd", "transparent"):
            if arg.strip():
                raise InvalidOptionError(f"background {kind!r} takes no value, got {text!r}")
            return cls(kind)
        if kind in ("color", "colour"):
            if not arg.strip():
                raise InvalidOptionError("color background needs a value: color:#RRGGBB")
            return cls("color", color=parse_color(arg))
        if kind == "blur":
            if not arg.strip():
                return cls("blur", radius=DEFAULT_BLUR)
            try:
                radius = float(arg)
            except ValueError:
                raise InvalidOptionError(f"blur radius must be a number, got {arg.strip()!r}") from None
            return cls("blur", radius=radius)
        if kind == "image":
            return cls("image", path=arg.strip())
        raise InvalidOptionError(f"unknown background {text.strip()!r}; {_USAGE}")

    def __str__(self) -> str:
        if self.kind == "color":
            return "color:#%02x%02x%02x" % tuple(int(v) for v in self.color)
        if self.kind == "blur":
            return f"blur:{self.radius:g}"
        if self.kind == "image":
            return f"image:{self.path}"
        return self.kind

    @property
    def generative(self) -> bool:
        """True when the background must be painted by a model first (kind "sd")."""
        return self.kind == "sd"


# ---------------------------------------------------------------------------------------------
# masks: hard subject, eroded core, feathered band


def _check(original, mask) -> tuple[np.ndarray, np.ndarray]:
    if not isinstance(original, np.ndarray) or original.dtype != np.uint8 or original.ndim != 3 \
            or original.shape[2] != 3:
        raise InvalidOptionError("image must be an RGB uint8 array of shape HxWx3")
    if not isinstance(mask, np.ndarray) or mask.shape != original.shape[:2]:
        raise InvalidOptionError(f"subject mask must be HxW matching the image "
                                 f"{original.shape[1]}x{original.shape[0]}")
    hard = mask if mask.dtype == bool else mask >= 128
    return original, hard


def _check_feather(feather) -> int:
    if isinstance(feather, bool) or not isinstance(feather, (int, np.integer)) \
            or not 0 <= feather <= MAX_FEATHER:
        raise InvalidOptionError(f"feather must be a whole number of pixels from 0 to {MAX_FEATHER}, "
                                 f"got {feather!r}")
    return int(feather)


def feather_matte(subject_mask: np.ndarray, feather: int = 0):
    """(core, band, band_alpha) for a subject mask: `core` (HxW bool) = subject pixels farther than
    `feather` px from the background (Euclidean); `band` (HxW bool) = the other subject pixels;
    `band_alpha` (float32, one value per band pixel in row-major order) in (0, 1), a smoothstep of
    the distance to the background. feather 0: core = the mask, band empty."""
    hard = subject_mask if subject_mask.dtype == bool else subject_mask >= 128
    feather = _check_feather(feather)
    if feather == 0 or not hard.any():
        return hard, np.zeros_like(hard), np.zeros(0, np.float32)
    if hard.all():
        return hard, np.zeros_like(hard), np.zeros(0, np.float32)
    import cv2
    u8 = np.ascontiguousarray(hard).view(np.uint8)
    dist = cv2.distanceTransform(u8, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
    core = dist > feather
    band = hard & ~core
    t = dist[band] / np.float32(feather + 1)
    return core, band, (t * t * (3 - 2 * t)).astype(np.float32)


def alpha_matte(subject_mask: np.ndarray, feather: int = 0) -> np.ndarray:
    """The feathered subject mask as HxW uint8 alpha: 255 on the core, the ramp in the band, 0 outside."""
    core, band, a = feather_matte(subject_mask, feather)
    alpha = core.astype(np.uint8) * 255
    alpha[band] = np.round(a * 255).astype(np.uint8)
    return alpha


# ---------------------------------------------------------------------------------------------
# backgrounds


def solid(size: tuple[int, int], color: tuple[int, int, int]) -> np.ndarray:
    w, h = size
    out = np.empty((h, w, 3), np.uint8)
    out[...] = np.asarray(color, np.uint8)
    return out


def blurred(original: np.ndarray, subject_mask: Optional[np.ndarray], radius: float) -> np.ndarray:
    """The original Gaussian-blurred with sigma `radius` px, the subject left out of the average
    (normalised convolution) so it does not halo into the background. Works at a reduced scale
    (sigma ~4 px there), then resizes back: cheap at 12 MP, indistinguishable after a blur."""
    import cv2
    h, w = original.shape[:2]
    k = max(1.0, radius / 4.0)
    sw, sh = max(1, round(w / k)), max(1, round(h / k))
    sigma = radius * sw / w
    img = cv2.resize(original, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
    plain = cv2.GaussianBlur(img, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    hard = None
    if subject_mask is not None:
        hard = subject_mask if subject_mask.dtype == bool else subject_mask >= 128
    if hard is not None and hard.any():
        # zero the subject at full size before shrinking, so partly-subject pixels carry only
        # their background share; the shrunk weight says how much background each one holds
        masked = original.copy()
        masked[hard] = 0
        num = cv2.resize(masked, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
        weight = cv2.resize((~hard).view(np.uint8) * np.uint8(255), (sw, sh),
                            interpolation=cv2.INTER_AREA).astype(np.float32) / 255
        num = cv2.GaussianBlur(num, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
        den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)[..., None]
        small = np.where(den > 1e-3, num / np.maximum(den, 1e-3), plain)
    else:
        small = plain
    small = np.clip(small + 0.5, 0, 255).astype(np.uint8)
    if (sw, sh) == (w, h):
        return small
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)


def cover_fit(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Scale `image` (HxWx3) so it covers `size` (w, h) with its aspect ratio kept, then crop the
    centre: no bars, no distortion."""
    import cv2
    w, h = size
    ih, iw = image.shape[:2]
    s = max(w / iw, h / ih)
    nw, nh = max(w, round(iw * s)), max(h, round(ih * s))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC
    scaled = image if (nw, nh) == (iw, ih) else cv2.resize(image, (nw, nh), interpolation=interp)
    x0, y0 = (nw - w) // 2, (nh - h) // 2
    return np.ascontiguousarray(scaled[y0:y0 + h, x0:x0 + w])


def read_background_image(path: str | Path) -> np.ndarray:
    """An image file as RGB uint8 (EXIF orientation applied); ImageError (one line) if unreadable."""
    from PIL import Image, ImageOps
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageError(f"background image not found: {p}")
    try:
        with Image.open(p) as im:
            im = ImageOps.exif_transpose(im)
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                im = im.convert("RGBA")
                flat = Image.new("RGB", im.size, (255, 255, 255))
                flat.paste(im, mask=im.getchannel("A"))
                im = flat
            return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read background image {p}: {e}") from None


def background_for(original: np.ndarray, subject_mask: np.ndarray, spec: BackgroundSpec,
                   generated: Optional[np.ndarray] = None) -> np.ndarray:
    """The full-size HxWx3 background layer for `spec` (not for "transparent")."""
    h, w = original.shape[:2]
    if spec.kind == "color":
        return solid((w, h), spec.color)
    if spec.kind == "blur":
        return blurred(original, subject_mask, spec.radius)
    if spec.kind == "image":
        return cover_fit(read_background_image(spec.path), (w, h))
    if spec.kind == "sd":
        if generated is None:
            raise InvalidOptionError("background 'sd' needs a generated image (run inpainting first)")
        if (not isinstance(generated, np.ndarray) or generated.dtype != np.uint8
                or generated.shape != original.shape):
            raise InvalidOptionError(f"generated background must be uint8 {w}x{h}x3 like the image, got "
                                     f"{getattr(generated, 'shape', type(generated).__name__)}")
        return generated
    raise InvalidOptionError(f"background {spec.kind!r} has no background layer")


# ---------------------------------------------------------------------------------------------
# compose


def compose(original: np.ndarray, subject_mask: np.ndarray, spec: "BackgroundSpec | str",
            feather: int = 0, generated: Optional[np.ndarray] = None) -> np.ndarray:
    """Put the subject of `original` (mask 255 = subject) over the background `spec`.

    Returns HxWx3 uint8 (HxWx4 for "transparent": RGB of the original where visible, 0 where fully
    transparent, alpha = the feathered mask). Subject pixels farther than `feather` px from the
    background are bit-identical to `original`. `generated` (HxWx3 uint8, full size) is required
    for "sd". Raises InvalidOptionError / ImageError (one line)."""
    spec = BackgroundSpec.parse(spec)
    original, hard = _check(original, subject_mask)
    core, band, a = feather_matte(hard, feather)

    if spec.kind == "transparent":
        h, w = original.shape[:2]
        out = np.zeros((h, w, 4), np.uint8)
        visible = core | band
        np.copyto(out[..., :3], original, where=visible[..., None])
        out[..., 3] = core.view(np.uint8) * 255
        if band.any():
            out[..., 3][band] = np.round(a * 255).astype(np.uint8)
        return out

    out = background_for(original, hard, spec, generated).copy()
    np.copyto(out, original, where=core[..., None])
    if band.any():
        fg = original[band].astype(np.float32)
        bg = out[band].astype(np.float32)
        out[band] = np.clip(bg + (fg - bg) * a[:, None] + 0.5, 0, 255).astype(np.uint8)
    return out
