"""Crash recovery: runs left "running" by a dead process, files no row uses any more.

HistoryStore.cleanup (core/history/store.py); a Sweep is given the sessions (sessions.py), the
image store (blobs), the announced deletions (deletions.py) and how to refresh this id's marker. Deletes only images this database claims and no
other database claims (core/history/blobs/), and only claims older than the grace period."""
from __future__ import annotations

import time
from datetime import timedelta
from typing import Callable, Optional

from sqlalchemy import select, update

from core.files import HOST, pid_alive
from core.history.blobs import BlobStore, digest_of, image_rel, thumb_rel
from core.history.deletions import Deletions
from core.history.models import Mask, Output, Run, Source
from core.history.records import SweepReport, now_utc
from core.history.sessions import Database
from core.history.shared import referenced
from core.settings import Settings, settings

SWEEP_GRACE_S = Settings.model_fields["sweep_grace_s"].default   # used more recently: never swept
STALE_RUNNING_S = 24 * 3600.0    # a "running" run this old is given up on even if its pid lives
INTERRUPTED = "process stopped: the process recording this run ended before it finished"


def _owner_gone(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != HOST or not pid.isdigit():
        return False          # another machine (or unknown): only the age limit applies
    return not pid_alive(int(pid))



class Sweep:
    """Crash recovery in `database` and `blobs` (deleting through `deletions`); `note_marker()`
    rewrites this store id's marker in the image store if it changed (best effort)."""

    def __init__(self, database: Database, blobs: BlobStore, deletions: Deletions,
                 note_marker: Callable[[], None]):
        self.database = database
        self.blobs = blobs
        self.deletions = deletions
        self.note_marker = note_marker

    # -- sweeping ------------------------------------------------------------------------------
    def sweep(self, grace_s: Optional[float] = None,
              stale_after_s: float = STALE_RUNNING_S) -> SweepReport:
        """Crash recovery: recover_runs(), then delete the image files this database claims but no
        row of it uses any more (a run whose process died between writing files and committing),
        and our own temp files left by dead writers. Only claims not used for `grace_s` (default
        SWEEP_GRACE_S; env BACKDROP_SWEEP_GRACE_S) are considered, so a run in flight in another
        process keeps its files; an image another database claims, or nobody claims, is never
        deleted (see core/history/blobs/)."""
        if grace_s is None:
            grace_s = settings().sweep_grace_s
        interrupted = self.recover_runs(stale_after_s)
        cutoff = time.time() - grace_s
        removed = removed_bytes = 0
        present: set[str] = set()
        with self.database.errors():
            for rel, mtime, size in self.blobs.walk():
                if digest_of(rel) is not None:
                    present.add(rel)
                    continue
                if self.blobs.stale_temp(rel, mtime, grace_s, cutoff):
                    size = self.blobs.remove(rel)
                    if size is not None:
                        removed, removed_bytes = removed + 1, removed_bytes + size
            candidates = sorted(d for d, mtime in self.blobs.claims() if mtime < cutoff)
        unused: list[str] = []

        def pick(session) -> list[str]:
            unused[:] = sorted(set(candidates) - referenced(session, candidates))
            return unused

        n, freed = self.deletions.release(pick, older_than=cutoff)
        removed, removed_bytes = removed + n, removed_bytes + freed
        present.difference_update(r for d in unused for r in (image_rel(d), thumb_rel(d)))
        self.note_marker()
        with self.database.read() as session:
            wanted: set[str] = set()
            for model in (Source, Output):
                for p, t in session.execute(select(model.path, model.thumb_path)):
                    wanted.update((p, t))
            wanted.update(session.scalars(select(Mask.path)))
        return SweepReport(interrupted, removed, removed_bytes, len(wanted - present))

    def recover_runs(self, stale_after_s: float = STALE_RUNNING_S) -> int:
        """Mark failed (error "process stopped: …") the runs left "running" by a process that no
        longer exists (same host), or older than `stale_after_s`. Deletes nothing. Returns how
        many runs it marked."""
        with self.database.read() as session:
            rows = session.execute(select(Run.id, Run.owner, Run.created)
                                   .where(Run.status == "running")).all()
        limit = now_utc() - timedelta(seconds=stale_after_s)
        dead = [r.id for r in rows if r.created < limit or _owner_gone(r.owner)]
        if not dead:
            return 0
        with self.database.write() as session:
            result = session.execute(
                update(Run).where(Run.id.in_(dead), Run.status == "running")
                .values(status="failed", error=INTERRUPTED, finished=now_utc(), owner=""))
            return result.rowcount

