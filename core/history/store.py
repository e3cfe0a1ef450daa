"""The history store: record runs, query them, delete them, sweep what a crash left behind.

See core/history/__init__.py for the public API and an example. Every method opens its own
session (safe to share one store between threads); records handed out are frozen dataclasses,
never live ORM objects.
"""
from __future__ import annotations

import dataclasses
import json
import os
import socket
import sqlite3
import threading
import time
import urllib.parse
import uuid
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping, Optional, Sequence, Union

import numpy as np
from sqlalchemy import exists, func, or_, select, and_, update
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlalchemy.orm import Session

from core import config
from core.errors import BackdropError, HistoryError, InvalidOptionError
from core.history import db
from core.files import is_stale_temp, pid_alive
from core.history.blobs import Blob, BlobStore, check_image, digest_of, image_rel, thumb_rel
from core.history.models import RUN_STATUSES, Mask, Output, Run, Source, StoreInfo

SWEEP_GRACE_S = 3600.0           # claims/temp files used more recently are never swept
STALE_RUNNING_S = 24 * 3600.0    # a "running" run this old is given up on even if its pid lives
INTERRUPTED = "process stopped: the process recording this run ended before it finished"
HOST = socket.gethostname()
PARAM_KEYS = ("source", "segmenter", "clicks", "box", "mask_options", "background", "prompt",
              "negative", "seed", "steps", "guidance", "strength", "scheduler", "model", "variants",
              "device", "status", "output_seeds")

# Test hook: called with the operation name after files are written and rows are flushed, just
# before COMMIT (the crash tests sleep here and get SIGKILLed). Never set in production.
_before_commit_hook: Optional[Callable[[str], None]] = None

ImageLike = Any   # np.ndarray HxWx3 uint8, or an object with .rgb (and .hash) like LoadedImage


# ----------------------------------------------------------------------------------- records --
@dataclass(frozen=True)
class SourceRecord:
    id: int
    hash: str
    width: int
    height: int
    path: Path            # absolute path of the PNG
    thumb_path: Path      # absolute path of the WebP thumbnail


@dataclass(frozen=True)
class MaskRecord:
    id: int
    hash: str
    width: int
    height: int
    path: Path            # absolute path of the PNG (L, 255 = subject)


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
    path: Path            # absolute path of the full-size PNG (RGB, or RGBA for transparent)
    thumb_path: Path      # absolute path of the WebP thumbnail (long side 256)


@dataclass(frozen=True)
class RunRecord:
    id: int
    created: datetime     # aware, UTC
    finished: Optional[datetime]
    status: str           # running | succeeded | failed | cancelled
    source: SourceRecord
    source_name: str
    segmenter: Optional[str]
    clicks: tuple[tuple[float, float, int], ...]   # (x, y, label) in original pixels
    box: Optional[tuple[float, float, float, float]]
    mask_options: dict[str, Any]
    background: str       # str(BackgroundSpec), e.g. "sd", "color:#00ff00"
    background_kind: str  # the part before ":"
    prompt: Optional[str]
    negative: Optional[str]
    seed: Optional[int]
    steps: Optional[int]
    guidance: Optional[float]
    strength: Optional[float]
    scheduler: Optional[str]
    model: Optional[str]
    variants: int
    timings: dict[str, float]
    device: Optional[str]
    error: Optional[str]
    duration: Optional[float]
    mask: Optional[MaskRecord]
    outputs: tuple[OutputRecord, ...]

    @property
    def favorite(self) -> bool:
        return any(o.favorite for o in self.outputs)

    def params(self) -> dict[str, Any]:
        """The parameters that made this run (what compare() puts side by side)."""
        return {
            "source": self.source.hash, "segmenter": self.segmenter,
            "clicks": [list(c) for c in self.clicks], "box": list(self.box) if self.box else None,
            "mask_options": self.mask_options, "background": self.background,
            "prompt": self.prompt, "negative": self.negative, "seed": self.seed,
            "steps": self.steps, "guidance": self.guidance, "strength": self.strength,
            "scheduler": self.scheduler, "model": self.model, "variants": self.variants,
            "device": self.device, "status": self.status,
            "output_seeds": [o.seed for o in self.outputs],
        }

    def summary(self) -> dict[str, Any]:
        """A short JSON-ready row for lists (`history list`): no paths, no per-stage detail."""
        return {"id": self.id, "created": self.created.isoformat(), "status": self.status,
                "source_name": self.source_name, "background": self.background,
                "prompt": self.prompt, "negative": self.negative, "model": self.model,
                "seed": self.seed, "steps": self.steps, "guidance": self.guidance,
                "outputs": len(self.outputs), "favorite": self.favorite,
                "duration": self.duration, "error": self.error}

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready: paths and datetimes as strings (for `history list --json`)."""
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


# ------------------------------------------------------------------------------------ helpers --
def _now() -> datetime:
    return datetime.now(timezone.utc).replace(tzinfo=None)


def _naive_utc(dt: Optional[datetime]) -> Optional[datetime]:
    if dt is None:
        return None
    if not isinstance(dt, datetime):
        raise InvalidOptionError(f"expected a datetime, got {type(dt).__name__}")
    return dt.astimezone(timezone.utc).replace(tzinfo=None) if dt.tzinfo else dt


def _aware(dt: Optional[datetime]) -> Optional[datetime]:
    return dt.replace(tzinfo=timezone.utc) if dt is not None else None


def _text(value: Optional[str]) -> Optional[str]:
    """Text as stored: NUL removed (PostgreSQL cannot hold it and it ends C strings)."""
    if value is None:
        return None
    return str(value).replace("\x00", "")


def search_text(prompt: Optional[str], negative: Optional[str]) -> str:
    return f"{prompt or ''}\n{negative or ''}".casefold()


def _jsonable(value: Any) -> Any:
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        if dataclasses.is_dataclass(o) and not isinstance(o, type):
            return dataclasses.asdict(o)
        if isinstance(o, (set, frozenset)):
            return sorted(o)
        return str(o)
    return json.loads(json.dumps(value, default=default))


def _clicks(clicks: Iterable[Any]) -> list[list[Any]]:
    out = []
    for c in clicks or ():
        if hasattr(c, "x"):
            x, y, label = c.x, c.y, getattr(c, "label", 1)
        else:
            c = tuple(c)
            if len(c) not in (2, 3):
                raise InvalidOptionError(f"a click must be (x, y) or (x, y, label), got {c!r}")
            x, y, label = (*c, 1) if len(c) == 2 else c
        out.append([float(x), float(y), int(label)])
    return out


def _box(box: Optional[Sequence[float]]) -> Optional[list[float]]:
    if box is None:
        return None
    box = [float(v) for v in box]
    if len(box) != 4:
        raise InvalidOptionError(f"a box must be (x1, y1, x2, y2), got {len(box)} numbers")
    return box


def _options(opts: Any) -> dict[str, Any]:
    if opts is None:
        return {}
    if dataclasses.is_dataclass(opts) and not isinstance(opts, type):
        opts = dataclasses.asdict(opts)
    if not isinstance(opts, Mapping):
        raise InvalidOptionError(f"mask options must be a mapping or dataclass, got {type(opts).__name__}")
    return _jsonable(dict(opts))


def _timings(timings: Optional[Mapping[str, float]]) -> dict[str, float]:
    return {str(k): float(v) for k, v in (timings or {}).items()}


def _int(v: Any) -> Optional[int]:
    return None if v is None else int(v)


def _float(v: Any) -> Optional[float]:
    return None if v is None else float(v)


def _owner_gone(owner: str) -> bool:
    host, _, pid = owner.rpartition(":")
    if host != HOST or not pid.isdigit():
        return False          # another machine (or unknown): only the age limit applies
    return not pid_alive(int(pid))


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


def encode_cursor(created: datetime, run_id: int) -> str:
    return f"{created.isoformat()}|{run_id}"


def decode_cursor(cursor: str) -> tuple[datetime, int]:
    try:
        created, run_id = cursor.rsplit("|", 1)
        return _naive_utc(datetime.fromisoformat(created)), int(run_id)
    except (ValueError, AttributeError) as e:
        raise InvalidOptionError(f"not a history page cursor: {cursor!r}") from e


def _chunks(items: Sequence[Any], n: int = 500) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i:i + n]


# -------------------------------------------------------------------------------------- store --
class HistoryStore:
    """History of runs in one database (`url`) with image files under `data_dir`."""

    def __init__(self, url: Optional[str] = None, data_dir: Optional[Path] = None):
        self.url = url or config.database_url()
        self.data_dir = Path(data_dir) if data_dir is not None else config.data_dir()
        self.engine = db.get_engine(self.url)
        self._writer = db.write_engine(self.engine)
        db.ensure_schema(self.engine)
        self.store_id = self._identify()
        self.blobs = BlobStore(self.data_dir, self.store_id)
        self.swept = False            # open_store: whether this process has swept files yet

    def __repr__(self) -> str:
        return f"HistoryStore({self.engine.url!r}, data_dir={str(self.data_dir)!r})"

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
                    BlobStore(self.data_dir, sid).claim(sorted(digests))
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
            if "locked" in msg or "busy" in msg:
                raise HistoryError("the history database is busy (locked by another process "
                                   "for too long); try again") from e
            raise HistoryError(f"history database error: {msg}") from e
        except OSError as e:
            raise HistoryError(f"cannot write history files under {self.data_dir}: "
                               f"{e.strerror or e}") from e

    def _hook(self, op: str) -> None:
        if _before_commit_hook is not None:
            _before_commit_hook(op)

    # -- writing -------------------------------------------------------------------------------
    def _source_blob(self, source: Union[ImageLike, str]) -> tuple[Optional[Blob], str]:
        if isinstance(source, str):
            return None, source
        rgb = getattr(source, "rgb", source)
        rgb = check_image(rgb, "the source image")
        digest = getattr(source, "hash", None)
        with self._errors():
            return self.blobs.prepare(rgb, thumb=True, digest=digest), (digest or "")

    def _output_blobs(self, outputs: Iterable[Any]) -> list[tuple[Blob, Optional[int]]]:
        prepared = []
        for i, item in enumerate(outputs or ()):
            arr, seed = (item if isinstance(item, tuple) else (item, None))
            arr = check_image(arr, f"output {i}")
            with self._errors():
                prepared.append((self.blobs.prepare(arr, thumb=True), _int(seed)))
        return prepared

    def _mask_blob(self, mask: Optional[np.ndarray]) -> Optional[Blob]:
        if mask is None:
            return None
        arr = check_image(mask, "the mask", mask=True)
        with self._errors():
            return self.blobs.prepare(arr, thumb=False)

    def _ensure(self, *blobs: Optional[Blob]) -> None:
        """Re-check, under the write lock, that our files are still there (a concurrent delete or
        sweep may have removed a file we reused); rewrite any that vanished."""
        for blob in blobs:
            if blob is not None:
                self.blobs.ensure(blob)

    def _get_source(self, session: Session, blob: Optional[Blob], digest: str) -> Source:
        key = blob.digest if blob is not None else digest
        src = session.scalar(select(Source).where(Source.hash == key))
        if src is None:
            if blob is None:
                raise HistoryError(f"no source image with hash {key[:12]}… in the history; "
                                   "pass the image itself")
            src = Source(hash=blob.digest, width=blob.width, height=blob.height, path=blob.path,
                         thumb_path=blob.thumb_path, created=_now())
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
                        created=_now())
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
    def _columns(*, source_name: str = "", segmenter: Optional[str] = None,
                 clicks: Iterable[Any] = (), box: Optional[Sequence[float]] = None,
                 mask_options: Any = None, background: str = "", prompt: Optional[str] = None,
                 negative: Optional[str] = None, seed: Optional[int] = None,
                 steps: Optional[int] = None, guidance: Optional[float] = None,
                 strength: Optional[float] = None, scheduler: Optional[str] = None,
                 model: Optional[str] = None, variants: int = 1,
                 device: Optional[str] = None) -> dict[str, Any]:
        background = _text(str(background or "")) or ""
        prompt, negative = _text(prompt), _text(negative)
        return dict(
            source_name=_text(source_name) or "", segmenter=_text(segmenter),
            clicks=_clicks(clicks), box=_box(box), mask_options=_options(mask_options),
            background=background, background_kind=background.split(":", 1)[0][:16],
            prompt=prompt, negative=negative, seed=_int(seed), steps=_int(steps),
            guidance=_float(guidance), strength=_float(strength), scheduler=_text(scheduler),
            model=_text(model), variants=int(variants or 1), device=_text(device),
            search_text=search_text(prompt, negative))

    def _retry(self, fn: Callable[[], Any]) -> Any:
        """Run a write transaction; retry once on a unique-key race (servers other than SQLite,
        where BEGIN IMMEDIATE does not serialise writers)."""
        for attempt in range(3):
            try:
                return fn()
            except HistoryError as e:
                if isinstance(e.__cause__, IntegrityError) and attempt < 2:
                    continue
                raise

    def start_run(self, *, source: Union[ImageLike, str], created: Optional[datetime] = None,
                  **params: Any) -> int:
        """Record a run as "running" before any work is done; returns its id.

        `source`: HxWx3 uint8 array, an object with `.rgb` (and `.hash`) such as LoadedImage, or
        the content hash of a source already in the history. `params`: see `_columns`
        (source_name, segmenter, clicks, box, mask_options, background, prompt, negative, seed,
        steps, guidance, strength, scheduler, model, variants, device)."""
        cols = self._columns(**params)
        blob, digest = self._source_blob(source)

        def tx() -> int:
            with self._write() as session:
                self._ensure(blob)
                src = self._get_source(session, blob, digest)
                run = Run(created=_naive_utc(created) or _now(), status="running",
                          owner=f"{HOST}:{os.getpid()}", source=src, timings={}, **cols)
                session.add(run)
                session.flush()
                return run.id
        return self._retry(tx)

    def finish_run(self, run_id: int, *, mask: Optional[np.ndarray] = None,
                   outputs: Iterable[Any] = (), timings: Optional[Mapping[str, float]] = None,
                   device: Optional[str] = None, duration: Optional[float] = None,
                   status: str = "succeeded") -> None:
        """Attach the mask (HxW uint8) and outputs (arrays, or (array, seed) pairs) to a started run
        and mark it succeeded. Files are written first, then ONE transaction commits the rows."""
        if status not in RUN_STATUSES or status == "running":
            raise InvalidOptionError(f"unknown final status {status!r}")
        mask_blob = self._mask_blob(mask)
        out_blobs = self._output_blobs(outputs)

        def tx() -> None:
            with self._write() as session:
                run = session.get(Run, run_id)
                if run is None:
                    raise HistoryError(f"run {run_id} is not in the history (deleted?)")
                self._ensure(mask_blob, *(b for b, _ in out_blobs))
                m = self._get_mask(session, mask_blob)
                if m is not None:
                    run.mask = m
                self._add_outputs(run, out_blobs)
                self._finish(run, status, None, timings, device, duration)
                session.flush()
                self._hook("finish_run")
        self._retry(tx)

    def fail_run(self, run_id: int, error: str, *, status: str = "failed",
                 timings: Optional[Mapping[str, float]] = None, device: Optional[str] = None,
                 mask: Optional[np.ndarray] = None) -> None:
        """Mark a started run failed or cancelled, keeping the error text (and the mask if any)."""
        if status not in ("failed", "cancelled"):
            raise InvalidOptionError(f"a run ends as failed or cancelled, not {status!r}")
        mask_blob = self._mask_blob(mask)

        def tx() -> None:
            with self._write() as session:
                run = session.get(Run, run_id)
                if run is None:
                    raise HistoryError(f"run {run_id} is not in the history (deleted?)")
                self._ensure(mask_blob)
                m = self._get_mask(session, mask_blob)
                if m is not None:
                    run.mask = m
                self._finish(run, status, error, timings, device, None)
                self._hook("fail_run")
        self._retry(tx)

    @staticmethod
    def _finish(run: Run, status: str, error: Optional[str], timings, device, duration) -> None:
        now = _now()
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
                   **params: Any) -> int:
        """Record a finished run in one go (files first, then one transaction); returns its id."""
        if status not in RUN_STATUSES or status == "running":
            raise InvalidOptionError(f"unknown final status {status!r}")
        cols = self._columns(**params)
        blob, digest = self._source_blob(source)
        mask_blob = self._mask_blob(mask)
        out_blobs = self._output_blobs(outputs)
        tm = _timings(timings)

        def tx() -> int:
            with self._write() as session:
                self._ensure(blob, mask_blob, *(b for b, _ in out_blobs))
                src = self._get_source(session, blob, digest)
                now = _now()
                run = Run(created=_naive_utc(created) or now, finished=now, status=status,
                          owner="", source=src, mask=self._get_mask(session, mask_blob),
                          timings=tm, error=_text(error),
                          duration=(float(duration) if duration is not None
                                    else sum(tm.values()) if tm else None),
                          **cols)
                session.add(run)
                self._add_outputs(run, out_blobs)
                session.flush()
                self._hook("record_run")
                return run.id
        return self._retry(tx)

    def set_favorite(self, output_id: int, favorite: bool = True) -> None:
        with self._write() as session:
            out = session.get(Output, output_id)
            if out is None:
                raise HistoryError(f"output {output_id} is not in the history")
            out.favorite = bool(favorite)

    def delete_run(self, run_id: int) -> int:
        """Delete a run, its outputs, and its mask/source rows when no other run uses them; remove
        the files no remaining row uses. Returns the number of files removed."""
        with self._write() as session:
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
            unused = digests - self._referenced(session, sorted(digests))
            # Released while we hold the write lock: a writer of this database reusing one of these
            # images claims it again under the same lock (_ensure) and rewrites it.
            with self._errors():
                removed, _ = self.blobs.release(sorted(unused))
            return removed

    @staticmethod
    def _referenced(session: Session, digests: Sequence[str]) -> set[str]:
        found: set[str] = set()
        for chunk in _chunks(list(digests)):
            for model in (Source, Mask, Output):
                found.update(session.scalars(select(model.hash).where(model.hash.in_(chunk))))
        return found

    # -- sweeping ------------------------------------------------------------------------------
    def sweep(self, grace_s: Optional[float] = None,
              stale_after_s: float = STALE_RUNNING_S) -> SweepReport:
        """Crash recovery: recover_runs(), then delete the image files this database claims but no
        row of it uses any more (a run whose process died between writing files and committing),
        and our own temp files left by dead writers. Only claims not used for `grace_s` (default
        SWEEP_GRACE_S; env BACKDROP_SWEEP_GRACE_S) are considered, so a run in flight in another
        process keeps its files; an image another database claims, or nobody claims, is never
        deleted (see core/history/blobs.py)."""
        if grace_s is None:
            grace_s = float(os.environ.get("BACKDROP_SWEEP_GRACE_S", SWEEP_GRACE_S))
        interrupted = self.recover_runs(stale_after_s)
        cutoff = time.time() - grace_s
        removed = removed_bytes = 0
        present: set[str] = set()
        with self._errors():
            for rel, st in self.blobs.walk():
                if digest_of(rel) is not None:
                    present.add(rel)
                    continue
                name = rel.rsplit("/", 1)[-1]
                legacy_temp = name.startswith(".") and name.endswith(".tmp") and st.st_mtime < cutoff
                if legacy_temp or is_stale_temp(self.blobs.abs(rel), max_age_s=grace_s):
                    size = self.blobs.remove(rel)
                    if size is not None:
                        removed, removed_bytes = removed + 1, removed_bytes + size
            candidates = sorted(d for d, mtime in self.blobs.claims() if mtime < cutoff)
        with self._write() as session:
            unused = set(candidates) - self._referenced(session, candidates)
            with self._errors():
                n, freed = self.blobs.release(sorted(unused), older_than=cutoff)
            removed, removed_bytes = removed + n, removed_bytes + freed
            present.difference_update(r for d in unused for r in (image_rel(d), thumb_rel(d)))
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
        with self._read() as session:
            rows = session.execute(select(Run.id, Run.owner, Run.created)
                                   .where(Run.status == "running")).all()
        limit = _now() - timedelta(seconds=stale_after_s)
        dead = [r.id for r in rows if r.created < limit or _owner_gone(r.owner)]
        if not dead:
            return 0
        with self._write() as session:
            result = session.execute(
                update(Run).where(Run.id.in_(dead), Run.status == "running")
                .values(status="failed", error=INTERRUPTED, finished=_now(), owner=""))
            return result.rowcount

    # -- reading -------------------------------------------------------------------------------
    def _record(self, run: Run) -> RunRecord:
        base = self.data_dir
        src = run.source
        mask = run.mask
        return RunRecord(
            id=run.id, created=_aware(run.created), finished=_aware(run.finished),
            status=run.status,
            source=SourceRecord(src.id, src.hash, src.width, src.height, base / src.path,
                                base / src.thumb_path),
            source_name=run.source_name, segmenter=run.segmenter,
            clicks=tuple((float(x), float(y), int(l)) for x, y, l in (run.clicks or [])),
            box=tuple(run.box) if run.box else None, mask_options=dict(run.mask_options or {}),
            background=run.background, background_kind=run.background_kind, prompt=run.prompt,
            negative=run.negative, seed=run.seed, steps=run.steps, guidance=run.guidance,
            strength=run.strength, scheduler=run.scheduler, model=run.model,
            variants=run.variants, timings=dict(run.timings or {}), device=run.device,
            error=run.error, duration=run.duration,
            mask=MaskRecord(mask.id, mask.hash, mask.width, mask.height, base / mask.path)
            if mask is not None else None,
            outputs=tuple(OutputRecord(o.id, o.run_id, o.index, o.seed, o.favorite, o.hash,
                                       o.width, o.height, base / o.path, base / o.thumb_path)
                          for o in run.outputs))

    def get_run(self, run_id: int) -> RunRecord:
        """Everything about one run; HistoryError if there is no such run."""
        return self.get_runs([run_id])[0]

    def get_runs(self, ids: Sequence[int]) -> list[RunRecord]:
        """Several runs in the order of `ids`; HistoryError naming the ids that do not exist."""
        ids = [int(i) for i in ids]
        found: dict[int, RunRecord] = {}
        with self._read() as session:
            for chunk in _chunks(sorted(set(ids))):
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
            conds.append(Run.created >= _naive_utc(q.since))
        if q.until is not None:
            conds.append(Run.created < _naive_utc(q.until))
        if q.source_hash:
            conds.append(Run.source.has(Source.hash == q.source_hash))
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
        with self._read() as session:
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
        with self._read() as session:
            return int(session.scalar(select(func.count(Run.id)).where(*self._where(query))))

    def compare(self, ids: Sequence[int]) -> Comparison:
        """Parameters of several runs side by side, and the keys whose values differ."""
        runs = self.get_runs(ids)
        params = [r.params() for r in runs]
        table = {k: tuple(p[k] for p in params) for k in PARAM_KEYS}
        differing = tuple(k for k, vals in table.items()
                          if any(json.dumps(v, sort_keys=True) != json.dumps(vals[0], sort_keys=True)
                                 for v in vals[1:]))
        return Comparison(tuple(r.id for r in runs), table, differing)

    def facets(self) -> dict[str, list[str]]:
        """Distinct values for filter widgets: {"model": [...], "background_kind": [...],
        "status": [...]}."""
        with self._read() as session:
            return {name: sorted(v for v in session.scalars(select(col).distinct()) if v)
                    for name, col in (("model", Run.model), ("background_kind", Run.background_kind),
                                      ("status", Run.status))}


# ------------------------------------------------------------------------------------ opening --
_stores: dict[tuple[int, str, str], HistoryStore] = {}
_stores_lock = threading.Lock()


def open_store(url: Optional[str] = None, data_dir: Optional[Path] = None, *,
               sweep: bool = False) -> HistoryStore:
    """The store for `url` (default config.database_url()) and `data_dir` (default
    config.data_dir()), migrated to the newest schema. The first open in a process marks runs of
    dead processes failed (recover_runs); with sweep=True (what writers and the app server pass)
    it also deletes this database's unused files (sweep()). Read-only callers never delete. Later
    opens return the same object."""
    url = url or config.database_url()
    root = str(Path(data_dir) if data_dir is not None else config.data_dir())
    key = (os.getpid(), url, root)
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = HistoryStore(url, Path(root))
            store.sweep() if sweep else store.recover_runs()
            store.swept = sweep
            _stores[key] = store
        elif sweep and not store.swept:
            store.sweep()
            store.swept = True
        return store
