"""Reading runs: one run, pages of runs (newest first, keyset cursors), counts, compare, facets,
batches.

HistoryStore.queries (core/history/store.py); a Queries is given the sessions (sessions.py) and the
image store (blobs, for the files' paths)."""
from __future__ import annotations

import json
import logging
from typing import Any, Iterator, Optional, Sequence

from sqlalchemy import and_, func, or_, select

from core.errors import HistoryError, InvalidOptionError
from core.history.blobs import BlobStore
from core.history.models import Output, Run, Source
from core.history.records import (Comparison, MaskRecord, OutputRecord, Page, RunQuery, RunRecord,
                                  SourceRecord, aware_utc, naive_utc, decode_cursor, encode_cursor)
from core.history.sessions import Database
from core.history.shared import chunks
from core.spec import Background, Generation, MaskOptions, RunSpec, Subject

log = logging.getLogger(__name__)


def _spec(run: Run) -> RunSpec:
    """The run's spec; one that no longer validates (edited by hand, or a bound tightened since)
    is still shown as stored rather than hiding the run."""
    try:
        return RunSpec.from_json(run.spec)
    except InvalidOptionError as e:
        log.warning("run %s: stored spec does not validate (%s); shown as stored", run.id, e)
        data = dict(run.spec or {})
        parts = {"subject": Subject, "mask": MaskOptions, "background": Background,
                 "generation": Generation}
        for key, model in parts.items():
            if isinstance(data.get(key), dict):
                data[key] = model.model_construct(**data[key])
        return RunSpec.model_construct(**data)


class Queries:
    """Reading runs from `database`, their files' paths from `blobs`."""

    def __init__(self, database: Database, blobs: BlobStore):
        self.database = database
        self.blobs = blobs

    # -- reading -------------------------------------------------------------------------------
    def _record(self, run: Run) -> RunRecord:
        ref = self.blobs.ref          # absolute Path (folder) or s3:// URL of a stored file
        src = run.source
        mask = run.mask
        return RunRecord(
            id=run.id, created=aware_utc(run.created), finished=aware_utc(run.finished),
            status=run.status,
            source=SourceRecord(src.id, src.hash, src.width, src.height, ref(src.path),
                                ref(src.thumb_path)),
            source_name=run.source_name, spec=_spec(run),
            timings=dict(run.timings or {}), device=run.device,
            error=run.error, duration=run.duration,
            mask=MaskRecord(mask.id, mask.hash, mask.width, mask.height, ref(mask.path))
            if mask is not None else None,
            outputs=tuple(OutputRecord(o.id, o.run_id, o.index, o.seed, o.favorite, o.hash,
                                       o.width, o.height, ref(o.path), ref(o.thumb_path))
                          for o in run.outputs),
            batch=run.batch)

    def get_run(self, run_id: int) -> RunRecord:
        """Everything about one run; HistoryError if there is no such run."""
        return self.get_runs([run_id])[0]

    def get_runs(self, ids: Sequence[int]) -> list[RunRecord]:
        """Several runs in the order of `ids`; HistoryError naming the ids that do not exist."""
        ids = [int(i) for i in ids]
        found: dict[int, RunRecord] = {}
        with self.database.read() as session:
            for chunk in chunks(sorted(set(ids))):
                for run in session.scalars(select(Run).where(Run.id.in_(chunk))):
                    found[run.id] = self._record(run)
        missing = [i for i in ids if i not in found]
        if missing:
            listed = ", ".join(map(str, missing[:10])) + (" …" if len(missing) > 10 else "")
            raise HistoryError(f"no run with id {listed} in the history")
        return [found[i] for i in ids]

    @staticmethod
    def _where(query: Optional[RunQuery]) -> list[Any]:
        q = query or RunQuery()
        conds: list[Any] = []
        for word in (q.text or "").replace("\x00", "").casefold().split():
            escaped = word.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            conds.append(Run.search_text.like(f"%{escaped}%", escape="\\"))
        if q.favorites:
            # IN (not a correlated EXISTS): SQLite builds the set of favourite runs once from
            # ix_outputs_favorite, then walks runs newest-first; EXISTS probed it per run.
            conds.append(Run.id.in_(select(Output.run_id).where(Output.favorite.is_(True))))
        if q.model:
            conds.append(Run.model == q.model)
        if q.background_kind:
            conds.append(Run.background_kind == q.background_kind)
        if q.status:
            statuses = [q.status] if isinstance(q.status, str) else list(q.status)
            conds.append(Run.status.in_(statuses))
        if q.since is not None:
            conds.append(Run.created >= naive_utc(q.since))
        if q.until is not None:
            conds.append(Run.created < naive_utc(q.until))
        if q.source_hash:
            conds.append(Run.source.has(Source.hash == q.source_hash))
        if q.batch:
            conds.append(Run.batch == q.batch.replace("\x00", ""))     # stored without NUL
        return conds

    def list_runs(self, query: Optional[RunQuery] = None, *, limit: int = 48,
                  cursor: Optional[str] = None, offset: int = 0) -> Page:
        """Newest first (created, then id). Page on with `cursor=page.next_cursor` (keyset: stable
        while rows are added) or with `offset` (for "page N of M" with count_runs)."""
        if limit < 1:
            raise InvalidOptionError("limit must be at least 1")
        stmt = select(Run).where(*self._where(query))
        if cursor:
            created, rid = decode_cursor(cursor)
            stmt = stmt.where(or_(Run.created < created, and_(Run.created == created, Run.id < rid)))
        stmt = stmt.order_by(Run.created.desc(), Run.id.desc()).limit(limit + 1)
        if offset:
            stmt = stmt.offset(int(offset))
        with self.database.read() as session:
            runs = list(session.scalars(stmt))
            more = len(runs) > limit
            runs = runs[:limit]
            records = tuple(self._record(r) for r in runs)
        nxt = encode_cursor(runs[-1].created, runs[-1].id) if more and runs else None
        return Page(records, nxt)

    def iter_runs(self, query: Optional[RunQuery] = None, *, batch: int = 200) -> Iterator[RunRecord]:
        """Every matching run, newest first, fetched a page at a time."""
        cursor = None
        while True:
            page = self.list_runs(query, limit=batch, cursor=cursor)
            yield from page.runs
            if page.next_cursor is None:
                return
            cursor = page.next_cursor

    def count_runs(self, query: Optional[RunQuery] = None) -> int:
        with self.database.read() as session:
            return int(session.scalar(select(func.count(Run.id)).where(*self._where(query))))

    def compare(self, ids: Sequence[int]) -> Comparison:
        """Parameters of several runs side by side, and the keys whose values differ."""
        runs = self.get_runs(ids)
        params = [r.params() for r in runs]
        keys = list(dict.fromkeys(k for p in params for k in p))
        table = {k: tuple(p.get(k) for p in params) for k in keys}
        differing = tuple(k for k, vals in table.items()
                          if any(json.dumps(v, sort_keys=True) != json.dumps(vals[0], sort_keys=True)
                                 for v in vals[1:]))
        return Comparison(tuple(r.id for r in runs), table, differing)

    def batches(self) -> list[tuple[str, int]]:
        """Every batch name with its number of runs, the batch run most recently first (for the
        History page's batch filter and `history list --batch`)."""
        newest = func.max(Run.created)
        stmt = (select(Run.batch, func.count(Run.id)).where(Run.batch.is_not(None))
                .group_by(Run.batch).order_by(newest.desc(), Run.batch))
        with self.database.read() as session:
            return [(name, int(n)) for name, n in session.execute(stmt)]

    def facets(self) -> dict[str, list[str]]:
        """Distinct values for filter widgets: {"model": [...], "background_kind": [...],
        "status": [...]}."""
        with self.database.read() as session:
            return {name: sorted(v for v in session.scalars(select(col).distinct()) if v)
                    for name, col in (("model", Run.model), ("background_kind", Run.background_kind),
                                      ("status", Run.status))}


