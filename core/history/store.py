"""The history store: one database (runs, sources, masks, outputs) + content-addressed image files.

See core/history/__init__.py for the public API and an example. HistoryStore is composed of one
part per job, each given what it needs when it is made: database (sessions.py: sessions, error
lines), deletions (deletions.py: announced file deletions), writes (writes.py: record runs,
favourites, delete), queries (queries.py: read, search, compare), cleanup (sweep.py: crash
recovery). Its methods hand over to those parts; this file holds opening and identity.
Every method opens its own session (safe to share one store between threads).
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import uuid
from pathlib import Path
from typing import Any, Callable, ContextManager, Optional, Sequence, Union

from sqlalchemy import select
from sqlalchemy.orm import Session

from core import config
from core.errors import HistoryError
from core.history import db, identity
from core.history.blobs import BlobStore, open_backend
from core.history.deletions import (DELETE_WINDOW_S, DELETING, DELETION_GEN,  # noqa: F401
                                    DeletionBusy, Deletions, FilesMayBeGone)
from core.history.models import Mask, Output, Source, StoreInfo
from core.history.queries import Queries
from core.history.sessions import Database
from core.history.sweep import INTERRUPTED, STALE_RUNNING_S, SWEEP_GRACE_S, Sweep  # noqa: F401
from core.history.writes import Writes, retry

log = logging.getLogger(__name__)

# Test hook: called with the operation name after files are written and rows are flushed, just
# before COMMIT (the crash tests sleep here and get SIGKILLed). Never set in production.
_before_commit_hook: Optional[Callable[[str], None]] = None


def _part(part: str, cls: type, name: str) -> Callable[..., Any]:
    """A HistoryStore method that hands over to its part `part` (a `cls`), same name and doc."""
    @functools.wraps(getattr(cls, name))
    def method(self, *args, **kwargs):
        return getattr(getattr(self, part), name)(*args, **kwargs)
    return method


# -------------------------------------------------------------------------------------- store --
class HistoryStore:
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
        self.database = Database(self.engine, self._writer, self._backend.location)
        self.fingerprint: Optional[identity.Fingerprint] = None
        self.store_id = self._identify()
        self.blobs = BlobStore(self._backend, self.store_id)
        self.deletions = Deletions(self.database, self.blobs, retry)
        self.writes = Writes(self.database, self.blobs, self.deletions, self._hook)
        self.queries = Queries(self.database, self.blobs)
        self.cleanup = Sweep(self.database, self.blobs, self.deletions, self._note_marker)
        self.swept = False            # open_store: whether this process has swept files yet

    # -- the parts' methods --------------------------------------------------------------------
    start_run = _part("writes", Writes, "start_run")
    finish_run = _part("writes", Writes, "finish_run")
    fail_run = _part("writes", Writes, "fail_run")
    record_run = _part("writes", Writes, "record_run")
    set_favorite = _part("writes", Writes, "set_favorite")
    delete_run = _part("writes", Writes, "delete_run")
    get_run = _part("queries", Queries, "get_run")
    get_runs = _part("queries", Queries, "get_runs")
    list_runs = _part("queries", Queries, "list_runs")
    iter_runs = _part("queries", Queries, "iter_runs")
    count_runs = _part("queries", Queries, "count_runs")
    compare = _part("queries", Queries, "compare")
    facets = _part("queries", Queries, "facets")
    batches = _part("queries", Queries, "batches")
    sweep = _part("cleanup", Sweep, "sweep")
    recover_runs = _part("cleanup", Sweep, "recover_runs")

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
        """Where this database lives, as Backdrop before fingerprints recorded it ("location"):
        the real path of an SQLite file, otherwise the URL (password hidden)."""
        url = self.engine.url
        if db.is_sqlite(self.engine):
            path = identity.sqlite_path(url)
            return "" if path is None else "sqlite:" + path
        return db.shown(url)

    def _identify(self) -> str:
        """This database's store id, the owner of its claims in the image store (see
        core/history/identity.py). Kept when the database is opened as a file (or server
        database) it has been opened as before; otherwise (a copy, a database from another
        machine or filesystem, one from before fingerprints, a new one) a new id, which claims
        every image the rows use before it is committed."""
        with self._errors():
            me = self.fingerprint = identity.fingerprint(self.engine)
        with self._read() as session:
            info = identity.read_info(session)
        sid = info.get("store_id")
        recorded = identity.load(info.get(identity.FINGERPRINTS))
        if sid and (me is None or identity.known(me, recorded)):
            if me is not None and identity.new_path(me, recorded):
                self._note_path(sid, me)
            return sid
        reason = ("has no fingerprint yet (from before copies were told apart)" if recorded is None
                  else "was not opened as this file or database before (a copy, or moved to "
                       "another filesystem or machine)")
        return self._new_identity(me, sid, reason)

    def _new_identity(self, me: Optional[identity.Fingerprint], previous: Optional[str],
                      reason: str = "") -> str:
        """Take a new store id: claim every image of this database under it (no lock held while
        the image store works), then commit it, unless another process of this same database did
        the same meanwhile (then its id is used and ours dropped)."""
        claimed: set[str] = set()
        new = uuid.uuid4().hex
        blobs = BlobStore(self._backend, new)
        for attempt in range(4):
            with self._read() as session:
                digests = self._all_digests(session)
            todo = sorted(digests - claimed)
            if todo:
                with self._errors():
                    blobs.claim(todo)
                claimed.update(todo)
            with self._write() as session:
                info = identity.read_info(session)
                current = info.get("store_id")
                recorded = identity.load(info.get(identity.FINGERPRINTS))
                # Another process of this same database decided since _identify read it (even
                # before this loop began): its id is the one, whatever we read before.
                if current and (me is None or identity.known(me, recorded)):
                    adopted = current
                    break
                missing = self._all_digests(session) - claimed
                if missing and attempt < 3:
                    continue                      # rows added meanwhile: claim those first
                if missing:
                    with self._errors():
                        blobs.claim(sorted(missing))   # still racing: claim the few under the lock
                session.merge(StoreInfo(key="store_id", value=new))
                session.merge(StoreInfo(key=identity.FINGERPRINTS, value=identity.dump([], me)))
                session.merge(StoreInfo(key="location", value=self._location()))
            if previous:
                log.info("history database %s %s: it takes store id %s and claims its %d "
                         "image(s) again (the old id %s keeps its claims until its own database "
                         "deletes them, or `python -m core history store forget`)",
                         me.where if me else db.shown(self.engine.url), reason, new,
                         len(claimed), previous)
            self._write_marker(new, me, previous)
            return new
        else:
            raise HistoryError("could not settle this history database's store id (other processes "
                               "kept changing it); try again")
        with self._errors():
            blobs.drop_claims()
        return adopted

    def _note_path(self, sid: str, me: identity.Fingerprint) -> None:
        """Record another path of this same file (a hard link, a rename): best effort, so that
        `history store` looks for the database there too."""
        try:
            with self._write() as session:
                info = identity.read_info(session)
                recorded = identity.load(info.get(identity.FINGERPRINTS))
                if info.get("store_id") != sid or not identity.known(me, recorded):
                    return
                session.merge(StoreInfo(key=identity.FINGERPRINTS, value=identity.dump(recorded, me)))
                session.merge(StoreInfo(key="location", value=self._location()))
            self._write_marker(sid, me, recorded=recorded)
        except HistoryError as e:          # a read-only database: it is only information
            log.info("could not record this history database's path %s: %s", me.where, e)

    @staticmethod
    def _all_digests(session: Session) -> set[str]:
        digests: set[str] = set()
        for model in (Source, Mask, Output):
            digests.update(session.scalars(select(model.hash)))
        return digests

    def _write_marker(self, sid: str, me: Optional[identity.Fingerprint],
                      replaces: Optional[str] = None, *, if_changed: bool = False,
                      recorded: Optional[list[dict]] = None) -> None:
        """refs/<id>/.store: where this id's database is, for `history store` (best effort: it
        only informs; if_changed: only when it does not say this already)."""
        if recorded is None and me is not None:
            try:
                with self._read() as session:
                    recorded = identity.load(identity.read_info(session).get(identity.FINGERPRINTS))
            except HistoryError:
                recorded = None
        info = identity.marker(sid, me, replaces, recorded)
        try:
            with self._errors():
                blobs = BlobStore(self._backend, sid)
                if if_changed:
                    old = blobs.read_marker() or {}
                    if all(old.get(k) == v for k, v in info.items() if k != "opened"):
                        return
                    info["replaces"] = old.get("replaces")
                blobs.write_marker({k: v for k, v in info.items() if v is not None})
        except HistoryError as e:
            log.info("could not record this history's store id in the image store: %s", e)

    def _note_marker(self) -> None:
        """Rewrite this store id's marker if it changed (after a sweep)."""
        self._write_marker(self.store_id, self.fingerprint, if_changed=True)

    # -- sessions (used by identity.py and the tests) --------------------------------------------
    def _read(self) -> ContextManager[Session]:
        return self.database.read()

    def _write(self) -> ContextManager[Session]:
        return self.database.write()

    def _errors(self) -> ContextManager[None]:
        return self.database.errors()

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
            _report(store.sweep()) if sweep else store.recover_runs()
            store.swept = sweep
            _stores[key] = store
        elif sweep and not store.swept:
            _report(store.sweep())
            store.swept = True
        return store


def _report(report) -> None:
    """Log what the opening sweep found (WARNING: each is something a crash or a person did)."""
    if report.interrupted or report.removed_files or report.missing_files:
        log.warning("history clean-up: %d run(s) of stopped processes marked failed, %d unused "
                    "file(s) removed (%.1f MB), %d file(s) that runs list are missing",
                    report.interrupted, report.removed_files, report.removed_bytes / 1e6,
                    report.missing_files)

