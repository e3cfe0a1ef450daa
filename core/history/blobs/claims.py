"""`BlobStore`: the image files as one database sees them (its store id, `owner`): claims on the
images it uses, releases that delete only what no other database claims, the marker naming the
database, and the files themselves; `open_backend` picks the folder or the S3 bucket."""
from __future__ import annotations

import contextlib
import json
import os
import time
import urllib.parse
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

import numpy as np

from core.errors import HistoryError, InvalidOptionError
from core.history.blobs.folder import FolderBackend
from core.history.blobs.names import (AREAS, MARKER, REFS, Blob, claim_rel, digest_of, encode_thumbnail,
                                     image_rel, marker_rel, thumb_rel)
from core.history.blobs.s3 import S3Backend
from core.images import content_hash, encode_png

Backend = Union[FolderBackend, S3Backend]


def open_backend(url: Optional[str], data_dir: Union[str, os.PathLike]) -> Backend:
    """The image store for BACKDROP_BLOB_URL `url`: unset -> the data dir; a path or file:// URL
    -> that folder; s3://bucket/prefix -> S3Backend."""
    url = (url or "").strip()
    if not url:
        return FolderBackend(Path(data_dir))
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "s3":
        return S3Backend(url)
    if scheme == "file":
        return FolderBackend(Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)))
    if scheme and len(scheme) > 1:      # (a Windows drive letter is not a scheme)
        raise InvalidOptionError(f"BACKDROP_BLOB_URL {url!r}: expected a folder, file:///folder or "
                                 "s3://bucket/prefix")
    return FolderBackend(Path(url).expanduser().resolve())


# ------------------------------------------------------------------------------------- store --
class BlobStore:
    """The image files in `backend` (a FolderBackend, an S3Backend, or a folder path), as seen by
    the database whose store id is `owner`."""

    def __init__(self, backend: Union[Backend, str, os.PathLike], owner: str):
        self.backend = backend if isinstance(backend, (FolderBackend, S3Backend)) \
            else FolderBackend(Path(backend))
        self.owner = owner

    @property
    def root(self) -> Optional[Path]:
        """The folder, or None on S3."""
        return getattr(self.backend, "root", None)

    @property
    def location(self) -> str:
        return self.backend.location

    def abs(self, rel: str) -> Path:
        """The file's path (folders only; HistoryError on S3: use read)."""
        return self.backend.abs(rel)

    def ref(self, rel: str) -> Union[Path, str]:
        """What records show for a stored file: an absolute Path (folder) or an s3:// URL."""
        return self.backend.ref(rel)

    def rel_of(self, ref: Union[str, os.PathLike]) -> str:
        """The store-relative name of a record's path (or of a relative name); HistoryError if
        it is not one of the store's files."""
        rel = self.backend.rel_of(ref)
        if rel is None:
            s = str(ref).replace(os.sep, "/")
            if s.startswith(AREAS) and digest_of(s):
                rel = s
            else:                       # the data dir moved, or a record of another store
                digest = digest_of(s)
                if digest is None:
                    raise HistoryError(f"{Path(s).name} is not a history image")
                rel = thumb_rel(digest) if s.endswith(".webp") else image_rel(digest)
        return rel

    # -- claims ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.backend.lock():
            yield

    def _claim(self, digest: str) -> list:
        return self.backend.touch(claim_rel(digest, self.owner))

    def claim(self, digests: Iterable[str]) -> None:
        """Record that this database uses these images (idempotent; refreshes the claim's age);
        the new claims are on disk (fsynced) when it returns."""
        with self._locked():
            changed = []
            for d in digests:
                changed += self._claim(d)
            self.backend.sync(changed)

    def claims(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime of the claim) for every image this database claims."""
        for rel, mtime, _size in self.backend.files(f"{REFS}/{self.owner}"):
            name = rel.rsplit("/", 1)[-1]
            if digest_of(name + ".png") is not None:
                yield name, mtime

    def release(self, digests: Iterable[str], *, older_than: Optional[float] = None,
                deadline: Optional[float] = None) -> tuple[int, int]:
        """Drop this database's claim on each digest (only claims last used before `older_than`, a
        time.time(), when given) and delete the image and thumbnail of those no other database
        claims. The caller has checked that no row of its database uses them. Stops (keeping the
        rest claimed, for a later sweep) once time.time() passes `deadline`. Returns (files
        deleted, bytes freed)."""
        removed = freed = 0
        with self._locked():
            others = [o for o in self.backend.children(REFS) if o != self.owner]
            for digest in digests:
                if deadline is not None and time.time() > deadline:
                    break
                claim = claim_rel(digest, self.owner)
                if older_than is not None:
                    mtime = self.backend.mtime(claim)
                    if mtime is not None and mtime >= older_than:
                        continue                     # used again since the caller looked
                self.backend.remove(claim)
                if any(self.backend.exists(claim_rel(digest, o)) for o in others):
                    continue                         # another database still uses it
                for rel in (image_rel(digest), thumb_rel(digest)):
                    size = self.backend.remove(rel)
                    if size is not None:
                        removed += 1
                        freed += size
        return removed, freed

    def drop_claims(self) -> None:
        """Remove every file under refs/<owner>/ (its claims and marker) and nothing else: for an
        id given up before any database used it, or released by forget."""
        with self._locked():
            for rel, _mtime, _size in list(self.backend.files(f"{REFS}/{self.owner}")):
                self.backend.remove(rel)
            if isinstance(self.backend, FolderBackend):
                self.backend.prune(f"{REFS}/{self.owner}")

    def write_marker(self, info: dict) -> None:
        """Record (refs/<owner>/.store) which database this store id belongs to."""
        self.backend.put(marker_rel(self.owner), json.dumps(info, sort_keys=True).encode())

    def read_marker(self, owner: Optional[str] = None) -> Optional[dict]:
        try:
            data = self.backend.read(marker_rel(owner or self.owner))
        except FileNotFoundError:
            return None
        try:
            info = json.loads(data)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def owners(self) -> dict[str, dict]:
        """Every store id with claims or a marker here: {id: {"claims": n, "last_used": the newest
        claim's or marker's mtime, "marker": bool}}."""
        out: dict[str, dict] = {}
        for rel, mtime, _size in self.backend.files(REFS):
            parts = rel.split("/")
            if len(parts) < 3:
                continue
            entry = out.setdefault(parts[1], {"claims": 0, "last_used": 0.0, "marker": False})
            if len(parts) == 3 and parts[2] == MARKER:
                entry["marker"] = True
            elif len(parts) == 4 and digest_of(parts[3] + ".png") is not None:
                entry["claims"] += 1
            else:
                continue
            entry["last_used"] = max(entry["last_used"], mtime)
        return out

    # -- files -------------------------------------------------------------------------------------
    def prepare(self, arr: np.ndarray, *, thumb: bool, digest: Optional[str] = None) -> Blob:
        """Hash `arr` (unless `digest` is given), claim it and make sure its files are stored."""
        blob = Blob(arr, digest or content_hash(arr), thumb)
        self.ensure(blob)
        return blob

    def ensure(self, blob: Blob) -> None:
        """Claim the blob, then write its files that are missing (a file that exists is kept: the
        claim, taken under the lock, stops any other database from deleting it)."""
        wanted: list[tuple[str, Callable[[], bytes]]] = [(blob.path, lambda: encode_png(blob.arr))]
        if blob.thumb:
            wanted.append((blob.thumb_path, lambda: encode_thumbnail(blob.arr)))
        with self._locked():
            self.backend.sync(self._claim(blob.digest))
            missing = [(rel, produce) for rel, produce in wanted if not self.backend.exists(rel)]
        for rel, produce in missing:
            if self.backend.put(rel, produce(), once=True):
                blob.written.append(rel)

    def exists(self, rel: str) -> bool:
        return self.backend.exists(rel)

    def read(self, rel: str) -> bytes:
        """A stored file's bytes; FileNotFoundError when it is missing (HistoryError: unreadable)."""
        return self.backend.read(rel)

    def read_many(self, rels: list[str]) -> list[Optional[bytes]]:
        """Several files (concurrently on S3); None for each one missing or unreadable."""
        return self.backend.read_many(rels)

    def write(self, rel: str, data: bytes) -> None:
        """Store a whole file (atomically) under `rel`."""
        self.backend.put(rel, data)

    def remove(self, rel: str) -> Optional[int]:
        """Delete one file; returns the bytes freed, or None if it was already gone."""
        return self.backend.remove(rel)

    def walk(self) -> Iterator[tuple[str, float, int]]:
        """(rel, mtime, size) of every file in the store's image folders, temp files included."""
        for area in AREAS:
            yield from self.backend.files(area)

    def stale_temp(self, rel: str, mtime: float, grace_s: float, cutoff: float) -> bool:
        """Whether a file of walk() that is not content-addressed is our temp file left by a dead
        writer (never on S3: uploads are whole objects)."""
        return self.backend.stale_temp(rel, mtime, grace_s, cutoff)
