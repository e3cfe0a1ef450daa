"""Deleting image files (delete_run, sweep) outside the write lock, announced in store_info.

"deletion_gen" counts deletions, "deleting" is the one in progress (token, owner, until). A writer
notes both before it checks its files and commits only if no deletion began or ran since (else it
checks its files again): see Writes._commit_with_files and Deletions.release."""
from __future__ import annotations

import json
import logging
import os
import time
import uuid
from typing import Any, Callable, Optional, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from core.errors import HistoryError
from core.files import HOST, pid_alive
from core.history.blobs import BlobStore
from core.history.models import StoreInfo
from core.history.sessions import Database
from core.history.shared import NOT_YET

log = logging.getLogger(__name__)

DELETION_GEN, DELETING = "deletion_gen", "deleting"
DELETE_WINDOW_S = 180.0       # a deletion announced this long ago is over (its process stops at 2/3)


class FilesMayBeGone(HistoryError):
    """A deletion ran while a writer checked its files: check them again, then commit."""


class DeletionBusy(HistoryError):
    """Another process is deleting image files of this database right now."""


class Deletions:
    """Announced deletions of `blobs` (this database's claims) in `database`; `retry` runs a write
    transaction as Writes does (writes.retry: a lost connection is retried)."""

    def __init__(self, database: Database, blobs: BlobStore,
                 retry: Callable[..., Any]):
        self.database = database
        self.blobs = blobs
        self.retry = retry

    def state(self, session: Session) -> tuple[int, Optional[dict]]:
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

    def epoch(self, wait: bool = False) -> tuple[int, bool]:
        """What a writer notes before it checks its files: (deletion count, one in progress?).
        wait=True: first wait for a deletion in progress to end."""
        def read() -> tuple[int, Optional[dict]]:
            with self.database.errors(), Session(self.database.engine) as session:
                try:
                    return self.state(session)
                finally:
                    session.rollback()        # read only: nothing to commit

        while True:
            gen, active = self.retry(read)    # a lost connection is retried like a write
            if active is None or not wait:
                return gen, active is not None
            time.sleep(0.2)

    def release(self, pick: Callable[[Session], Sequence[str]], *,
                older_than: Optional[float] = None) -> tuple[int, int]:
        """Release this database's claims on the digests `pick(session)` returns (called under the
        write lock: the ones no row uses) and delete the files no other database claims. The
        deletion is announced in one short write transaction and done with no lock held, so a
        slow or hung image store never blocks writers; a writer that checked its files meanwhile
        checks them again before committing (Writes._commit_with_files). Returns (files, bytes)."""
        token = uuid.uuid4().hex
        begun: list = []

        def begin() -> list[str]:
            with self.database.write() as session:
                gen, active = self.state(session)
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
            with self.database.read() as session:
                row = session.get(StoreInfo, DELETING)
            if begun and row is not None and token in row.value:
                return begun[0]
            return NOT_YET

        while True:
            try:
                digests = self.retry(begin, committed)
                break
            except DeletionBusy:
                self.epoch(wait=True)
        if not digests:
            return 0, 0
        until = begun[1]
        try:
            with self.database.errors():
                return self.blobs.release(digests, older_than=older_than,
                                          deadline=until - DELETE_WINDOW_S / 3)
        finally:
            try:
                with self.database.write() as session:
                    row = session.get(StoreInfo, DELETING)
                    if row is not None and token in row.value:
                        session.delete(row)
            except HistoryError as e:      # it ends by itself at `until`
                log.warning("could not mark the deletion of history files done: %s", e)
