"""Writing runs: files first (content-addressed, atomic), then one transaction per change.

Why one file (~440 lines): every write goes through the same retry, file-first ordering and claims;
kept together so no write can take a shortcut past them.

HistoryStore.writes (core/history/store.py); a Writes is given the sessions (sessions.py), the
image files (blobs), the announced deletions (deletions.py) and the crash-test hook."""
from __future__ import annotations

import logging
import os
import time
from datetime import datetime
from typing import Any, Callable, Iterable, Mapping, Optional, Sequence, Union

import numpy as np
from sqlalchemy import exists, select
from sqlalchemy.exc import DBAPIError, IntegrityError, InterfaceError, OperationalError
from sqlalchemy.orm import Session

from core.errors import HistoryError, InvalidOptionError
from core.files import HOST
from core.history.blobs import Blob, BlobStore, check_image
from core.history.deletions import Deletions, FilesMayBeGone
from core.history.models import RUN_STATUSES, Mask, Output, Run, Source
from core.history.records import naive_utc, now_utc
from core.history.sessions import Database
from core.history.shared import NOT_YET, referenced
from core.spec import RunSpec

ImageLike = Any   # np.ndarray HxWx3 uint8, or an object with .rgb (and .hash) like LoadedImage

log = logging.getLogger(__name__)

RECONNECT_S = 20.0   # how long a write cut by a lost connection keeps trying to reconnect


def connection_lost(exc: BaseException | None) -> bool:
    """Whether a database error means the connection (or the server) went away, so the
    transaction was rolled back or its COMMIT is in doubt: a server restart, a network cut, a
    refused reconnect. Lock timeouts, constraint violations and SQL errors are not. (SQLite never
    reports this: its errors are about the file.)"""
    if not isinstance(exc, DBAPIError):
        return False
    if exc.connection_invalidated:
        return True
    if not isinstance(exc, (OperationalError, InterfaceError)):
        return False
    orig = exc.orig
    if type(orig).__module__.startswith("sqlite3"):
        return False
    state = getattr(orig, "sqlstate", None) or ""
    # no SQLSTATE: failed to connect / connection closed; 08: connection exception;
    # 57P01-03: server shut down or starting; 40001/40P01: serialization failure, deadlock
    return state == "" or state.startswith(("08", "57P", "40"))


def _text(value: Optional[str]) -> Optional[str]:
    """Text as stored: NUL removed (PostgreSQL cannot hold it and it ends C strings)."""
    if value is None:
        return None
    return str(value).replace("\x00", "")


def _no_nul(value: Any) -> Any:
    if isinstance(value, str):
        return value.replace("\x00", "")
    if isinstance(value, dict):
        return {k: _no_nul(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_no_nul(v) for v in value]
    return value


def _timings(timings: Optional[Mapping[str, float]]) -> dict[str, float]:
    return {str(k): float(v) for k, v in (timings or {}).items()}


def _int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def retry(fn: Callable[[], Any],
          committed: Optional[Callable[[], Any]] = None) -> Any:
    """Run a write transaction `fn`.

    A unique-key race (servers other than SQLite, where BEGIN IMMEDIATE does not serialise
    writers) is retried twice. A lost connection (server restarted mid-transaction) is retried
    on a fresh connection for up to RECONNECT_S: the server rolled the transaction back, unless
    the COMMIT itself was cut, so `committed()` (run on the new connection before redoing
    anything) says whether the first attempt's work is in fact there: it returns the result
    to hand back, or NOT_YET. So a run is recorded exactly once, or the call fails with one
    HistoryError line and nothing was written."""
    races = 0
    deadline = None
    while True:
        try:
            return fn()
        except HistoryError as e:
            cause = e.__cause__
            if isinstance(cause, IntegrityError) and races < 2:
                races += 1
                continue
            if not connection_lost(cause):
                raise
            first = e
        if deadline is None:
            deadline = time.monotonic() + RECONNECT_S
            log.warning("history database connection lost (%s); retrying", first)
        delay = 0.1
        while True:       # reconnect, then find out whether the cut COMMIT went through
            if time.monotonic() > deadline:
                raise HistoryError(f"lost the connection to the history database and could not "
                                   f"reconnect within {RECONNECT_S:.0f} s; nothing was saved "
                                   f"({str(first).removeprefix('history database error: ')})"
                                   ) from first
            time.sleep(delay)
            delay = min(delay * 2, 1.0)
            try:
                done = committed() if committed is not None else NOT_YET
            except HistoryError as e:
                if connection_lost(e.__cause__):
                    continue
                raise
            if done is not NOT_YET:
                return done
            break


class Writes:
    """Recording runs, favourites and deletions in `database`, with image files in `blobs`
    (claimed under this database's store id); `deletions` announces file deletions and tells a
    writer whether one ran meanwhile; `hook(op)` is called just before each COMMIT (the crash
    tests' hook)."""

    def __init__(self, database: Database, blobs: BlobStore, deletions: Deletions,
                 hook: Callable[[str], None]):
        self.database = database
        self.blobs = blobs
        self.deletions = deletions
        self.hook = hook

    # -- writing -------------------------------------------------------------------------------
    def _source_blob(self, source: Union[ImageLike, str]) -> tuple[Optional[Blob], str]:
        if isinstance(source, str):
            return None, source
        rgb = getattr(source, "rgb", source)
        rgb = check_image(rgb, "the source image")
        digest = getattr(source, "hash", None)
        with self.database.errors():
            return self.blobs.prepare(rgb, thumb=True, digest=digest), (digest or "")

    def _output_blobs(self, outputs: Iterable[Any]) -> list[tuple[Blob, Optional[int]]]:
        prepared = []
        for i, item in enumerate(outputs or ()):
            arr, seed = (item if isinstance(item, tuple) else (item, None))
            arr = check_image(arr, f"output {i}")
            with self.database.errors():
                prepared.append((self.blobs.prepare(arr, thumb=True), _int(seed)))
        return prepared

    def _mask_blob(self, mask: Optional[np.ndarray]) -> Optional[Blob]:
        if mask is None:
            return None
        arr = check_image(mask, "the mask", mask=True)
        with self.database.errors():
            return self.blobs.prepare(arr, thumb=False)

    def _ensure(self, *blobs: Optional[Blob]) -> None:
        """Check again that our files are there (a concurrent delete or sweep may have removed a
        file we reused); rewrite any that vanished. Never called under the write lock."""
        for blob in blobs:
            if blob is not None:
                with self.database.errors():
                    self.blobs.ensure(blob)

    def _commit_with_files(self, epoch: tuple[int, bool], blobs: Sequence[Optional[Blob]],
                           tx: Callable[[Callable[[Session], None]], Any],
                           committed: Optional[Callable[[], Any]] = None) -> Any:
        """Run write transaction `tx` (through retry) for rows that point at `blobs`, whose files
        were claimed and checked after `epoch` (Deletions.epoch) was noted, with no lock held.

        `tx` calls the function it is given with its session first thing: that raises
        FilesMayBeGone when a deletion of files began or ran since the files were checked (the
        store announces each in store_info before it deletes anything). Then the files are
        checked again (and rewritten if gone) outside the lock, and `tx` runs again. So a row is
        never committed pointing at a file a concurrent delete_run or sweep removed, and nobody
        holds the database's write lock while the image store works."""
        wanted = [b for b in blobs if b is not None]

        def check(session: Session) -> None:
            if not wanted:
                return
            gen, active = self.deletions.state(session)
            if active is not None or epoch[1] or gen != epoch[0]:
                raise FilesMayBeGone("history files were being deleted meanwhile")

        for _ in range(8):
            try:
                return retry(lambda: tx(check), committed)
            except FilesMayBeGone:
                epoch = self.deletions.epoch(wait=True)
                self._ensure(*wanted)
        raise HistoryError("history files kept being deleted by other processes while this run "
                           "was saved; try again")

    def _get_source(self, session: Session, blob: Optional[Blob], digest: str) -> Source:
        key = blob.digest if blob is not None else digest
        src = session.scalar(select(Source).where(Source.hash == key))
        if src is None:
            if blob is None:
                raise HistoryError(f"no source image with hash {key[:12]}… in the history; "
                                   "pass the image itself")
            src = Source(hash=blob.digest, width=blob.width, height=blob.height, path=blob.path,
                         thumb_path=blob.thumb_path, created=now_utc())
            session.add(src)
            session.flush()
        return src

    @staticmethod
    def _get_mask(session: Session, blob: Optional[Blob]) -> Optional[Mask]:
        if blob is None:
            return None
        mask = session.scalar(select(Mask).where(Mask.hash == blob.digest))
        if mask is None:
            mask = Mask(hash=blob.digest, width=blob.width, height=blob.height, path=blob.path,
                        created=now_utc())
            session.add(mask)
            session.flush()
        return mask

    @staticmethod
    def _add_outputs(run: Run, outputs: list[tuple[Blob, Optional[int]]]) -> None:
        start = len(run.outputs)
        for i, (blob, seed) in enumerate(outputs):
            run.outputs.append(Output(index=start + i, seed=seed, favorite=False, hash=blob.digest,
                                      path=blob.path, thumb_path=blob.thumb_path,
                                      width=blob.width, height=blob.height))

    @staticmethod
    def _columns(spec: RunSpec, source_name: str = "", device: Optional[str] = None,
                 batch: Optional[str] = None) -> dict[str, Any]:
        """Row values for a run: the spec as JSON (NUL characters removed from its text, which
        PostgreSQL cannot hold) and the indexed columns derived from it. `batch` is only what the
        caller says (a batch run), never guessed from the source name."""
        if not isinstance(spec, RunSpec):
            spec = RunSpec.load(spec)
        return dict(spec=_no_nul(spec.to_json()),
                    **{k: _text(v) for k, v in spec.index_columns().items()},
                    source_name=_text(source_name) or "", batch=_text(batch) or None,
                    device=_text(device))

    def _run_exists(self, run_id: Optional[int]) -> Any:
        """For retry: the id of a run whose INSERT was committed after all, else NOT_YET. Ids come
        from the database's sequence and are never handed out twice, so the id alone proves it."""
        if run_id is None:
            return NOT_YET
        with self.database.read() as session:
            found = session.scalar(select(Run.id).where(Run.id == run_id))
        return found if found is not None else NOT_YET

    def _run_finished_at(self, run_id: int, finished: datetime) -> Any:
        """For retry: None if the run already carries this exact finish time (ours: committed),
        else NOT_YET."""
        with self.database.read() as session:
            value = session.scalar(select(Run.finished).where(Run.id == run_id))
        return None if value == finished else NOT_YET

    def start_run(self, *, source: Union[ImageLike, str], spec: RunSpec, source_name: str = "",
                  device: Optional[str] = None, created: Optional[datetime] = None,
                  batch: Optional[str] = None) -> int:
        """Record a run as "running" before any work is done; returns its id.

        `source`: HxWx3 uint8 array, an object with `.rgb` (and `.hash`) such as LoadedImage, or
        the content hash of a source already in the history. `spec`: the RunSpec (or its JSON).
        `batch`: the name of the batch this run is part of (core.batch), None for one photo."""
        cols = self._columns(spec, source_name, device, batch)
        epoch = self.deletions.epoch()
        blob, digest = self._source_blob(source)
        flushed: list[int] = []

        def tx(check) -> int:
            with self.database.write() as session:
                check(session)
                src = self._get_source(session, blob, digest)
                run = Run(created=naive_utc(created) or now_utc(), status="running",
                          owner=f"{HOST}:{os.getpid()}", source=src, timings={}, **cols)
                session.add(run)
                session.flush()
                flushed.append(run.id)
                self.hook("start_run")
                return run.id
        return self._commit_with_files(epoch, [blob], tx,
                                       lambda: self._run_exists(flushed[-1] if flushed else None))

    def finish_run(self, run_id: int, *, mask: Optional[np.ndarray] = None,
                   outputs: Iterable[Any] = (), timings: Optional[Mapping[str, float]] = None,
                   device: Optional[str] = None, duration: Optional[float] = None,
                   status: str = "succeeded") -> None:
        """Attach the mask (HxW uint8) and outputs (arrays, or (array, seed) pairs) to a started run
        and mark it succeeded. Files are written first, then ONE transaction commits the rows."""
        if status not in RUN_STATUSES or status == "running":
            raise InvalidOptionError(f"unknown final status {status!r}")
        self._end(run_id, status, None, mask, outputs, timings, device, duration, "finish_run")

    def fail_run(self, run_id: int, error: str, *, status: str = "failed",
                 timings: Optional[Mapping[str, float]] = None, device: Optional[str] = None,
                 mask: Optional[np.ndarray] = None) -> None:
        """Mark a started run failed or cancelled, keeping the error text (and the mask if any)."""
        if status not in ("failed", "cancelled"):
            raise InvalidOptionError(f"a run ends as failed or cancelled, not {status!r}")
        self._end(run_id, status, error, mask, (), timings, device, None, "fail_run")

    def _end(self, run_id: int, status: str, error: Optional[str], mask: Optional[np.ndarray],
             outputs: Iterable[Any], timings, device, duration, hook: str) -> None:
        """A started run's end: files first (mask, outputs), then ONE transaction for the rows."""
        epoch = self.deletions.epoch()
        mask_blob = self._mask_blob(mask)
        out_blobs = self._output_blobs(outputs)
        now = now_utc()

        def tx(check) -> None:
            with self.database.write() as session:
                check(session)
                run = session.get(Run, run_id)
                if run is None:
                    raise HistoryError(f"run {run_id} is not in the history (deleted?)")
                m = self._get_mask(session, mask_blob)
                if m is not None:
                    run.mask = m
                if out_blobs:
                    self._add_outputs(run, out_blobs)
                self._finish(run, status, error, timings, device, duration, now)
                session.flush()
                self.hook(hook)
        self._commit_with_files(epoch, [mask_blob, *(b for b, _ in out_blobs)], tx,
                                lambda: self._run_finished_at(run_id, now))

    @staticmethod
    def _finish(run: Run, status: str, error: Optional[str], timings, device, duration,
                now: datetime) -> None:
        run.status = status
        run.error = _text(error)
        run.finished = now
        run.owner = ""
        if timings is not None:
            run.timings = _timings(timings)
        if device is not None:
            run.device = _text(device)
        run.duration = (float(duration) if duration is not None
                        else max(0.0, (now - run.created).total_seconds()))

    def record_run(self, *, source: Union[ImageLike, str], mask: Optional[np.ndarray] = None,
                   outputs: Iterable[Any] = (), timings: Optional[Mapping[str, float]] = None,
                   status: str = "succeeded", error: Optional[str] = None,
                   duration: Optional[float] = None, created: Optional[datetime] = None,
                   spec: RunSpec, source_name: str = "", device: Optional[str] = None,
                   batch: Optional[str] = None) -> int:
        """Record a finished run in one go (files first, then one transaction); returns its id."""
        if status not in RUN_STATUSES or status == "running":
            raise InvalidOptionError(f"unknown final status {status!r}")
        cols = self._columns(spec, source_name, device, batch)
        epoch = self.deletions.epoch()
        blob, digest = self._source_blob(source)
        mask_blob = self._mask_blob(mask)
        out_blobs = self._output_blobs(outputs)
        tm = _timings(timings)
        flushed: list[int] = []

        def tx(check) -> int:
            with self.database.write() as session:
                check(session)
                src = self._get_source(session, blob, digest)
                now = now_utc()
                run = Run(created=naive_utc(created) or now, finished=now, status=status,
                          owner="", source=src, mask=self._get_mask(session, mask_blob),
                          timings=tm, error=_text(error),
                          duration=(float(duration) if duration is not None
                                    else sum(tm.values()) if tm else None),
                          **cols)
                session.add(run)
                self._add_outputs(run, out_blobs)
                session.flush()
                flushed.append(run.id)
                self.hook("record_run")
                return run.id
        return self._commit_with_files(epoch, [blob, mask_blob, *(b for b, _ in out_blobs)], tx,
                                       lambda: self._run_exists(flushed[-1] if flushed else None))

    def set_favorite(self, output_id: int, favorite: bool = True) -> None:
        def tx() -> None:     # idempotent: a retry after a lost connection is harmless
            with self.database.write() as session:
                out = session.get(Output, output_id)
                if out is None:
                    raise HistoryError(f"output {output_id} is not in the history")
                out.favorite = bool(favorite)
        retry(tx)

    def delete_run(self, run_id: int) -> int:
        """Delete a run, its outputs, and its mask/source rows when no other run uses them; remove
        the files no remaining row uses. Returns the number of files removed.

        The rows go first (committed); then the files no committed row uses are released, with no
        lock held while the image store works (Deletions.release announces the deletion
        first, and a writer reusing one of those images checks its files again before it commits:
        _commit_with_files). A COMMIT that fails (connection lost) leaves rows and files as they
        were, and a process dying in between leaves only orphan files for sweep()."""
        found: list[set[str]] = []

        def rows() -> None:
            with self.database.write() as session:
                run = session.get(Run, run_id)
                if run is None:
                    raise HistoryError(f"run {run_id} is not in the history")
                digests = {o.hash for o in run.outputs}
                mask, source = run.mask, run.source
                session.delete(run)
                session.flush()
                if mask is not None and not session.scalar(
                        select(exists().where(Run.mask_id == mask.id))):
                    digests.add(mask.hash)
                    session.delete(mask)
                if not session.scalar(select(exists().where(Run.source_id == source.id))):
                    digests.add(source.hash)
                    session.delete(source)
                session.flush()
                found[:] = [digests]
                self.hook("delete_run")

        def deleted() -> Any:
            with self.database.read() as session:
                gone = session.get(Run, run_id) is None
            return None if gone and found else NOT_YET

        retry(rows, deleted)
        digests = sorted(found[0])
        try:
            removed, _ = self.deletions.release(
                lambda session: sorted(set(digests) - referenced(session, digests)))
        except HistoryError as e:
            raise HistoryError(f"run {run_id} was deleted, but its files could not be removed now "
                               f"(a later clean-up removes them): {e}") from e
        return removed
