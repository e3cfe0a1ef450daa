"""Content-addressed image files under the data dir.

    images/ab/abcdef….png    full-size PNG (sources RGB, masks L, outputs RGB or RGBA)
    thumbs/ab/abcdef….webp   WebP thumbnail, long side THUMB_SIDE (sources and outputs)

The name is core.images.content_hash of the array (shape, dtype and bytes), so the same image is
stored once however many rows use it. Files are written with core.files.atomic_write_bytes (temp
file in the same folder, fsync, rename) BEFORE the row that points at them is committed. A file
that already exists is "touched" (mtime = now) so the sweep's grace period protects it while the
row that reuses it is being committed.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np

from core.files import atomic_write_bytes
from core.images import content_hash, encode_png

THUMB_SIDE = 256
THUMB_QUALITY = 80
AREAS = ("images", "thumbs")  # the only folders of the data dir the store writes and sweeps


def image_rel(digest: str) -> str:
    return f"images/{digest[:2]}/{digest}.png"


def thumb_rel(digest: str) -> str:
    return f"thumbs/{digest[:2]}/{digest}.webp"


def encode_thumbnail(arr: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """WebP, long side `side` (never upscaled); keeps alpha for RGBA."""
    from PIL import Image

    img = Image.fromarray(arr)
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=THUMB_QUALITY, method=4)
    return buf.getvalue()


def check_image(arr: np.ndarray, what: str, *, mask: bool = False) -> np.ndarray:
    from core.errors import InvalidOptionError

    arr = np.asarray(arr)
    if arr.dtype == bool:
        arr = np.where(arr, 255, 0).astype(np.uint8)
    ok_shape = arr.ndim == 2 if mask else (arr.ndim == 3 and arr.shape[2] in (3, 4))
    if arr.dtype != np.uint8 or not ok_shape or arr.size == 0:
        want = "HxW uint8" if mask else "HxWx3 (or HxWx4) uint8"
        raise InvalidOptionError(f"{what} must be a {want} array, got {arr.dtype} {arr.shape}")
    return np.ascontiguousarray(arr)


@dataclass
class Blob:
    """An image to be stored: its hash, relative paths, and how to (re)write the files."""

    arr: np.ndarray
    digest: str
    thumb: bool
    written: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return image_rel(self.digest)

    @property
    def thumb_path(self) -> Optional[str]:
        return thumb_rel(self.digest) if self.thumb else None

    @property
    def width(self) -> int:
        return int(self.arr.shape[1])

    @property
    def height(self) -> int:
        return int(self.arr.shape[0])


class BlobStore:
    def __init__(self, root: Path):
        self.root = Path(root)

    def abs(self, rel: str) -> Path:
        return self.root / rel

    def prepare(self, arr: np.ndarray, *, thumb: bool, digest: Optional[str] = None) -> Blob:
        """Hash `arr` (unless `digest` is given) and make sure its files exist on disk."""
        blob = Blob(arr, digest or content_hash(arr), thumb)
        self.ensure(blob)
        return blob

    def ensure(self, blob: Blob) -> None:
        """Write the blob's files that are missing; touch those that exist (sweep grace)."""
        self._put(blob.path, lambda: encode_png(blob.arr), blob)
        if blob.thumb:
            self._put(blob.thumb_path, lambda: encode_thumbnail(blob.arr), blob)

    def _put(self, rel: str, produce, blob: Blob) -> None:
        path = self.abs(rel)
        try:
            os.utime(path)
            return
        except FileNotFoundError:
            pass
        atomic_write_bytes(path, produce())
        blob.written.append(rel)

    def exists(self, rel: str) -> bool:
        return self.abs(rel).is_file()

    def remove(self, rel: str) -> int:
        """Delete one file; returns the bytes freed (0 if it was already gone)."""
        path = self.abs(rel)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return 0

    def walk(self):
        """Yield (rel, stat) for every file in the store's folders, temp files included."""
        for area in AREAS:
            base = self.root / area
            if not base.is_dir():
                continue
            for dirpath, _dirs, files in os.walk(base):
                for name in files:
                    full = os.path.join(dirpath, name)
                    try:
                        st = os.stat(full)
                    except FileNotFoundError:
                        continue
                    yield os.path.relpath(full, self.root).replace(os.sep, "/"), st


def digest_of(rel: str) -> Optional[str]:
    """The content hash a stored file is named after, or None for anything else (temp files)."""
    name = rel.rsplit("/", 1)[-1]
    stem, dot, ext = name.partition(".")
    if len(stem) == 64 and ext in ("png", "webp") and all(c in "0123456789abcdef" for c in stem):
        return stem
    return None
