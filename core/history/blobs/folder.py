"""The image store in a folder (the data dir by default): files written whole (temp file + rename),
claims and releases serialised by one lock (refs/.lock, flock)."""
from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock still serialises threads
    fcntl = None


from core.files import _make_dirs, atomic_write_bytes, fsync_dir, is_stale_temp
from core.history.blobs.names import REFS

_thread_lock = threading.Lock()


class FolderBackend:
    """The files in a folder (the data dir by default): exactly the layout Backdrop always had."""

    kind = "folder"

    def __init__(self, root: Union[str, os.PathLike]):
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def abs(self, rel: str) -> Path:
        return self.root / rel

    def ref(self, rel: str) -> Path:
        """What records show for a stored file: its absolute path."""
        return self.root / rel

    def rel_of(self, ref: Union[str, os.PathLike]) -> Optional[str]:
        try:
            return Path(ref).relative_to(self.root).as_posix()
        except ValueError:
            return None

    def exists(self, rel: str) -> bool:
        return self.abs(rel).is_file()

    def read(self, rel: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is not there."""
        return self.abs(rel).read_bytes()

    def put(self, rel: str, data: bytes, *, once: bool = False) -> bool:
        """Write the whole file atomically (temp file + rename). Returns True (written)."""
        atomic_write_bytes(self.abs(rel), data)
        return True

    def remove(self, rel: str) -> Optional[int]:
        """Delete one file; returns the bytes freed, or None if it was already gone."""
        path = self.abs(rel)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return None

    def mtime(self, rel: str) -> Optional[float]:
        try:
            return self.abs(rel).stat().st_mtime
        except FileNotFoundError:
            return None

    def touch(self, rel: str) -> list[Path]:
        """Create an empty file, or bring its mtime to now. Returns the folders whose entries
        changed (to fsync with `sync`): none when the file was there."""
        path = self.abs(rel)
        try:
            os.utime(path)
            return []
        except FileNotFoundError:
            made = _make_dirs(path.parent)
            path.touch()
            return [path.parent, *(d.parent for d in made)]

    @staticmethod
    def sync(folders) -> None:
        """Make new files in `folders` durable (a claim lost in a power cut would let another
        database delete an image this one uses)."""
        for folder in dict.fromkeys(folders):
            fsync_dir(folder)

    def files(self, folder: str) -> Iterator[tuple[str, float, int]]:
        """(rel, mtime, size) of every file under `folder`, temp files included."""
        base = self.root / folder
        if not base.is_dir():
            return
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield os.path.relpath(full, self.root).replace(os.sep, "/"), st.st_mtime, st.st_size

    def prune(self, folder: str) -> None:
        """Remove `folder` and the folders under it that are empty (S3 has no folders)."""
        base = self.root / folder
        for dirpath, _dirs, _names in sorted(os.walk(base), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)

    def children(self, folder: str) -> list[str]:
        """Names of the folders directly under `folder`."""
        base = self.root / folder
        return [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Mutual exclusion for claim/check/unlink across threads and processes on this folder."""
        lock_path = self.root / REFS / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock, open(lock_path, "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def stale_temp(self, rel: str, mtime: float, grace_s: float, cutoff: float) -> bool:
        """Whether `rel` (not a content-addressed name) is a temp file left by a dead writer."""
        name = rel.rsplit("/", 1)[-1]
        legacy = name.startswith(".") and name.endswith(".tmp") and mtime < cutoff
        return legacy or is_stale_temp(self.abs(rel), max_age_s=grace_s)

    def read_many(self, rels: list[str]) -> list[Optional[bytes]]:
        out = []
        for rel in rels:
            try:
                out.append(self.read(rel))
            except OSError:
                out.append(None)
        return out
