"""Content-addressed image files under the data dir, and which databases own them.

    images/ab/abcdef….png    full-size PNG (sources RGB, masks L, outputs RGB or RGBA)
    thumbs/ab/abcdef….webp   WebP thumbnail, long side THUMB_SIDE (sources and outputs)
    refs/<store id>/ab/abcdef…   an empty "claim": the database with that store id uses the image

The name is core.images.content_hash of the array (shape, dtype and bytes), so the same image is
stored once however many rows (and databases) use it. Files are written with
core.files.atomic_write_bytes BEFORE the row that points at them is committed.

Ownership: several databases may share one data dir (a copy, a test database, team servers). A
database only ever deletes an image through `release`: it drops its own claim, and the files go
only when no other database's claim is left. An image nobody claims (written by an older Backdrop,
or by another tool) is never deleted. Claiming and releasing take one lock (`refs/.lock`, flock),
so a writer that claims an image either sees it still there or rewrites it. A claim's mtime is
its last use: the sweep leaves claims younger than its grace period alone (a run in flight in
another process may be about to commit the row that uses it).
"""
from __future__ import annotations

import contextlib
import io
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator, Optional

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock still serialises threads
    fcntl = None

import numpy as np

from core.files import atomic_write_bytes
from core.images import content_hash, encode_png

THUMB_SIDE = 256
THUMB_QUALITY = 80
AREAS = ("images", "thumbs")  # the only folders of the data dir the store writes and sweeps
REFS = "refs"                 # refs/<store id>/ab/<digest>: claims
_thread_lock = threading.Lock()


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
    """An image to store (HxWx3 or HxWx4 uint8) or a mask (HxW uint8 or bool -> 0/255), contiguous."""
    from core import arrays

    arr = arrays.mask(arr, what) if mask else arrays.image(arr, what, channels=(3, 4))
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
    """The image files under `root`, as seen by the database whose store id is `owner`."""

    def __init__(self, root: Path, owner: str):
        self.root = Path(root)
        self.owner = owner

    def abs(self, rel: str) -> Path:
        return self.root / rel

    # -- claims ----------------------------------------------------------------------------------
    def _claim_path(self, digest: str, owner: Optional[str] = None) -> Path:
        return self.root / REFS / (owner or self.owner) / digest[:2] / digest

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        """Mutual exclusion for claim/check/unlink across threads and processes on this data dir."""
        lock_path = self.root / REFS / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock, open(lock_path, "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def _claim(self, digest: str) -> None:
        path = self._claim_path(digest)
        try:
            os.utime(path)
        except FileNotFoundError:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch()

    def claim(self, digests: Iterable[str]) -> None:
        """Record that this database uses these images (idempotent; refreshes the claim's age)."""
        with self._locked():
            for d in digests:
                self._claim(d)

    def claims(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime of the claim) for every image this database claims."""
        base = self.root / REFS / self.owner
        if not base.is_dir():
            return
        for dirpath, _dirs, files in os.walk(base):
            for name in files:
                if digest_of(name + ".png") is None:
                    continue
                try:
                    yield name, os.stat(os.path.join(dirpath, name)).st_mtime
                except FileNotFoundError:
                    continue

    def release(self, digests: Iterable[str], *, older_than: Optional[float] = None) -> tuple[int, int]:
        """Drop this database's claim on each digest (only claims last used before `older_than`, a
        time.time(), when given) and delete the image and thumbnail of those no other database
        claims. The caller has checked that no row of its database uses them. Returns (files
        deleted, bytes freed)."""
        removed = freed = 0
        with self._locked():
            refs = self.root / REFS
            others = [p for p in refs.iterdir() if p.is_dir() and p.name != self.owner] \
                if refs.is_dir() else []
            for digest in digests:
                claim = self._claim_path(digest)
                try:
                    if older_than is not None and claim.stat().st_mtime >= older_than:
                        continue                     # used again since the caller looked
                    claim.unlink()
                except FileNotFoundError:
                    pass
                if any((o / digest[:2] / digest).exists() for o in others):
                    continue                         # another database still uses it
                for rel in (image_rel(digest), thumb_rel(digest)):
                    size = self.remove(rel)
                    if size is not None:
                        removed += 1
                        freed += size
        return removed, freed

    # -- files -------------------------------------------------------------------------------------
    def prepare(self, arr: np.ndarray, *, thumb: bool, digest: Optional[str] = None) -> Blob:
        """Hash `arr` (unless `digest` is given), claim it and make sure its files exist on disk."""
        blob = Blob(arr, digest or content_hash(arr), thumb)
        self.ensure(blob)
        return blob

    def ensure(self, blob: Blob) -> None:
        """Claim the blob, then write its files that are missing (a file that exists is kept: the
        claim, taken under the lock, stops any other database from deleting it)."""
        wanted = [(blob.path, lambda: encode_png(blob.arr))]
        if blob.thumb:
            wanted.append((blob.thumb_path, lambda: encode_thumbnail(blob.arr)))
        with self._locked():
            self._claim(blob.digest)
            missing = [(rel, produce) for rel, produce in wanted if not self.abs(rel).is_file()]
        for rel, produce in missing:
            atomic_write_bytes(self.abs(rel), produce())
            blob.written.append(rel)

    def exists(self, rel: str) -> bool:
        return self.abs(rel).is_file()

    def remove(self, rel: str) -> Optional[int]:
        """Delete one file; returns the bytes freed, or None if it was already gone."""
        path = self.abs(rel)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return None

    def walk(self):
        """Yield (rel, stat) for every file in the store's image folders, temp files included."""
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
