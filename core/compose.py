"""Paste-back and the non-generative backgrounds, at the image's full resolution.

Conventions: images RGB uint8 HxWx3; the subject mask HxW uint8 with 255 = subject (values >= 128
count as subject; bool accepted). Sizes are (width, height).

    spec = BackgroundSpec.parse("color:#1e90ff")     # sd | color:#RRGGBB | blur:RADIUS | image:PATH | transparent
    out = compose(original, subject_mask, spec, feather=4)               # HxWx3 uint8
    out = compose(original, subject_mask, BackgroundSpec.parse("sd"), generated=variant.image)
    rgba = compose(original, subject_mask, BackgroundSpec.parse("transparent"))   # HxWx4 uint8
    out = compose(original, subject_mask, spec, matte=core.matte.edge_matte(original, subject_mask))

The promise: every subject pixel farther than `feather` px from the background (the mask eroded by
the feather radius; all subject pixels when feather = 0) is bit-identical to `original`. In the band
between that core and the mask edge the subject is blended over the background with a smooth ramp
(the feathered mask); outside the mask the result is the background. Only the band is computed in
floating point, so the cost at 12 MP is a few copies. With `matte=` (core.matte: an alpha matte of
the border with the old background's colour removed) the core is the mask shrunk by the matte's band
and the band is blended with the matte's alpha and colours instead.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from core import arrays
from core.errors import ImageError, InvalidOptionError
from core.spec import MAX_FEATHER, Background

# The background of a run is part of the run spec (core/spec.py); compose takes spec.Background.
BackgroundSpec = Background


# ---------------------------------------------------------------------------------------------
# masks: hard subject, eroded core, feathered band


def _check(original, mask) -> tuple[np.ndarray, np.ndarray]:
    """The image (HxWx3 uint8) and its subject mask (HxW uint8 255 = subject, or bool), checked by
    core.arrays; returns the contiguous image and the hard (bool) mask."""
    arrays.rgb(original, "image")
    mask = arrays.mask(mask, "subject mask", shape=original.shape, keep_bool=True)
    return np.ascontiguousarray(original), _hard(mask)


def _check_feather(feather) -> int:
    if isinstance(feather, bool) or not isinstance(feather, (int, np.integer)) \
            or not 0 <= feather <= MAX_FEATHER:
        raise InvalidOptionError(f"feather must be a whole number of pixels from 0 to {MAX_FEATHER}, "
                                 f"got {feather!r}")
    return int(feather)


@dataclass(frozen=True)
class Matte:
    """A subject mask split for paste-back. `core` (HxW bool): subject pixels copied bit-identically
    (for a feathered mask: those farther than `feather` px from the background). `band_idx` (int64,
    flat row-major indices into HxW): the border pixels blended over the background; `band_alpha`
    (float32, same length) in [0, 1]: how much of the subject shows there (feather: a smoothstep of
    the distance to the background; core.matte: an alpha matte). `band_fg` (float32 Nx3, 0..255, or
    None = the photo's own colours): the subject's colour there with the old background taken out
    (core.matte's colour decontamination)."""
    core: np.ndarray
    band_idx: np.ndarray
    band_alpha: np.ndarray
    band_fg: Optional[np.ndarray] = None

    @property
    def subject(self) -> np.ndarray:
        """core | band as HxW bool."""
        s = self.core.copy()
        s.ravel()[self.band_idx] = True
        return s

    def alpha(self) -> np.ndarray:
        """HxW uint8: 255 on the core, the band's alpha, 0 outside."""
        out = self.core.view(np.uint8) * np.uint8(255)
        out.ravel()[self.band_idx] = np.round(self.band_alpha * 255).astype(np.uint8)
        return out

    def foreground(self, original: np.ndarray) -> np.ndarray:
        """Nx3 float32: the subject's colours on the band (band_fg, or the photo's own)."""
        if self.band_fg is not None:
            return self.band_fg
        return original.reshape(-1, 3)[self.band_idx].astype(np.float32)


def _hard(subject_mask: np.ndarray) -> np.ndarray:
    if subject_mask.dtype == bool:
        return np.ascontiguousarray(subject_mask)
    return subject_mask >= 128


def _tile_counts(u8: np.ndarray, T: int) -> tuple[np.ndarray, np.ndarray]:
    """Per TxT tile (ceil grid, edge tiles smaller): number of nonzero pixels, and tile area."""
    import cv2
    H, W = u8.shape
    gh, gw = -(-H // T), -(-W // T)
    H0, W0 = H // T * T, W // T * T
    counts = np.zeros((gh, gw), np.int64)
    if H0 and W0:
        main = np.ascontiguousarray(u8[:H0, :W0]).reshape(H0 * (W0 // T), T)
        rows = cv2.reduce(main, 1, cv2.REDUCE_SUM, dtype=cv2.CV_32S).reshape(H0 // T, T, W0 // T)
        counts[:H0 // T, :W0 // T] = rows.sum(axis=1)
    if W0 < W and H0:                                     # right strip
        counts[:H0 // T, -1] = u8[:H0, W0:].reshape(H0 // T, -1).sum(axis=1)
    if H0 < H and W0:                                     # bottom strip
        counts[-1, :W0 // T] = u8[H0:, :W0].reshape(H - H0, W0 // T, T).sum(axis=(0, 2))
    if H0 < H and W0 < W:
        counts[-1, -1] = int(u8[H0:, W0:].sum())
    th = np.full(gh, T)
    th[-1] = H - (gh - 1) * T
    tw = np.full(gw, T)
    tw[-1] = W - (gw - 1) * T
    return counts, th[:, None] * tw[None, :]


def feather_matte(subject_mask: np.ndarray, feather: int = 0) -> Matte:
    """Split a subject mask (HxW uint8 255 = subject, or bool) into its untouched core and its
    feathered band (see Matte). feather 0: core = the mask, no band.

    Only the neighbourhood of the mask's edge is looked at: the image is cut in tiles, and the exact
    distance transform runs on the tiles that have background within `feather` px, so the cost
    follows the edge's length, not the image's area (12 MP: tens of ms instead of ~300 ms)."""
    hard = _hard(subject_mask)
    feather = _check_feather(feather)
    empty = np.zeros(0, np.int64), np.zeros(0, np.float32)
    if feather == 0:
        return Matte(hard, *empty)
    import cv2
    H, W = hard.shape
    T = 64
    while T < 2 * feather:
        T *= 2
    R = -(-feather // T)                                  # tiles to look around: ceil(f / T)
    u8 = hard.view(np.uint8)
    counts, area = _tile_counts(u8, T)
    has_fg, has_bg = counts > 0, counts < area
    if not has_fg.any() or not has_bg.any():
        return Matte(hard, *empty)
    gh, gw = counts.shape
    near_bg = cv2.dilate(has_bg.view(np.uint8), np.ones((2 * R + 1, 2 * R + 1), np.uint8)) > 0
    roi = has_fg & near_bg                                 # every subject pixel within f of background
    core = hard.copy()
    idx_parts, alpha_parts = [], []
    scale = np.float32(feather + 1)
    for ty in range(gh):
        row = roi[ty]
        if not row.any():
            continue
        # runs of consecutive ROI tiles in this tile row -> one patch each (with an f px margin)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], row.view(np.uint8), [0]))))
        y0, y1 = ty * T, min(H, (ty + 1) * T)
        py0, py1 = max(0, y0 - feather), min(H, y1 + feather)
        for start, stop in zip(edges[::2], edges[1::2]):
            x0, x1 = start * T, min(W, stop * T)
            px0, px1 = max(0, x0 - feather), min(W, x1 + feather)
            dist = cv2.distanceTransform(u8[py0:py1, px0:px1], cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
            d = dist[y0 - py0:y1 - py0, x0 - px0:x1 - px0]
            band = (d > 0) & (d <= feather)
            if not band.any():
                continue
            core[y0:y1, x0:x1] &= ~band
            ys, xs = np.nonzero(band)
            idx_parts.append((ys + y0).astype(np.int64) * W + (xs + x0))
            t = d[ys, xs] / scale
            alpha_parts.append(t * t * (3 - 2 * t))
    if not idx_parts:
        return Matte(core, *empty)
    return Matte(core, np.concatenate(idx_parts), np.concatenate(alpha_parts).astype(np.float32))


def alpha_matte(subject_mask: np.ndarray, feather: int = 0) -> np.ndarray:
    """The feathered subject mask as HxW uint8 alpha: 255 on the core, the ramp in the band, 0 outside."""
    return feather_matte(subject_mask, feather).alpha()


# ---------------------------------------------------------------------------------------------
# backgrounds


def solid(size: tuple[int, int], color: tuple[int, int, int]) -> np.ndarray:
    w, h = size
    out = np.empty((h, w, 3), np.uint8)
    out[0] = np.asarray(color, np.uint8)   # one row, then whole rows (much faster than per pixel)
    out[1:] = out[0]
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
    hard = None if subject_mask is None else _hard(subject_mask)
    if hard is not None and hard.any():
        # zero the subject at full size before shrinking, so partly-subject pixels carry only
        # their background share; the shrunk weight says how much background each one holds
        keep = cv2.bitwise_not(hard.view(np.uint8) * np.uint8(255))
        masked = cv2.copyTo(original, keep)
        num = cv2.resize(masked, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32)
        weight = cv2.resize(keep, (sw, sh), interpolation=cv2.INTER_AREA).astype(np.float32) / 255
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
    """An image file as HxWx3 uint8 RGB, read by core.images.load_image like a photo (format
    allow-list, pixel cap, EXIF orientation, 16-bit/CMYK/palette/profile conversion); transparent
    pixels are flattened on white. ImageError (one line) if missing or unreadable."""
    from core.images import load_image
    p = Path(path).expanduser()
    if not p.is_file():
        raise ImageError(f"background image not found: {p}")
    loaded = load_image(p, name=f"background image {p.name}")
    if loaded.alpha is None:
        return loaded.rgb.copy()
    # rgb * a + white * (255 - a), divided by 255 and rounded: what Pillow's paste with a mask gives.
    a = loaded.alpha[:, :, None].astype(np.uint32)
    flat = (loaded.rgb.astype(np.uint32) * a + 255 * (255 - a) + 127) // 255
    return flat.astype(np.uint8)


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
        arrays.rgb(generated, "generated background")
        if generated.shape != original.shape:
            raise InvalidOptionError(f"generated background must be {w}x{h} like the image, got "
                                     f"{generated.shape[1]}x{generated.shape[0]}")
        return generated
    raise InvalidOptionError(f"background {spec.kind!r} has no background layer")


# ---------------------------------------------------------------------------------------------
# compose


def compose(original: np.ndarray, subject_mask: np.ndarray, spec: "BackgroundSpec | str",
            feather: int = 0, generated: Optional[np.ndarray] = None,
            matte: Optional[Matte] = None) -> np.ndarray:
    """Put the subject of `original` (mask 255 = subject) over the background `spec`.

    Returns HxWx3 uint8 (HxWx4 for "transparent": straight, not premultiplied — RGB of the subject
    where visible, 0 where fully transparent, alpha = the matte). The matte is `matte` when given
    (core.matte.edge_matte: soft alpha and decontaminated colours on the border; `feather` is then
    not used), else the mask feathered inward by `feather` px. Pixels of matte.core (the subject
    farther than `feather` px from the background) are bit-identical to `original`; on the band
    out = alpha * F + (1 - alpha) * background. `generated` (HxWx3 uint8, full size) is required
    for "sd". Raises InvalidOptionError / ImageError (one line)."""
    import cv2
    spec = BackgroundSpec.parse(spec)
    original, hard = _check(original, subject_mask)
    if matte is None:
        matte = feather_matte(hard, feather)
    elif not isinstance(matte, Matte) or matte.core.shape != hard.shape:
        raise InvalidOptionError("the matte does not belong to this image")
    idx, a = matte.band_idx, matte.band_alpha

    if spec.kind == "transparent":
        alpha = matte.alpha()
        visible = cv2.copyTo(original, alpha)              # RGB where alpha > 0, zeros elsewhere
        if matte.band_fg is not None and idx.size:
            fg = np.clip(matte.band_fg + 0.5, 0, 255).astype(np.uint8)
            visible.reshape(-1, 3)[idx] = np.where(alpha.ravel()[idx, None] > 0, fg, 0)
        out = cv2.cvtColor(visible, cv2.COLOR_RGB2RGBA)
        out[..., 3] = alpha
        return out

    out = background_for(original, hard, spec, generated)
    if out is generated:
        out = out.copy()                                    # never write into the caller's array
    out = cv2.copyTo(original, matte.core.view(np.uint8), out)   # the core, bit for bit
    if idx.size:
        flat_out = out.reshape(-1, 3)
        fg = matte.foreground(original)
        bg = flat_out[idx].astype(np.float32)
        flat_out[idx] = np.clip(bg + (fg - bg) * a[:, None] + 0.5, 0, 255).astype(np.uint8)
    return out
