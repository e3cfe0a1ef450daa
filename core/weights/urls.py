"""The resumable downloader for plain URLs (the SAM checkpoints): a partial file beside the target,
resumed with a Range request, locked against a second download, checked (size, SHA-256) and renamed
into place; never writes through a link or over a folder. Hub files go through huggingface_hub
(core/weights/hub.py)."""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import re
import stat
import threading
import urllib.error
import urllib.request
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

from core.errors import CancelledError, DownloadError
from core.files import resolve_target, short
from core.weights.messages import OFFLINE, HostUnreachableError, unreachable
from core.weights.registry import size_text

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock against two downloads of one file
    fcntl = None

ProgressFn = Callable[[int, int], None]
CancelFn = Union[threading.Event, Callable[[], bool]]


def cancelled(cancel: Optional[CancelFn]) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def partial_path(dst: str | os.PathLike) -> Path:
    """Where download_file keeps the bytes of an unfinished download of `dst`: a hidden file beside
    dst's target (symlinks followed), `.<name>.backdrop.part`. Only download_file writes it."""
    target = resolve_target(dst)
    return target.with_name(f".{target.name}.backdrop.part")


def _open_partial(part: Path, what: str) -> BinaryIO:
    """Our partial file, opened read/write (created empty if absent) and locked against a second
    download of the same file. Refuses anything at that name that is not a regular file."""
    refuse = DownloadError(f"cannot download {what}: {short(part)} exists and is not a regular file; "
                           "move it away and try again")
    try:
        st = part.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise refuse
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags, 0o666)
    except OSError as e:
        raise DownloadError(f"cannot download {what}: cannot open {short(part)}: {e.strerror}") from None
    f = os.fdopen(fd, "r+b")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refuse
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DownloadError(f"{what} is already being downloaded (another session or "
                                    "process); wait for it to finish") from None
        if (os.stat(part).st_ino, os.stat(part).st_dev) != (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
            raise DownloadError(f"another download of {what} finished meanwhile; try again")
    except BaseException:
        f.close()
        raise
    return f


def _content_range(value: Optional[str]) -> tuple[Optional[int], int]:
    """(first byte, full length) of a `Content-Range: bytes a-b/n` header; length 0 if `*`."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if m is None:
        return None, 0
    first = int(m.group(1)) if m.group(1) is not None else None
    return first, int(m.group(2)) if m.group(2) != "*" else 0


def _fetch(url: str, f: BinaryIO, h, have: int, *, progress, cancel, timeout: float, chunk: int,
           name: str):
    """Append the bytes after the first `have` of `url` to `f` (positioned at its end), updating
    `h`. Returns (have, total, h): total is the full length (0 when unknown); h is new when the
    server sent the whole file again."""
    headers = {"User-Agent": "backdrop"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:          # nothing after byte `have`: the partial is complete
            _, total = _content_range(e.headers.get("Content-Range"))
            e.close()
            return have, total, h
        raise
    with resp:
        length = int(resp.headers.get("Content-Length") or 0)
        if have and resp.status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first != have:
                raise DownloadError(f"the server resumed {name} at byte {first}, not {have}")
            total = total or (have + length if length else 0)
        else:                               # 200: the whole file (no partial, or no range support)
            if have:
                f.seek(0)
                f.truncate()
                h, have = hashlib.sha256(), 0
            total = length
        if progress:
            progress(have, total)
        while True:
            if cancelled(cancel):
                raise CancelledError(f"download of {name} cancelled; {_mb(have)} kept to resume"
                                     if have else f"download of {name} cancelled")
            buf = resp.read1(chunk)
            if not buf:
                break
            f.write(buf)
            h.update(buf)
            have += len(buf)
            if progress:
                progress(have, total)
    return have, total, h


def download_file(url: str, dst: str | os.PathLike, *, sha256: Optional[str] = None,
                  size: Optional[int] = None, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelFn] = None, timeout: float = 30.0,
                  chunk: int = 1 << 20) -> Path:
    """Stream `url` into `dst`, resumably and atomically.

    The bytes go to our partial file beside dst's target (`partial_path`). If one is there from an
    earlier try, it is resumed with `Range: bytes=N-`: a 206 is appended, a 200 (no range support)
    starts over, a 416 means nothing is missing. With every byte in, the whole file's length
    (Content-Length/Content-Range, and `size`) and SHA-256 (`sha256`) are checked, then it is
    fsynced and renamed over dst. An interrupted download keeps the partial for the next call; a
    checksum or size mismatch deletes it. `cancel` (threading.Event or callable returning bool) is
    checked between chunks and raises CancelledError; anything else raises DownloadError (one line).
    Nothing appears at dst until the file is complete and verified."""
    target = resolve_target(dst)       # a folder/device at dst: InvalidOptionError
    dst = Path(dst)
    what = f"{dst.name} ({size_text(size or 0)}) from {url}"
    part = partial_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open_partial(part, what) as f:
        keep = True
        try:
            h = hashlib.sha256()
            while True:                # the bytes already there are part of the checksum
                if cancelled(cancel):
                    raise CancelledError(f"download of {dst.name} cancelled")
                buf = f.read(chunk)
                if not buf:
                    break
                h.update(buf)
            have, total = f.tell(), 0
            if not (size and have >= size):
                try:
                    have, total, h = _fetch(url, f, h, have, progress=progress, cancel=cancel,
                                            timeout=timeout, chunk=chunk, name=dst.name)
                except urllib.error.HTTPError as e:
                    raise DownloadError(f"could not download {what}: HTTP {e.code} {e.reason}"
                                        + _kept(f.tell())) from None
                except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                    if unreachable(e):
                        raise HostUnreachableError(f"{OFFLINE} {what}: to install it by hand, save "
                                                   f"it as {dst}" + _kept(f.tell())) from None
                    reason = getattr(e, "reason", None) or e
                    reason = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
                    raise DownloadError(f"could not download {what}: {short(reason, 120)} (to "
                                        f"install it by hand, save it as {dst})" + _kept(f.tell())) from None
            if size and total and total != size:
                keep = False
                raise DownloadError(f"the server's {dst.name} has {total} bytes, expected {size}: "
                                    "not the file asked for; the partial download was deleted")
            expected = size or total
            if expected and have < expected:
                raise DownloadError(f"download of {what} was interrupted: got {have} of {expected} "
                                    f"bytes" + _kept(have))
            if expected and have > expected:
                keep = False
                raise DownloadError(f"download of {what} has the wrong size: {have} bytes, expected "
                                    f"{expected}; the partial download was deleted")
            if sha256 and h.hexdigest() != sha256.lower():
                keep = False
                raise DownloadError(f"checksum mismatch for {what}: got sha256 {h.hexdigest()[:12]}…, "
                                    f"expected {sha256[:12]}…; the partial download was deleted")
            f.flush()
            os.fsync(f.fileno())
            existing = resolve_target(target)   # still not a folder/device that appeared meanwhile
            if existing.exists():               # replacing a file keeps its mode
                os.fchmod(f.fileno(), stat.S_IMODE(existing.stat().st_mode))
            os.replace(part, target)
        except BaseException:
            with contextlib.suppress(OSError):
                if not keep or os.fstat(f.fileno()).st_size == 0:
                    part.unlink()
            raise
    return dst


def _kept(n: int) -> str:
    return f"; {_mb(n)} kept, run again to resume" if n else ""
