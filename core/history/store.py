"""The history store: one database (runs, sources, masks, outputs) + content-addressed image files.

See core/history/__init__.py for the public API and an example. HistoryStore is assembled from
one file per job: writes.py (record runs, favourites, delete), queries.py (read, search, compare),
sweep.py (crash recovery); this file holds what they share: opening, identity, sessions, errors.
Every method opens its own session (safe to share one store between threads).
"""
from __future__ import annotations

import os
import sqlite3
import threading
import urllib.parse
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import config
from core.errors import BackdropError, HistoryError
from core.history import db
from core.history.blobs import BlobStore, open_backend
from core.history.models import Mask, Output, Source, StoreInfo
from core.history.queries import Queries
from core.history.sweep import INTERRUPTED, STALE_RUNNING_S, SWEEP_GRACE_S, Sweep  # noqa: F401
from core.history.writes import Writes

# Test hook: called with the operation name after files are written and rows are flushed, just
# before COMMIT (the crash tests sleep here and get SIGKILLed). Never set in production.
_before_commit_hook: Optional[Callable[[str], None]] = None


def _is_copy(old_location: str, store_id: str) -> bool:
    """Whether the SQLite file at `old_location` still exists and holds `store_id` (so a database
    with that id found elsewhere is a copy of it). Unreadable counts as yes: the safe side."""
    if not old_location.startswith("sqlite:"):
        return False
    path = old_location[len("sqlite:"):]
    if not os.path.isfile(path):
        return False
    try:
        con = sqlite3.connect(f"file:{urllib.parse.quote(path)}?mode=ro", uri=True, timeout=5)
        try:
            row = con.execute("SELECT value FROM store_info WHERE key = 'store_id'").fetchone()
        finally:
            con.close()
    except sqlite3.Error:
        return True
    return row is not None and row[0] == store_id


# -------------------------------------------------------------------------------------- store --
class HistoryStore(Writes, Queries, Sweep):
    """History of runs in one database (`url`) with image files under `data_dir`, or in the image
    store `blob_url` (default config.blob_url(): BACKDROP_BLOB_URL; empty = the data dir)."""

    def __init__(self, url: Optional[str] = None, data_dir: Optional[Path] = None,
                 blob_url: Optional[str] = None):
        self.url = url or config.database_url()
        self.data_dir = Path(data_dir) if data_dir is not None else config.data_dir()
        self.blob_url = config.blob_url() if blob_url is None else blob_url
        self._backend = open_backend(self.blob_url, self.data_dir)
        self.engine = db.get_engine(self.url)
        self._writer = db.write_engine(self.engine)
        db.ensure_schema(self.engine)
        self.store_id = self._identify()
        self.blobs = BlobStore(self._backend, self.store_id)
        self.swept = False            # open_store: whether this process has swept files yet

    def __repr__(self) -> str:
        extra = f", blob_url={self._backend.location!r}" if self.blob_url else ""
        return f"HistoryStore({self.engine.url!r}, data_dir={str(self.data_dir)!r}{extra})"

    # -- stored files --------------------------------------------------------------------------
    def read_file(self, path: Union[str, os.PathLike]) -> bytes:
        """The bytes of a stored image: a record's path/thumb_path (an absolute path, or an s3://
        URL when the images are in S3) or a store-relative name (images/ab/<hash>.png).
        HistoryError (one line) when it is missing or cannot be read."""
        with self._errors():
            rel = self.blobs.rel_of(path)
            try:
                return self.blobs.read(rel)
            except FileNotFoundError as e:
                raise HistoryError(f"a history image is missing ({rel.rsplit('/', 1)[-1]}): "
                                   f"{e.strerror or 'not in the image store'}") from e

    def has_file(self, path: Union[str, os.PathLike]) -> bool:
        """Whether a stored image (as for read_file) is there; HistoryError if the store cannot
        be asked."""
        with self._errors():
            return self.blobs.exists(self.blobs.rel_of(path))

    def read_files(self, paths: Sequence[Union[str, os.PathLike, None]]) -> list[Optional[bytes]]:
        """Several stored images at once (concurrently on S3), None for each one missing or
        unreadable (or None given): for grids of thumbnails."""
        def rel(p) -> Optional[str]:
            try:
                return self.blobs.rel_of(p) if p is not None else None
            except HistoryError:
                return None
        rels = [rel(p) for p in paths]
        wanted = list(dict.fromkeys(r for r in rels if r is not None))
        try:
            got = dict(zip(wanted, self.blobs.read_many(wanted)))
        except HistoryError:
            return [None] * len(rels)
        return [got.get(r) if r is not None else None for r in rels]

    # -- identity ------------------------------------------------------------------------------
    def _location(self) -> str:
        """Where this database lives: the real path of an SQLite file, otherwise the URL (password
        hidden). An in-memory database has no lasting location."""
        url = self.engine.url
        if db.is_sqlite(self.engine):
            if db.sqlite_memory(url):
                return ""
            return "sqlite:" + os.path.realpath(os.path.expanduser(url.database))
        return url.render_as_string(hide_password=True)

    def _identify(self) -> str:
        """This database's store id, the owner of its claims in the data dir.

        Created on first open (a database from before revision 0003 then claims every image its
        rows use). A database found at another location than it was last opened at is a copy if
        the SQLite file at the old location still holds the same id: the copy gets an id of its own
        and claims its images again, so deleting runs in either never takes the other's images."""
        loc = self._location()
        with self._read() as session:
            info = {r.key: r.value for r in session.scalars(select(StoreInfo))}
        sid, old = info.get("store_id"), info.get("location")
        if sid and old == loc:
            return sid
        with self._write() as session:
            info = {r.key: r for r in session.scalars(select(StoreInfo))}
            row, seen = info.get("store_id"), info.get("location")
            if row is not None and (seen is None or seen.value == loc
                                    or not _is_copy(seen.value, row.value)):
                session.merge(StoreInfo(key="location", value=loc))   # moved: the same database
                return row.value
            sid = uuid.uuid4().hex
            session.merge(StoreInfo(key="store_id", value=sid))
            session.merge(StoreInfo(key="location", value=loc))
            digests = set()
            for model in (Source, Mask, Output):
                digests.update(session.scalars(select(model.hash)))
            if digests:
                with self._errors():
                    BlobStore(self._backend, sid).claim(sorted(digests))
            return sid

    # -- sessions ------------------------------------------------------------------------------
    @contextmanager
    def _read(self) -> Iterator[Session]:
        with self._errors(), Session(self.engine, expire_on_commit=False) as session:
            with session.begin():
                yield session

    @contextmanager
    def _write(self) -> Iterator[Session]:
        with self._errors(), Session(self._writer, expire_on_commit=False) as session:
            with session.begin():
                # Take the write lock now (BEGIN IMMEDIATE / the advisory lock), not at the first
                # query: callers re-check their files (_ensure) first thing, under the lock.
                session.connection()
                yield session

    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except BackdropError:
            raise
        except SQLAlchemyError as e:
            orig = getattr(e, "orig", None) or e
            msg = str(orig).splitlines()[0] if str(orig) else type(orig).__name__
            if "locked" in msg or "busy" in msg or "lock timeout" in msg:
                raise HistoryError("the history database is busy (locked by another process "
                                   "for too long); try again") from e
            raise HistoryError(f"history database error: {msg}") from e
        except OSError as e:
            raise HistoryError(f"cannot write history files under {self._backend.location}: "
                               f"{e.strerror or e}") from e

    def _hook(self, op: str) -> None:
        if _before_commit_hook is not None:
            _before_commit_hook(op)

# ------------------------------------------------------------------------------------ opening --
_stores: dict[tuple[int, str, str, str], HistoryStore] = {}
_stores_lock = threading.Lock()


def open_store(url: Optional[str] = None, data_dir: Optional[Path] = None, *,
               sweep: bool = False, blob_url: Optional[str] = None) -> HistoryStore:
    """The store for `url` (default config.database_url()), `data_dir` (default
    config.data_dir()) and image store `blob_url` (default config.blob_url()), migrated to the
    newest schema. The first open in a process marks runs of dead processes failed
    (recover_runs); with sweep=True (what writers and the app server pass) it also deletes this
    database's unused files (sweep()). Read-only callers never delete. Later opens return the
    same object."""
    url = url or config.database_url()
    root = str(Path(data_dir) if data_dir is not None else config.data_dir())
    blob_url = config.blob_url() if blob_url is None else blob_url
    key = (os.getpid(), url, root, blob_url)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = HistoryStore(url, Path(root), blob_url)
            store.sweep() if sweep else store.recover_runs()
            store.swept = sweep
            _stores[key] = store
        elif sweep and not store.swept:
            store.sweep()
            store.swept = True
        return store

