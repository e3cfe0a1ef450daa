"""Loading a user's photo: `load_image` -> `LoadedImage` (RGB uint8 HxWx3 + optional HxW alpha), and
`content_hash`, the key every cache and the history use.

Why one file (~460 lines): every format's reader goes through the same size, bomb and colour-profile checks
here; split up, a reader could skip one.

Conventions (see docs/CONTRACTS.md): images are RGB uint8 numpy arrays of shape HxWx3; alpha, where
kept, is a separate HxW uint8 array (255 = opaque); points are (x, y) pixels of the ORIGINAL,
EXIF-corrected image; sizes are (width, height). Every failure to read a user's file raises
`ImageError` whose str() is one line such as ``could not read photo.jpg: the file is truncated``.

Loading is defensive: the header size is checked against `max_pixels` before any pixel is decoded
(`Image.open` is lazy), only a fixed list of raster formats is tried (never EPS/PDF/... plugins that
shell out), and every decoder error maps to a short human reason. Pixels tagged with a colour
profile other than sRGB are converted to sRGB (`_to_srgb`); sRGB and untagged pixels are kept exactly.
"""
from __future__ import annotations

import hashlib
import io
import logging
import numbers
import os
import re
import stat
import struct
import threading
from pathlib import Path
from dataclasses import dataclass, field
from typing import BinaryIO

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from core import arrays
from core.errors import ImageError, InvalidOptionError

log = logging.getLogger(__name__)

MAX_PIXELS = 60_000_000
"""Largest accepted image, in pixels (width * height), checked from the header before decoding."""

MAX_SIDE = 65_535
"""Largest accepted width or height (JPEG's own limit); longer strips are refused as absurd."""

SUPPORTED = "JPEG, PNG, WebP, TIFF, BMP, GIF or HEIC"

# Pillow format ids we let Image.open try, in this order. Anything else (EPS, PDF, PSD, ...) is refused.
_OPEN_FORMATS = ("JPEG", "MPO", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", "AVIF")
_PRETTY = {"JPEG": "JPEG", "MPO": "JPEG", "PNG": "PNG", "WEBP": "WebP", "TIFF": "TIFF", "BMP": "BMP",
           "GIF": "GIF", "HEIF": "HEIC/HEIF", "AVIF": "AVIF"}
_HEIF_BRANDS = {b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs", b"mif1",
                b"msf1", b"mif2", b"miaf"}
_AVIF_BRANDS = {b"avif", b"avis"}
_NOT_IMAGES = {
    "PDF": "it is a PDF document, not a photo (export the page as PNG or JPEG)",
    "SVG": "SVG drawings are not supported (export it as PNG)",
    "TEXT": "it is a text file, not an image",
    "ZIP": "it is a zip archive, not an image",
    "PSD": f"Photoshop files are not supported (save a copy as {SUPPORTED})",
    "VIDEO": "it is a video, not a photo",
}

_heif_lock = threading.Lock()
_heif_ready: bool | None = None   # None = not tried yet; True/False = pillow-heif registered / missing
_plugins_lock = threading.Lock()
_plugins_ready = False


def content_hash(rgb: np.ndarray) -> str:
    """SHA-256 hex of an image array's shape, dtype and bytes: the key for embeddings and storage."""
    h = hashlib.sha256(f"{rgb.shape}|{rgb.dtype}|".encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()


def _readonly(arr: np.ndarray) -> np.ndarray:
    """A read-only view, so an array whose hash was taken cannot be changed in place by mistake."""
    view = arr.view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True)
class LoadedImage:
    """A decoded photo, normalised for the rest of Backdrop.

    rgb:    HxWx3 uint8 RGB, EXIF orientation already applied (read-only array).
    alpha:  HxW uint8 (255 = opaque) when the file had transparency, else None (read-only array).
    format: Pillow's format id of the file ("JPEG", "PNG", "WEBP", "TIFF", "BMP", "GIF", "HEIF", ...).
    hash:   content_hash(rgb); computed when left empty, checked when given.
    """

    rgb: np.ndarray
    alpha: np.ndarray | None = None
    format: str = ""
    hash: str = field(default="")

    def __post_init__(self) -> None:
        rgb = arrays.rgb(self.rgb, "LoadedImage.rgb")
        if self.alpha is not None:
            a = arrays.image(self.alpha, "LoadedImage.alpha", channels=(None,))
            arrays.mask(a, "LoadedImage.alpha", shape=rgb.shape)
            object.__setattr__(self, "alpha", _readonly(a))
        object.__setattr__(self, "rgb", _readonly(rgb))
        actual = content_hash(rgb)
        if self.hash and self.hash != actual:
            raise InvalidOptionError("LoadedImage.hash does not match its pixels; leave it empty to compute it")
        object.__setattr__(self, "hash", actual)

    @property
    def width(self) -> int:
        return int(self.rgb.shape[1])

    @property
    def height(self) -> int:
        return int(self.rgb.shape[0])

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) in pixels."""
        return self.width, self.height


# ----------------------------------------------------------------------------------------- loading

def load_image(source: str | os.PathLike | bytes | bytearray | memoryview | BinaryIO, *,
               max_pixels: int = MAX_PIXELS, name: str | None = None) -> LoadedImage:
    """Read a photo from a path, bytes or a binary file object into a `LoadedImage`.

    Accepts JPEG, PNG, WebP, TIFF, BMP, GIF (first frame), HEIC/HEIF (through the optional
    pillow-heif package, registered on first use) and AVIF. EXIF orientation is applied; CMYK,
    16-bit, float, palette, greyscale and bilevel images become RGB uint8; transparency is kept apart
    in `.alpha`. A file object is read to its end from its current position.

    `name` is only used in error messages (e.g. the upload's file name); for a path the message
    uses its base name. Raises ImageError (one line) for a missing, empty, truncated, damaged,
    non-image, unsupported or too large file (more than `max_pixels`, checked before decoding).
    """
    if isinstance(max_pixels, bool) or not isinstance(max_pixels, numbers.Integral) or max_pixels <= 0:
        raise InvalidOptionError(f"max_pixels must be a positive integer, got {max_pixels!r}")
    label = _display_name(name)
    if isinstance(source, (str, os.PathLike)):
        label = label or _display_name(os.fspath(source)) or "the image"
        return _load_path(source, label, int(max_pixels))
    label = label or "the image"
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
    elif hasattr(source, "read") and not isinstance(source, (bool, numbers.Number)):
        if name is None:
            label = _display_name(getattr(source, "name", None)) or label
        try:
            data = source.read()
        except Exception as e:  # a closed or broken stream
            log.debug("reading %s failed", label, exc_info=True)
            raise ImageError(f"could not read {label}: the file could not be read ({_one_line(e)})") from e
        if isinstance(data, str):
            raise ImageError(f"could not read {label}: the file was opened as text; open it in binary mode ('rb')")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ImageError(f"could not read {label}: its read() gave {type(data).__name__}, not bytes")
        data = bytes(data)
    else:
        raise ImageError(f"could not read {label}: expected a file path, bytes or an open file, "
                         f"not {type(source).__name__}")
    return _load_stream(io.BytesIO(data), label, int(max_pixels))


def _load_path(source: str | os.PathLike, label: str, max_pixels: int) -> LoadedImage:
    path = os.fspath(source)
    if not path:
        raise ImageError("could not read the image: no file name was given")
    try:
        f = open(path, "rb")  # the only thing the user's path is used for
    except FileNotFoundError as e:
        raise ImageError(f"could not read {label}: the file does not exist") from e
    except IsADirectoryError as e:
        raise ImageError(f"could not read {label}: it is a folder, not a file") from e
    except PermissionError as e:
        raise ImageError(f"could not read {label}: permission denied") from e
    except (OSError, ValueError) as e:  # ValueError: embedded NUL byte
        why = getattr(e, "strerror", None) or "not a valid file name"   # strerror: no path in it
        raise ImageError(f"could not read {label}: the file could not be opened ({why})") from e
    with f:
        if not stat.S_ISREG(os.fstat(f.fileno()).st_mode):
            raise ImageError(f"could not read {label}: it is not a regular file")
        return _load_stream(f, label, max_pixels)


def _load_stream(fp: BinaryIO, label: str, max_pixels: int) -> LoadedImage:
    head = fp.read(512)
    if not head:
        raise ImageError(f"could not read {label}: the file is empty")
    total = fp.seek(0, io.SEEK_END)
    fp.seek(max(0, total - 16))
    tail = fp.read(16)
    fp.seek(0)
    kind = _sniff(head)
    if kind in _NOT_IMAGES:
        raise ImageError(f"could not read {label}: {_NOT_IMAGES[kind]}")
    if kind == "HEIF" and not _ensure_heif():
        raise ImageError(f"could not read {label}: HEIC/HEIF photos need the optional pillow-heif package "
                         f"(pip install pillow-heif), or convert the photo to JPEG")

    try:
        im = Image.open(fp, formats=_open_formats())
    except UnidentifiedImageError as e:
        if kind is None:
            raise ImageError(f"could not read {label}: it is not an image in a supported format ({SUPPORTED})") from e
        raise _decode_error(label, kind, e, head, tail, total) from e
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        # Pillow's own guard (over ~89 MP, or 179 MP as an error) fired inside Image.open.
        m = re.search(r"\((\d+) pixels\)", str(e))
        size = f"{int(m.group(1)) / 1e6:,.0f} MP" if m else "too many pixels"
        raise ImageError(f"could not read {label}: the image is too large ({size}; the limit is "
                         f"{max_pixels / 1e6:g} MP)") from e
    except Exception as e:
        log.debug("opening %s failed", label, exc_info=True)
        raise _decode_error(label, kind, e, head, tail, total) from e

    with im:
        fmt = "JPEG" if im.format == "MPO" else (im.format or kind or "")
        width, height = im.size
        if width <= 0 or height <= 0:
            raise ImageError(f"could not read {label}: the file is damaged (it claims a size of {width}x{height})")
        if width * height > max_pixels or max(width, height) > MAX_SIDE:
            raise ImageError(f"could not read {label}: the image is too large ({width}x{height} = "
                             f"{width * height / 1e6:,.1f} MP; the limit is {max_pixels / 1e6:g} MP and "
                             f"{MAX_SIDE} px a side)")
        try:
            im.load()  # first frame only (GIF, TIFF pages, animated WebP/PNG)
            im = _exif_transpose(im)
            im = _to_srgb(im)
            rgb, alpha = _to_rgb_alpha(im)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
            raise ImageError(f"could not read {label}: the image is too large") from e
        except MemoryError as e:
            raise ImageError(f"could not read {label}: not enough memory to decode it") from e
        except Exception as e:
            log.debug("decoding %s failed", label, exc_info=True)
            raise _decode_error(label, kind or fmt, e, head, tail, total) from e
    return LoadedImage(rgb=rgb, alpha=alpha, format=fmt)


def _open_formats() -> tuple[str, ...]:
    """Register exactly the plugins we accept (not Image.init(), which loads them all)."""
    global _plugins_ready
    with _plugins_lock:
        if not _plugins_ready:
            from PIL import (BmpImagePlugin, GifImagePlugin, JpegImagePlugin,  # noqa: F401
                             MpoImagePlugin, PngImagePlugin, TiffImagePlugin, WebPImagePlugin)
            try:
                from PIL import AvifImagePlugin  # noqa: F401  (Pillow >= 11.3)
            except ImportError:
                pass
            _plugins_ready = True
    return tuple(f for f in _OPEN_FORMATS if f in Image.OPEN)


def _ensure_heif() -> bool:
    """Register pillow-heif's opener on first need; False when the package is not installed."""
    global _heif_ready
    with _heif_lock:
        if _heif_ready is None:
            try:
                from pillow_heif import register_heif_opener
                register_heif_opener()
                _heif_ready = True
            except ImportError:
                _heif_ready = False
        return _heif_ready


def _sniff(head: bytes) -> str | None:
    """Guess the kind of file from its first bytes: a Pillow format id, a _NOT_IMAGES key, or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if head.startswith(b"BM") and head[6:10] == b"\x00\x00\x00\x00":
        return "BMP"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "TIFF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head[4:8] == b"ftyp":
        size = int.from_bytes(head[:4], "big")
        brands = {head[8:12]} | {head[i:i + 4] for i in range(16, min(size, len(head)) - 3, 4)}
        if head[8:12] in _AVIF_BRANDS:
            return "AVIF"
        if brands & _HEIF_BRANDS:
            return "HEIF"
        if brands & _AVIF_BRANDS:
            return "AVIF"
        return "VIDEO"
    if head.startswith(b"%PDF"):
        return "PDF"
    if head.startswith(b"PK\x03\x04"):
        return "ZIP"
    if head.startswith(b"8BPS"):
        return "PSD"
    if _looks_like_text(head):
        return "SVG" if b"<svg" in head.lower() else "TEXT"
    return None


def _looks_like_text(head: bytes) -> bool:
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 3:  # not just a character cut at the end of the sample
            return False
        text = head[:e.start].decode("utf-8")
    return bool(text) and all(c.isprintable() or c in "\t\n\r\f\v" for c in text)


def _looks_truncated(kind: str | None, head: bytes, tail: bytes, total: int) -> bool:
    """Cheap structural checks that tell 'cut short' from 'damaged' for a file that failed to decode."""
    try:
        if kind == "JPEG":
            return b"\xff\xd9" not in tail
        if kind == "PNG":  # a real PNG header, but no end chunk
            return head[12:16] == b"IHDR" and b"IEND" not in tail
        if kind == "GIF":
            return not tail.endswith(b";")
        if kind == "BMP":
            return len(head) >= 6 and struct.unpack("<I", head[2:6])[0] > total
        if kind == "WEBP":
            return struct.unpack("<I", head[4:8])[0] + 8 > total
        if kind == "TIFF" and head[2:4] in (b"*\x00", b"\x00*"):
            order = "<" if head[:2] == b"II" else ">"
            return struct.unpack(order + "I", head[4:8])[0] >= total
    except struct.error:
        return True
    return False


def _decode_error(label: str, kind: str | None, exc: BaseException, head: bytes, tail: bytes,
                  total: int) -> ImageError:
    text = str(exc).lower()
    if (isinstance(exc, EOFError) or "truncated" in text or "end of file" in text
            or _looks_truncated(kind, head, tail, total)):
        return ImageError(f"could not read {label}: the file is truncated (it was cut short, e.g. by an "
                          f"interrupted download)")
    if isinstance(exc, ValueError) and "conversion" in text:
        return ImageError(f"could not read {label}: its colour mode is not supported ({_one_line(exc)})")
    pretty = _PRETTY.get(kind or "", "")
    what = f"not a valid {pretty} image" if pretty else "not a readable image"
    return ImageError(f"could not read {label}: the file is damaged ({what})")


def _exif_transpose(im: Image.Image) -> Image.Image:
    """Apply EXIF/XMP orientation; an unreadable EXIF block leaves the image as stored."""
    try:
        out = ImageOps.exif_transpose(im)
    except (SyntaxError, ValueError, TypeError, KeyError, IndexError, struct.error, OSError):
        return im
    return out if out is not None else im


_srgb_lock = threading.Lock()
_srgb_profile = None


def _to_srgb(im: Image.Image) -> Image.Image:
    """Pixels tagged with a colour profile other than sRGB (a phone's Display P3, Adobe RGB, a
    CMYK press profile, a grey gamma) converted to sRGB, the space everything downstream assumes
    (the output files carry no profile, the inpainting models were trained on sRGB). Untagged and
    sRGB-tagged images are returned as they are, bit for bit. A profile littleCMS cannot read, or
    one that does not fit the pixels, is ignored: the pixels are used as stored."""
    global _srgb_profile
    icc = im.info.get("icc_profile")
    if not icc or im.mode not in ("RGB", "RGBA", "CMYK", "L", "LA", "P"):
        return im
    try:
        from PIL import ImageCms     # Pillow's littleCMS binding; a build without it keeps pixels as stored
    except ImportError:
        return im
    try:
        src = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        name = ImageCms.getProfileDescription(src).lower()
        if "srgb" in name and "linear" not in name:
            return im
        if im.mode == "P":
            im = im.convert("RGBA" if im.has_transparency_data else "RGB")
        with _srgb_lock:
            if _srgb_profile is None:
                _srgb_profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))
        if "transparency" in im.info and im.mode in ("RGB", "L"):    # a colour key: keep it as alpha
            im = im.convert(im.mode + "A" if im.mode == "L" else "RGBA")
        alpha = im.getchannel("A") if im.mode in ("RGBA", "LA") else None
        base = im.convert(im.mode[:-1]) if alpha is not None else im
        out = ImageCms.profileToProfile(base, src, _srgb_profile, outputMode="RGB")
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return im
    if alpha is not None:
        out.putalpha(alpha)
    out.info = {k: v for k, v in im.info.items() if k != "icc_profile"}
    return out


def _to_rgb_alpha(im: Image.Image) -> tuple[np.ndarray, np.ndarray | None]:
    """Normalise any Pillow mode to (HxWx3 uint8 RGB, HxW uint8 alpha or None when opaque)."""
    mode = im.mode
    if mode.startswith("I;16") or mode in ("I", "F"):
        grey = _scale_to_uint8(np.asarray(im), mode)
        return np.ascontiguousarray(np.repeat(grey[:, :, None], 3, axis=2)), None
    if im.has_transparency_data:
        rgba = np.array(im.convert("RGBA"), dtype=np.uint8)
        alpha = np.ascontiguousarray(rgba[:, :, 3])
        return np.ascontiguousarray(rgba[:, :, :3]), (None if alpha.min() == 255 else alpha)
    # CMYK: Pillow's conversion (Adobe-inverted JPEGs are already handled by the decoder).
    rgb = np.array(im if mode == "RGB" else im.convert("RGB"), dtype=np.uint8)
    return np.ascontiguousarray(rgb), None


def _scale_to_uint8(arr: np.ndarray, mode: str) -> np.ndarray:
    """Map a 16/32-bit integer or float greyscale array to uint8.

    I;16*: value / 257 (so 65535 -> 255 and 257*v -> v). I (int32): as-is when it fits 0..255,
    else / 257 when it fits 0..65535, else min-max stretched. F (float): x255 when it fits 0..1,
    as-is when it fits 0..255, else / 257 when it fits 0..65535, else min-max stretched; NaN -> 0.
    """
    a = arr.astype(np.float64)
    if mode.startswith("I;16"):
        return np.rint(a / 257.0).astype(np.uint8)
    a = np.nan_to_num(a, nan=0.0, posinf=0.0, neginf=0.0)
    lo, hi = (float(a.min()), float(a.max())) if a.size else (0.0, 0.0)
    if mode == "F" and lo >= 0.0 and hi <= 1.0:
        a = a * 255.0
    elif lo >= 0.0 and hi <= 255.0:
        pass
    elif lo >= 0.0 and hi <= 65535.0:
        a = a / 257.0
    else:
        a = (a - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(a)
    return np.clip(np.rint(a), 0, 255).astype(np.uint8)


def _display_name(name: object) -> str:
    """The base name of a user's file, made safe for a one-line message (never used as a path)."""
    if isinstance(name, bytes):
        name = name.decode("utf-8", "replace")
    if not isinstance(name, str) or not name:
        return ""
    base = re.split(r"[\\/]", name.rstrip("/\\"))[-1]
    base = "".join(c if c.isprintable() else "?" for c in base)
    return base if len(base) <= 80 else base[:77] + "..."


def load_mask(source: str | os.PathLike, image: "LoadedImage") -> np.ndarray:
    """A subject mask file for `image`: HxW uint8 0/255 (any channel > 127 = subject), read like a
    photo (allow-list, pixel cap); InvalidOptionError when its size is not the photo's."""
    m = load_image(source, name=f"mask {Path(source).name}").rgb.max(axis=2)
    if m.shape != (image.height, image.width):
        raise InvalidOptionError(f"mask {Path(source).name} is {m.shape[1]}x{m.shape[0]} but the photo "
                                 f"is {image.width}x{image.height}; they must be the same size")
    return np.where(m > 127, 255, 0).astype(np.uint8)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 120 else text[:117] + "..."
