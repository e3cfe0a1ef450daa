"""The image store's names and files: content-addressed paths (images/, thumbs/, refs/), the WebP
thumbnail, the checks an image passes before it is stored, and `Blob` (one image to store)."""
from __future__ import annotations

import io
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

THUMB_SIDE = 256
THUMB_QUALITY = 80
AREAS = ("images", "thumbs")  # the only folders of the data dir the store writes and sweeps
REFS = "refs"                 # refs/<store id>/ab/<digest>: claims
MARKER = ".store"             # refs/<store id>/.store: which database that id belongs to (JSON)


def image_rel(digest: str) -> str:
    return f"images/{digest[:2]}/{digest}.png"


def thumb_rel(digest: str) -> str:
    return f"thumbs/{digest[:2]}/{digest}.webp"


def claim_rel(digest: str, owner: str) -> str:
    return f"{REFS}/{owner}/{digest[:2]}/{digest}"


def marker_rel(owner: str) -> str:
    return f"{REFS}/{owner}/{MARKER}"


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
    """An image to store (HxWx3 or HxWx4 uint8) or a mask (HxW uint8 or bool -> 0/255), contiguous."""
    from core import arrays

    arr = arrays.mask(arr, what) if mask else arrays.image(arr, what, channels=(3, 4))
    return np.ascontiguousarray(arr)


def digest_of(rel: str) -> Optional[str]:
    """The content hash a stored file is named after, or None for anything else (temp files)."""
    name = rel.rsplit("/", 1)[-1]
    stem, dot, ext = name.partition(".")
    if len(stem) == 64 and ext in ("png", "webp") and all(c in "0123456789abcdef" for c in stem):
        return stem
    return None


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
