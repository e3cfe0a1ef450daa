"""History records: the frozen values the store hands out (never live ORM objects), and the
time/cursor conventions they use. Paths in records are absolute (a Path in a folder store, an
s3://bucket/key string when the images are in S3: read them with HistoryStore.read_file); times
are aware UTC."""
from __future__ import annotations

import dataclasses
import re
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence, Union

from core.errors import InvalidOptionError
from core.spec import RunSpec

StoredPath = Union[Path, str]   # absolute Path (folder store) or s3:// URL (S3 store)

# ----------------------------------------------------------------------------------- records --
@dataclass(frozen=True)
class SourceRecord:
    id: int
    hash: str
    width: int
    height: int
    path: StoredPath        # the PNG
    thumb_path: StoredPath  # the WebP thumbnail


@dataclass(frozen=True)
class MaskRecord:
    id: int
    hash: str
    width: int
    height: int
    path: StoredPath      # the PNG (L, 255 = subject)


@dataclass(frozen=True)
class OutputRecord:
    id: int
    run_id: int
    index: int            # 0-based variant number
    seed: Optional[int]
    favorite: bool
    hash: str
    width: int
    height: int
    path: StoredPath      # the full-size PNG (RGB, or RGBA for transparent)
    thumb_path: StoredPath  # the WebP thumbnail (long side 256)


@dataclass(frozen=True)
class RunRecord:
    id: int
    created: datetime     # aware, UTC
    finished: Optional[datetime]
    status: str           # running | succeeded | failed | cancelled
    source: SourceRecord
    source_name: str      # display only, never a path
    spec: RunSpec         # every parameter of the run (core/spec.py)
    timings: dict[str, float]
    device: Optional[str]
    error: Optional[str]
    duration: Optional[float]
    mask: Optional[MaskRecord]
    outputs: tuple[OutputRecord, ...]
    batch: Optional[str] = None   # the batch it was part of (`python -m core batch`), None: one photo

    @property
    def favorite(self) -> bool:
        return any(o.favorite for o in self.outputs)

    @property
    def prompt(self) -> Optional[str]:
        """The generation prompt, None for backgrounds that are not painted (for captions)."""
        return self.spec.generation.prompt if self.spec.generation else None

    def params(self) -> dict[str, Any]:
        """What made this run, one level deep (what compare() puts side by side): the spec's
        flat() keys plus the source, device, status and the seed of each output."""
        return {"source": self.source.hash, **self.spec.flat(), "device": self.device,
                "status": self.status, "output_seeds": [o.seed for o in self.outputs]}

    def summary(self) -> dict[str, Any]:
        """A short JSON-ready row for lists (`history list`): no paths, no per-stage detail."""
        return {"id": self.id, "created": self.created.isoformat(), "status": self.status,
                "source_name": self.source_name, "background": str(self.spec.background),
                "prompt": self.prompt, "model": self.spec.generation.model if self.spec.generation else None,
                "outputs": len(self.outputs), "favorite": self.favorite, "batch": self.batch,
                "duration": self.duration, "error": self.error, "spec": self.spec.to_json()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths and datetimes as strings (for `history list --json`, export)."""
        def conv(v):
            if isinstance(v, datetime):
                return v.isoformat()
            if isinstance(v, Path):
                return str(v)
            if isinstance(v, tuple):
                return [conv(x) for x in v]
            if isinstance(v, dict):
                return {k: conv(x) for k, x in v.items()}
            return v
        out = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        out["spec"] = self.spec.to_json()
        out["source"] = dataclasses.asdict(self.source)
        out["mask"] = dataclasses.asdict(self.mask) if self.mask else None
        out["outputs"] = [dataclasses.asdict(o) for o in self.outputs]
        out["favorite"] = self.favorite
        return conv(out)


@dataclass(frozen=True)
class RunQuery:
    """Filters for list_runs / count_runs. Empty fields filter nothing.

    text: every whitespace-separated word must occur in the prompt or negative prompt
    (case-insensitive, Unicode casefold; % and _ are literal). since/until: created >= since and
    created < until (naive datetimes are taken as UTC)."""

    text: str = ""
    favorites: bool = False
    model: Optional[str] = None
    background_kind: Optional[str] = None
    status: Union[str, Sequence[str], None] = None
    since: Optional[datetime] = None
    until: Optional[datetime] = None
    source_hash: Optional[str] = None
    batch: Optional[str] = None       # runs of this batch only (RunRecord.batch)


@dataclass(frozen=True)
class Page:
    runs: tuple[RunRecord, ...]
    next_cursor: Optional[str]   # pass back as list_runs(cursor=...); None on the last page

    def __iter__(self) -> Iterator[RunRecord]:
        return iter(self.runs)

    def __len__(self) -> int:
        return len(self.runs)


@dataclass(frozen=True)
class Comparison:
    ids: tuple[int, ...]
    params: dict[str, tuple[Any, ...]]   # key -> one value per run, in `ids` order
    differing: tuple[str, ...]           # keys whose values are not all equal


@dataclass(frozen=True)
class SweepReport:
    interrupted: int = 0       # runs left "running" by a dead process, now failed
    removed_files: int = 0     # orphan files (and stale temp files) deleted
    removed_bytes: int = 0
    missing_files: int = 0     # files a row points to that are not on disk (reported, not fixed)


# ------------------------------------------------------------------------------ times, cursors --
def now_utc() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def naive_utc(dt: Optional[datetime]) -> Optional[datetime]:
    if dt is None:
        return None
    if not isinstance(dt, datetime):
        raise InvalidOptionError(f"expected a datetime, got {type(dt).__name__}")
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def aware_utc(dt: Optional[datetime]) -> Optional[datetime]:
    return dt.replace(tzinfo=timezone.utc) if dt is not None else None


_EPOCH = datetime(1970, 1, 1)
_CURSOR = re.compile(r"^([0-9]{1,16})-([0-9]{1,18})$")


def encode_cursor(created: datetime, run_id: int) -> str:
    """A page cursor: "<microseconds since 1970 UTC>-<run id>" (every string of that shape decodes,
    so the API's documented pattern is exactly what it accepts)."""
    return f"{(naive_utc(created) - _EPOCH) // timedelta(microseconds=1)}-{run_id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    m = _CURSOR.match(cursor) if isinstance(cursor, str) else None
    if m is None:
        raise InvalidOptionError(f"not a history page cursor: {str(cursor)[:80]!r} (give the "
                                 "next_cursor of the previous page)")
    return _EPOCH + timedelta(microseconds=int(m.group(1))), int(m.group(2))


