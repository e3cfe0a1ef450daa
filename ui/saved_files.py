"""Where the work kept for a reload lies (ui.saved), and its clean-up: `<data dir>/sessions/<id>.json`
for a page's work, `sessions/photos/<hash>.png` for its photo and `sessions/masks/<digest>.png` for
the subject found. A name comes only from a checked id, hash or digest (never from what a page
sends as it is); files not written for KEEP_DAYS are deleted, at most once an hour per process.
"""
from __future__ import annotations

import logging
import os
import re
import secrets
import stat
import threading
import time
from pathlib import Path
from typing import Any, Optional

from core import config

log = logging.getLogger("ui.saved")       # (one logger for the saved work)

KEEP_DAYS = 7
PRUNE_EVERY_S = 3600.0

_ID = re.compile(r"[0-9a-f]{32}")
_HASH = re.compile(r"[0-9a-f]{64}")
_SESSION_FILE = re.compile(r"[0-9a-f]{32}\.json")
_PNG_FILE = re.compile(r"[0-9a-f]{64}\.png")

_pruned_at: Optional[float] = None
_prune_lock = threading.Lock()


def folder() -> Path:
    return config.data_dir() / "sessions"


def valid_id(text: Any) -> bool:
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def new_id() -> str:
    return secrets.token_hex(16)


def session_file(session_id: str) -> Path:
    if not valid_id(session_id):
        raise ValueError("not a session id")
    return folder() / f"{session_id}.json"


def photo_file(photo_hash: str) -> Path:
    return _png_file("photos", photo_hash, "not a photo hash")


def mask_file(digest: str) -> Path:
    return _png_file("masks", digest, "not a mask digest")


def _png_file(where: str, digest: Any, what: str) -> Path:
    """sessions/<where>/<digest>.png for a sha256 hex digest; ValueError(what) for anything else."""
    if not (isinstance(digest, str) and _HASH.fullmatch(digest)):
        raise ValueError(what)
    return folder() / where / f"{digest}.png"


def prune(now: Optional[float] = None, keep_days: float = KEEP_DAYS) -> int:
    """Delete the session files, photos and found masks not written for `keep_days`; only regular
    files whose names this module makes, in its own folders. Returns how many were deleted."""
    now = time.time() if now is None else now
    limit = now - keep_days * 86400
    removed = 0
    for where, pattern in ((folder(), _SESSION_FILE), (folder() / "photos", _PNG_FILE),
                           (folder() / "masks", _PNG_FILE)):
        try:
            names = os.listdir(where)
        except OSError:
            continue
        for name in names:
            if not pattern.fullmatch(name):
                continue
            path = where / name
            try:
                st = path.lstat()
                if stat.S_ISREG(st.st_mode) and st.st_mtime < limit:
                    path.unlink()
                    removed += 1
            except OSError:
                continue
    return removed


def prune_now_and_then() -> None:
    """prune(), at most once an hour per server process."""
    global _pruned_at
    with _prune_lock:
        if _pruned_at is not None and time.monotonic() - _pruned_at < PRUNE_EVERY_S:
            return
        _pruned_at = time.monotonic()
    try:
        n = prune()
        if n:
            log.info("deleted %d saved-work files older than %d days", n, KEEP_DAYS)
    except Exception:
        log.warning("deleting old saved work failed", exc_info=True)
