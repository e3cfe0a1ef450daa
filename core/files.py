"""Writing files without losing anything: atomic replacement, output-path checks, our temp files.

    atomic_writer(path)      temp file beside the target, fsync, rename over it, fsync the folder
                             (so the rename survives a power cut). The target is
                             resolved first (a symlink is followed: the file it points to is
                             replaced and the link stays); an existing target that is not a regular
                             file (directory, device, FIFO, socket) is refused, never replaced. A new
                             file gets the umask's mode (0666 & ~umask), an existing one keeps its own.
    check_output(path, ...)  the same checks up front, plus "this is one of the inputs" (refused
                             unless overwrite) and "this is the history's own storage" (always
                             refused), so a command fails before doing any work.

Temp files are named `.<target name>.backdrop-<host>-<pid>-<random>.tmp`: they are removed on any
error, and one left by a killed process (same host, process gone; or older than a day) is removed
by the next write to the same target. Nothing else is ever deleted.
"""
from __future__ import annotations

import contextlib
import os
import re
import secrets
import socket
import stat
import time
from pathlib import Path
from typing import BinaryIO, Iterable, Iterator, Optional

from core.errors import InvalidOptionError

HOST = re.sub(r"[^A-Za-z0-9_.]", "_", socket.gethostname())[:64] or "host"
_TEMP = re.compile(r"\.backdrop-(?P<host>[A-Za-z0-9_.]+)-(?P<pid>\d+)-[0-9a-f]{8}(?P<suffix>\.[a-z]+)$")
FOREIGN_TEMP_AGE_S = 24 * 3600.0   # a temp file from another host is only presumed dead this old

_KINDS = ((stat.S_ISDIR, "a folder"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"),
          (stat.S_ISFIFO, "a pipe (FIFO)"), (stat.S_ISSOCK, "a socket"))


def short(text: object, limit: int = 60) -> str:
    """`text` for a one-line message: control characters escaped, at most `limit` characters."""
    s = terminal_safe(str(text))
    return s if len(s) <= limit else s[:limit - 1] + "…"


_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")


def terminal_safe(text: str) -> str:
    """`text` with control characters (C0, DEL, C1), line/paragraph separators and bidi overrides
    written as escapes (\\n, \\x1b, \\u202e), so printing it cannot move the cursor, recolour,
    clear or reorder a terminal."""
    def esc(m: re.Match) -> str:
        c = m.group(0)
        return {"\n": "\\n", "\r": "\\r", "\t": "\\t"}.get(c) or (
            f"\\x{ord(c):02x}" if ord(c) < 0x100 else f"\\u{ord(c):04x}")
    return _UNSAFE.sub(esc, text)


def _kind(mode: int) -> Optional[str]:
    for test, name in _KINDS:
        if test(mode):
            return name
    return None if stat.S_ISREG(mode) else "not a regular file"


def resolve_target(path: str | os.PathLike) -> Path:
    """The file a write to `path` will replace: symlinks followed (also a dangling one: its target
    is created). Raises InvalidOptionError if that exists and is not a regular file; OSError if
    it cannot be looked at (a parent that is a file)."""
    p = Path(path)
    target = Path(os.path.realpath(p))
    try:
        st = target.stat()
    except FileNotFoundError:
        return target
    kind = _kind(st.st_mode)
    if kind is not None:
        raise InvalidOptionError(f"{short(p)} is {kind}, not a regular file: choose a file path "
                                 "to write to")
    return target


def check_output(path: str | os.PathLike, *, inputs: Iterable[str | os.PathLike] = (),
                 protected: Iterable[str | os.PathLike] = (), overwrite: bool = False) -> Path:
    """Check before any work that `path` can take an output; returns the file it will replace.

    inputs: files the command reads; writing over one is refused unless `overwrite` (same file
    also through links or another name). protected: files or folders that are never written over
    (the history database and image store)."""
    try:
        target = resolve_target(path)
    except OSError as e:
        raise InvalidOptionError(f"cannot write {short(path)}: {e.strerror or e}") from e
    st = _stat(target)
    for inp in inputs:
        if inp is None:
            continue
        ist = _stat(Path(inp))
        if st is not None and ist is not None and (st.st_dev, st.st_ino) == (ist.st_dev, ist.st_ino):
            if not overwrite:
                raise InvalidOptionError(f"{short(path)} is the input {short(inp)}: choose another "
                                         "output path (or pass --overwrite to replace it)")
    for prot in protected:
        prot = Path(os.path.realpath(prot))
        if target == prot or prot in target.parents:
            raise InvalidOptionError(f"{short(path)} is inside Backdrop's history storage "
                                     f"({short(prot)}): choose another output path")
    return target


def _stat(path: Path) -> Optional[os.stat_result]:
    try:
        return path.stat()
    except OSError:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:   # a killed child not yet reaped by its parent is a zombie: dead for our purposes
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return True


def is_stale_temp(path: Path, *, max_age_s: float = FOREIGN_TEMP_AGE_S) -> bool:
    """Whether `path` is a temp file of ours whose writer is gone: named by `atomic_writer`, a
    regular file, and either written on this host by a process that no longer exists, or older
    than `max_age_s`."""
    m = _TEMP.search(path.name)
    if m is None:
        return False
    try:
        st = path.lstat()
    except OSError:
        return False
    if not stat.S_ISREG(st.st_mode):
        return False
    if time.time() - st.st_mtime > max_age_s:
        return True
    return m.group("host") == HOST and not pid_alive(int(m.group("pid")))


def _remove_stale_temps(target: Path, suffix: str) -> None:
    prefix = f".{target.name}.backdrop-"
    try:
        names = [n for n in os.listdir(target.parent) if n.startswith(prefix) and n.endswith(suffix)]
    except OSError:
        return
    for name in names:
        p = target.parent / name
        if _TEMP.fullmatch(name[len(f".{target.name}"):]) and is_stale_temp(p):
            with contextlib.suppress(OSError):
                p.unlink()


@contextlib.contextmanager
def atomic_writer(path: str | os.PathLike, *, suffix: str = ".tmp") -> Iterator[BinaryIO]:
    """Yield a binary file beside `path`'s target; when the block ends normally it is fsynced and
    renamed over the target, so a reader never sees a partial file. On any error (or interrupt) it
    is deleted. See the module docstring for symlinks, non-regular files and modes."""
    target = resolve_target(path)
    created = _make_dirs(target.parent)
    _remove_stale_temps(target, suffix)
    existing = _stat(target)
    tmp = target.parent / f".{target.name}.backdrop-{HOST}-{os.getpid()}-{secrets.token_hex(4)}{suffix}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_CLOEXEC", 0), 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            if existing is not None:   # replacing a file keeps its mode; a new one has the umask's
                os.fchmod(f.fileno(), stat.S_IMODE(existing.st_mode))
            yield f
            f.flush()
            os.fsync(f.fileno())
        resolve_target(target)   # still not a folder / device / FIFO that appeared meanwhile
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    # The rename is only durable once the folder is: fsync it (and the parent of every folder made
    # above), as SQLite does for its journal, so a power cut cannot lose a file history lists.
    for folder in [target.parent, *(d.parent for d in created)]:
        fsync_dir(folder)


def _make_dirs(folder: Path) -> list[Path]:
    """mkdir -p `folder`; returns the folders it created, deepest first."""
    missing = []
    p = folder
    while not p.is_dir() and p.parent != p:
        missing.append(p)
        p = p.parent
    folder.mkdir(parents=True, exist_ok=True)
    return missing


def fsync_dir(folder: str | os.PathLike) -> None:
    """Make a folder's entries (a rename, a new file or folder in it) durable: fsync the folder
    itself. Skipped where folders cannot be opened or synced (Windows, some network filesystems)."""
    flags = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(folder, flags)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write `data` to `path` atomically (see atomic_writer); returns the path."""
    with atomic_writer(path) as f:
        f.write(data)
    return Path(path)
