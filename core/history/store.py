"""The history store: one database (runs, sources, masks, outputs) + content-addressed image files.

See core/history/__init__.py for the public API and an example. HistoryStore is assembled from
one file per job: writes.py (record runs, favourites, delete), queries.py (read, search, compare),
sweep.py (crash recovery); this file holds what they share: opening, identity, sessions, errors.
Every method opens its own session (safe to share one store between threads).
"""
from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator, Optional, Sequence, Union

from sqlalchemy import select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from core import config
from core.config import redact
from core.errors import BackdropError, HistoryError
from core.files import HOST, pid_alive
from core.history import db, identity
from core.history.blobs import BlobStore, open_backend
from core.history.models import Mask, Output, Source, StoreInfo
from core.history.queries import Queries
from core.history.shared import NOT_YET
from core.history.sweep import INTERRUPTED, STALE_RUNNING_S, SWEEP_GRACE_S, Sweep  # noqa: F401
from core.history.writes import Writes

log = logging.getLogger(__name__)

# Test hook: called with the operation name after files are written and rows are flushed, just
# before COMMIT (the crash tests sleep here and get SIGKILLed). Never set in production.
_before_commit_hook: Optional[Callable[[str], None]] = None

# Deleting image files (delete_run, sweep) happens outside the write lock, announced in store_info:
# "deletion_gen" counts deletions, "deleting" is the one in progress (token, owner, until). A writer
# notes both before it checks its files and commits only if no deletion began or ran since (else it
# checks its files again): see Writes._commit_with_files and HistoryStore._release_files.
DELETION_GEN, DELETING = "deletion_gen", "deleting"
DELETE_WINDOW_S = 180.0       # a deletion announced this long ago is over (its process stops at 2/3)
_SCHEMA_ERRORS = ("no such column", "no such table", "has no column named", "does not exist")


class FilesMayBeGone(HistoryError):
    """A deletion ran while a writer checked its files: check them again, then commit."""


class DeletionBusy(HistoryError):
    """Another process is deleting image files of this database right now."""


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
        self.fingerprint: Optional[identity.Fingerprint] = None
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

    # -- deleting files ----------------------------------------------------------------------------
    def _deletions(self, session: Session) -> tuple[int, Optional[dict]]:
        """(deletion count, the deletion in progress or None)."""
        rows = {r.key: r.value for r in session.scalars(
            select(StoreInfo).where(StoreInfo.key.in_([DELETION_GEN, DELETING])))}
        gen = int(rows.get(DELETION_GEN) or 0)
        try:
            active = json.loads(rows[DELETING]) if DELETING in rows else None
        except ValueError:
            active = None
        if active is not None:
            host, _, pid = str(active.get("owner", "")).rpartition(":")
            if time.time() > float(active.get("until", 0)) or (
                    host == HOST and pid.isdigit() and not pid_alive(int(pid))):
                active = None             # over: its process ended, or its time is up
        return gen, active

    def _files_epoch(self, wait: bool = False) -> tuple[int, bool]:
        """What a writer notes before it checks its files: (deletion count, one in progress?).
        wait=True: first wait for a deletion in progress to end."""
        def read() -> tuple[int, Optional[dict]]:
            with self._errors(), Session(self.engine) as session:
                try:
                    return self._deletions(session)
                finally:
                    session.rollback()        # read only: nothing to commit

        while True:
            gen, active = self._retry(read)   # a lost connection is retried like a write
            if active is None or not wait:
                return gen, active is not None
            time.sleep(0.2)

    def _release_files(self, pick: Callable[[Session], Sequence[str]], *,
                       older_than: Optional[float] = None) -> tuple[int, int]:
        """Release this database's claims on the digests `pick(session)` returns (called under the
        write lock: the ones no row uses) and delete the files no other database claims. The
        deletion is announced in one short write transaction and done with no lock held, so a
        slow or hung image store never blocks writers; a writer that checked its files meanwhile
        checks them again before committing (Writes._commit_with_files). Returns (files, bytes)."""
        token = uuid.uuid4().hex
        begun: list = []

        def begin() -> list[str]:
            with self._write() as session:
                gen, active = self._deletions(session)
                if active is not None and active.get("token") != token:
                    raise DeletionBusy("another process is deleting history files")
                digests = sorted(pick(session))
                if not digests:
                    return []
                until = time.time() + DELETE_WINDOW_S
                session.merge(StoreInfo(key=DELETION_GEN, value=str(gen + 1)))
                session.merge(StoreInfo(key=DELETING, value=json.dumps(
                    {"token": token, "owner": f"{HOST}:{os.getpid()}", "until": until})))
                begun[:] = [digests, until]
                return digests

        def committed():
            with self._read() as session:
                row = session.get(StoreInfo, DELETING)
            if begun and row is not None and token in row.value:
                return begun[0]
            return NOT_YET

        while True:
            try:
                digests = self._retry(begin, committed)
                break
            except DeletionBusy:
                self._files_epoch(wait=True)
        if not digests:
            return 0, 0
        until = begun[1]
        try:
            with self._errors():
                return self.blobs.release(digests, older_than=older_than,
                                          deadline=until - DELETE_WINDOW_S / 3)
        finally:
            try:
                with self._write() as session:
                    row = session.get(StoreInfo, DELETING)
                    if row is not None and token in row.value:
                        session.delete(row)
            except HistoryError as e:      # it ends by itself at `until`
                log.warning("could not mark the deletion of history files done: %s", e)

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
            msg = redact(str(orig).splitlines()[0] if str(orig) else type(orig).__name__)
            if "locked" in msg or "busy" in msg or "lock timeout" in msg:
                raise HistoryError("the history database is busy (locked by another process "
                                   "for too long); try again") from e
            if any(w in msg for w in _SCHEMA_ERRORS):
                newer = self._newer_schema()
                if newer is not None:
                    raise HistoryError(
                        f"the history database was upgraded by a newer Backdrop while this process "
                        f"was running (schema {newer!r}; this Backdrop knows up to "
                        f"{db.head_revision()!r}): restart this process, or upgrade Backdrop here "
                        "to the version that upgraded it") from e
            raise HistoryError(f"history database error: {msg}") from e
        except OSError as e:
            raise HistoryError(redact(f"cannot write history files under {self._backend.location}: "
                                      f"{e.strerror or e}")) from e

    def _newer_schema(self) -> Optional[str]:
        """The database's schema revision when this Backdrop does not know it (a newer one
        migrated the database after this process opened it), else None."""
        try:
            current = db.current_revision(self.engine)
            return current if current is not None and current not in db.known_revisions() else None
        except Exception:
            return None

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

