"""Content-addressed image files, and which databases own them: in a folder or in S3.

    images/ab/abcdef….png    full-size PNG (sources RGB, masks L, outputs RGB or RGBA)
    thumbs/ab/abcdef….webp   WebP thumbnail, long side THUMB_SIDE (sources and outputs)
    refs/<store id>/ab/abcdef…   an empty "claim": the database with that store id uses the image
    refs/<store id>/.store       where that id's database was opened (core/history/identity.py)

The name is core.images.content_hash of the array (shape, dtype and bytes), so the same image is
stored once however many rows (and databases) use it. Files are written whole (a temp file renamed
into place; one PUT on S3) BEFORE the row that points at them is committed, and an image already
there is never written again.

Where (config.blob_url(), BACKDROP_BLOB_URL):
    unset                 the data dir (FolderBackend): the layout above under BACKDROP_DATA_DIR
    /a/folder, file:///…  that folder (FolderBackend); a mounted network filesystem works as is
    s3://bucket/prefix    S3-compatible object storage (S3Backend, boto3): the same layout as keys
                          under `prefix/`; endpoint BACKDROP_S3_ENDPOINT_URL (else AWS_ENDPOINT_URL;
                          unset: AWS itself), credentials and region from the usual AWS_*
                          environment (or ~/.aws, an instance role). An image is uploaded with
                          If-None-Match: * after a HEAD found it missing: written once.

Ownership: several databases may share one image store (a copy, a test database, another team).
A database only ever deletes an image through `release`: it drops its own claim, and the files go
only when no other database's claim is left. An image nobody claims (written by an older Backdrop,
or by another tool) is never deleted. A claim's mtime (LastModified on S3) is its last use: the
sweep leaves claims younger than its grace period alone (a run in flight in another process may be
about to commit the row that uses it).

Locking: in a folder, claiming and releasing take one lock (`refs/.lock`, flock), so a writer that
claims an image either sees it still there or rewrites it. S3 has no such lock. Within ONE
database (any number of app servers over one PostgreSQL history: the team set-up) nothing is lost
even so: delete_run and the sweep announce each deletion in the database (a short write
transaction) before they release files, and a writer commits its row only if no deletion began or
ran since it checked its files, else it checks (and re-uploads) them again first
(Writes._commit_with_files). No one holds the database's write lock while the image store works,
so a slow or hung store never blocks other writers; S3 requests are bounded (S3_TIMEOUT_S, and a
store that stops answering fails every request at once for as long, with a WARNING while waiting).
What remains is a race between two DIFFERENT databases sharing one bucket prefix:
if one releases an image in the instant between the other's claim and its commit, the image can go
(the other's sweep then reports it in missing_files). Give each database its own prefix, or never
share one between databases that delete runs.
"""
from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable, Iterator, Optional, Union

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the in-process lock still serialises threads
    fcntl = None

import numpy as np

from core.config import redact
from core.errors import HistoryError, InvalidOptionError
from core.files import _make_dirs, atomic_write_bytes, fsync_dir, is_stale_temp
from core.images import content_hash, encode_png
from core.settings import Settings, settings

log = logging.getLogger(__name__)

THUMB_SIDE = 256
THUMB_QUALITY = 80
AREAS = ("images", "thumbs")  # the only folders of the data dir the store writes and sweeps
REFS = "refs"                 # refs/<store id>/ab/<digest>: claims
MARKER = ".store"             # refs/<store id>/.store: which database that id belongs to (JSON)
S3_TIMEOUT_S = Settings.model_fields["s3_timeout_s"].default  # the most one S3 request may wait, in all
_thread_lock = threading.Lock()


def image_rel(digest: str) -> str:
    return f"images/{digest[:2]}/{digest}.png"


def thumb_rel(digest: str) -> str:
    return f"thumbs/{digest[:2]}/{digest}.webp"


def claim_rel(digest: str, owner: str) -> str:
    return f"{REFS}/{owner}/{digest[:2]}/{digest}"


def marker_rel(owner: str) -> str:
    return f"{REFS}/{owner}/{MARKER}"


def s3_timeout() -> float:
    """BACKDROP_S3_TIMEOUT_S (default S3_TIMEOUT_S): how long one request to S3 may take in all."""
    value = settings().s3_timeout_s
    return min(max(value, 2.0), 600.0) if value == value else S3_TIMEOUT_S


class _Waits:
    """Requests in flight to remote image stores. One daemon thread (started on first use) logs a
    WARNING for each request still unanswered after `slow_s`, so a hung endpoint is never silent."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: dict[int, list] = {}
        self._next = 0
        self._thread: Optional[threading.Thread] = None

    @contextlib.contextmanager
    def watch(self, text: str, slow_s: float, limit_s: float) -> Iterator[None]:
        with self._lock:
            self._next += 1
            key = self._next
            self._calls[key] = [time.monotonic(), text, slow_s, limit_s, False]
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._run, name="backdrop-s3-waits",
                                                daemon=True)
                self._thread.start()
        try:
            yield
        finally:
            with self._lock:
                self._calls.pop(key, None)

    def _run(self) -> None:
        while True:
            time.sleep(0.25)
            now = time.monotonic()
            with self._lock:
                due = [c for c in self._calls.values() if not c[4] and now - c[0] >= c[2]]
                for c in due:
                    c[4] = True
            for start, text, _slow, limit, _ in due:
                log.warning("%s: no answer for %.0f s; waiting (giving up after %.0f s)",
                            text, now - start, limit)


_waits = _Waits()


def encode_thumbnail(arr: np.ndarray, side: int = THUMB_SIDE) -> bytes:
    """WebP, long side `side` (never upscaled); keeps alpha for RGBA."""
    from PIL import Image

    img = Image.fromarray(arr)
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGB")
    img.thumbnail((side, side), Image.Resampling.BILINEAR, reducing_gap=2.0)
    buf = io.BytesIO()
    img.save(buf, format="WEBP", quality=THUMB_QUALITY, method=4)
    return buf.getvalue()


def check_image(arr: np.ndarray, what: str, *, mask: bool = False) -> np.ndarray:
    """An image to store (HxWx3 or HxWx4 uint8) or a mask (HxW uint8 or bool -> 0/255), contiguous."""
    from core import arrays

    arr = arrays.mask(arr, what) if mask else arrays.image(arr, what, channels=(3, 4))
    return np.ascontiguousarray(arr)


def digest_of(rel: str) -> Optional[str]:
    """The content hash a stored file is named after, or None for anything else (temp files)."""
    name = rel.rsplit("/", 1)[-1]
    stem, dot, ext = name.partition(".")
    if len(stem) == 64 and ext in ("png", "webp") and all(c in "0123456789abcdef" for c in stem):
        return stem
    return None


@dataclass
class Blob:
    """An image to be stored: its hash, relative paths, and how to (re)write the files."""

    arr: np.ndarray
    digest: str
    thumb: bool
    written: list[str] = field(default_factory=list)

    @property
    def path(self) -> str:
        return image_rel(self.digest)

    @property
    def thumb_path(self) -> Optional[str]:
        return thumb_rel(self.digest) if self.thumb else None

    @property
    def width(self) -> int:
        return int(self.arr.shape[1])

    @property
    def height(self) -> int:
        return int(self.arr.shape[0])


# ---------------------------------------------------------------------------------- backends --
class FolderBackend:
    """The files in a folder (the data dir by default): exactly the layout Backdrop always had."""

    kind = "folder"

    def __init__(self, root: Union[str, os.PathLike]):
        self.root = Path(root)

    @property
    def location(self) -> str:
        return str(self.root)

    def abs(self, rel: str) -> Path:
        return self.root / rel

    def ref(self, rel: str) -> Path:
        """What records show for a stored file: its absolute path."""
        return self.root / rel

    def rel_of(self, ref: Union[str, os.PathLike]) -> Optional[str]:
        try:
            return Path(ref).relative_to(self.root).as_posix()
        except ValueError:
            return None

    def exists(self, rel: str) -> bool:
        return self.abs(rel).is_file()

    def read(self, rel: str) -> bytes:
        """The file's bytes; FileNotFoundError when it is not there."""
        return self.abs(rel).read_bytes()

    def put(self, rel: str, data: bytes, *, once: bool = False) -> bool:
        """Write the whole file atomically (temp file + rename). Returns True (written)."""
        atomic_write_bytes(self.abs(rel), data)
        return True

    def remove(self, rel: str) -> Optional[int]:
        """Delete one file; returns the bytes freed, or None if it was already gone."""
        path = self.abs(rel)
        try:
            size = path.stat().st_size
            path.unlink()
            return size
        except FileNotFoundError:
            return None

    def mtime(self, rel: str) -> Optional[float]:
        try:
            return self.abs(rel).stat().st_mtime
        except FileNotFoundError:
            return None

    def touch(self, rel: str) -> list[Path]:
        """Create an empty file, or bring its mtime to now. Returns the folders whose entries
        changed (to fsync with `sync`): none when the file was there."""
        path = self.abs(rel)
        try:
            os.utime(path)
            return []
        except FileNotFoundError:
            made = _make_dirs(path.parent)
            path.touch()
            return [path.parent, *(d.parent for d in made)]

    @staticmethod
    def sync(folders) -> None:
        """Make new files in `folders` durable (a claim lost in a power cut would let another
        database delete an image this one uses)."""
        for folder in dict.fromkeys(folders):
            fsync_dir(folder)

    def files(self, folder: str) -> Iterator[tuple[str, float, int]]:
        """(rel, mtime, size) of every file under `folder`, temp files included."""
        base = self.root / folder
        if not base.is_dir():
            return
        for dirpath, _dirs, names in os.walk(base):
            for name in names:
                full = os.path.join(dirpath, name)
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield os.path.relpath(full, self.root).replace(os.sep, "/"), st.st_mtime, st.st_size

    def prune(self, folder: str) -> None:
        """Remove `folder` and the folders under it that are empty (S3 has no folders)."""
        base = self.root / folder
        for dirpath, _dirs, _names in sorted(os.walk(base), key=lambda w: -len(w[0])):
            with contextlib.suppress(OSError):
                os.rmdir(dirpath)

    def children(self, folder: str) -> list[str]:
        """Names of the folders directly under `folder`."""
        base = self.root / folder
        return [p.name for p in base.iterdir() if p.is_dir()] if base.is_dir() else []

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Mutual exclusion for claim/check/unlink across threads and processes on this folder."""
        lock_path = self.root / REFS / ".lock"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock, open(lock_path, "a+b") as f:
            if fcntl is not None:
                fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            yield

    def stale_temp(self, rel: str, mtime: float, grace_s: float, cutoff: float) -> bool:
        """Whether `rel` (not a content-addressed name) is a temp file left by a dead writer."""
        name = rel.rsplit("/", 1)[-1]
        legacy = name.startswith(".") and name.endswith(".tmp") and mtime < cutoff
        return legacy or is_stale_temp(self.abs(rel), max_age_s=grace_s)

    def read_many(self, rels: list[str]) -> list[Optional[bytes]]:
        out = []
        for rel in rels:
            try:
                out.append(self.read(rel))
            except OSError:
                out.append(None)
        return out


def _s3_endpoint() -> Optional[str]:
    if settings().s3_endpoint_url:
        return settings().s3_endpoint_url
    for name in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        value = os.environ.get(name, "").strip()
        if value:
            return value
    return None


class S3Backend:
    """The files as objects in an S3-compatible bucket under `prefix/` (boto3).

    Every PUT is a whole object (atomic: readers see all of it or nothing), so there are no temp
    files. An image is written once: a HEAD finds it missing, then the PUT carries If-None-Match: *
    (a server that does not support it gets a plain PUT of the same bytes). Errors are one
    HistoryError line naming the store; a missing object is FileNotFoundError (read) or False/None."""

    kind = "s3"
    THUMB_CACHE = 2048     # thumbnails kept in memory (content-addressed: never stale)

    def __init__(self, url: str, client=None):
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise InvalidOptionError(f"not an S3 URL: {url!r} (expected s3://bucket/prefix)")
        self.bucket = parts.netloc
        prefix = parts.path.strip("/")
        self.prefix = prefix + "/" if prefix else ""
        self.endpoint = _s3_endpoint()
        self.timeout_s = s3_timeout()
        self._down: Optional[tuple[float, str]] = None    # (monotonic time until, why): not answering
        self.client = client if client is not None else self._client()
        self._conditional = True
        self._cache: OrderedDict[str, bytes] = OrderedDict()
        self._cache_lock = threading.Lock()
        self._lock = threading.Lock()

    def _client(self):
        try:
            import boto3
            from botocore.config import Config
        except ImportError as e:
            raise HistoryError("BACKDROP_BLOB_URL is an s3:// URL but boto3 is not installed "
                               "(pip install boto3)") from e
        style = settings().s3_addressing_style or ("path" if self.endpoint else "auto")
        # Two attempts of at most half the budget each: a hung endpoint costs one request
        # self.timeout_s in all, and then _errors fails every request at once for as long.
        config = Config(retries={"total_max_attempts": 2, "mode": "standard"},
                        connect_timeout=min(5.0, self.timeout_s / 4),
                        read_timeout=max(1.0, (self.timeout_s - 2) / 2), max_pool_connections=16,
                        s3={"addressing_style": style})
        with self._errors("connect to"):
            return boto3.session.Session().client("s3", endpoint_url=self.endpoint, config=config)

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}".rstrip("/")

    def key(self, rel: str) -> str:
        return self.prefix + rel

    def abs(self, rel: str) -> Path:
        raise HistoryError(f"the image store {self.location} is not a folder: read files through "
                           "the store (read)")

    def ref(self, rel: str) -> str:
        return f"s3://{self.bucket}/{self.key(rel)}"

    def rel_of(self, ref: Union[str, os.PathLike]) -> Optional[str]:
        base = f"s3://{self.bucket}/{self.prefix}"
        s = str(ref)
        return s[len(base):] if s.startswith(base) else None

    # -- errors ----------------------------------------------------------------------------------
    @staticmethod
    def _code(e: BaseException) -> str:
        response = getattr(e, "response", None) or {}
        return str(response.get("Error", {}).get("Code", ""))

    @classmethod
    def _missing(cls, e: BaseException) -> bool:
        return cls._code(e) in ("404", "NoSuchKey", "NotFound")

    @contextlib.contextmanager
    def _errors(self, what: str, rel: str = "", *, watch: bool = True) -> Iterator[None]:
        """botocore errors -> one HistoryError line naming the store. A request that gets no
        answer (timeout, connection refused or cut) marks the store down for timeout_s: every
        request in that time fails at once with the same line instead of waiting again. A request
        waiting longer than a quarter of timeout_s is logged (WARNING) while it waits (watch=False:
        a listing, whose pages are consumed as they come)."""
        target = f" {rel}" if rel else ""
        down = self._down
        if down is not None:
            if time.monotonic() < down[0]:
                raise HistoryError(f"image store {self.location}: cannot {what}{target}: {down[1]}")
            self._down = None
        try:
            if not watch:
                yield
                return
            with _waits.watch(f"image store {self.location}: {what}{target}",
                              min(5.0, self.timeout_s / 4), self.timeout_s):
                yield
        except (HistoryError, FileNotFoundError):
            raise
        except Exception as e:
            from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
            from botocore.exceptions import ConnectionError as BotoConnectionError
            if not isinstance(e, (BotoCoreError, ClientError)):
                raise
            if isinstance(e, ClientError):
                err = e.response.get("Error", {})
                reason = f"{err.get('Code', '?')}: {err.get('Message') or 'error'}"
                if err.get("Code") == "NoSuchBucket":
                    reason = f"the bucket {self.bucket!r} does not exist"
            else:
                reason = str(e).splitlines()[0] if str(e) else type(e).__name__
                if type(e).__name__ == "NoCredentialsError":
                    reason += " (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE)"
            if isinstance(e, (BotoConnectionError, HTTPClientError)):
                reason = f"not answering ({reason}); gave up after {self.timeout_s:.0f} s"
                self._down = (time.monotonic() + self.timeout_s, reason)
                log.warning("image store %s is not answering: history writes and reads that need "
                            "it fail for the next %.0f s", redact(self.location), self.timeout_s)
            raise HistoryError(redact(f"image store {self.location}: cannot {what}{target}: "
                                      f"{reason}")) from e

    # -- objects ---------------------------------------------------------------------------------
    def _head(self, rel: str) -> Optional[dict]:
        with self._errors("look up", rel):
            try:
                return self.client.head_object(Bucket=self.bucket, Key=self.key(rel))
            except Exception as e:
                if self._missing(e):
                    return None
                raise

    def exists(self, rel: str) -> bool:
        return self._head(rel) is not None

    def read(self, rel: str) -> bytes:
        """The object's bytes; FileNotFoundError when it is not there."""
        with self._cache_lock:
            data = self._cache.get(rel)
            if data is not None:
                self._cache.move_to_end(rel)
                return data
        with self._errors("read", rel):
            try:
                data = self.client.get_object(Bucket=self.bucket, Key=self.key(rel))["Body"].read()
            except Exception as e:
                if self._missing(e):
                    raise FileNotFoundError(f"{self.ref(rel)} does not exist") from None
                raise
        if rel.startswith("thumbs/"):
            with self._cache_lock:
                self._cache[rel] = data
                while len(self._cache) > self.THUMB_CACHE:
                    self._cache.popitem(last=False)
        return data

    def read_many(self, rels: list[str]) -> list[Optional[bytes]]:
        """Several objects at once (8 GETs in flight); None for each one that is missing."""
        def one(rel: str) -> Optional[bytes]:
            try:
                return self.read(rel)
            except FileNotFoundError:
                return None
        if len(rels) <= 1:
            return [one(r) for r in rels]
        with ThreadPoolExecutor(max_workers=min(8, len(rels))) as pool:
            return list(pool.map(one, rels))

    def put(self, rel: str, data: bytes, *, once: bool = False) -> bool:
        """Upload the whole object. once=True: only if it is not there yet (If-None-Match: *);
        returns False when it already was."""
        kwargs = dict(Bucket=self.bucket, Key=self.key(rel), Body=data)
        if rel.endswith(".png"):
            kwargs["ContentType"] = "image/png"
        elif rel.endswith(".webp"):
            kwargs["ContentType"] = "image/webp"
        with self._errors("upload", rel):
            for attempt in range(6):
                if not (once and self._conditional):
                    break
                try:
                    self.client.put_object(IfNoneMatch="*", **kwargs)
                    return True
                except Exception as e:
                    code = self._code(e)
                    if code in ("PreconditionFailed", "412"):
                        return False                  # someone else wrote the same content
                    if code in ("ConditionalRequestConflict", "409") and attempt < 5:
                        time.sleep(0.1 * (attempt + 1))   # ... and is writing it right now
                        continue
                    if code not in ("NotImplemented", "501"):
                        raise
                    self._conditional = False         # an S3 server without conditional PUT
            self.client.put_object(**kwargs)
            return True

    def remove(self, rel: str) -> Optional[int]:
        head = self._head(rel)
        if head is None:
            return None
        with self._errors("delete", rel):
            self.client.delete_object(Bucket=self.bucket, Key=self.key(rel))
        with self._cache_lock:
            self._cache.pop(rel, None)
        return int(head.get("ContentLength") or 0)

    def mtime(self, rel: str) -> Optional[float]:
        head = self._head(rel)
        return head["LastModified"].timestamp() if head is not None else None

    def touch(self, rel: str) -> list:
        with self._errors("write", rel):
            self.client.put_object(Bucket=self.bucket, Key=self.key(rel), Body=b"")
        return []                     # a PUT is durable once answered

    @staticmethod
    def sync(folders) -> None:
        pass

    def files(self, folder: str) -> Iterator[tuple[str, float, int]]:
        with self._errors("list", folder + "/", watch=False):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=self.key(folder.rstrip("/") + "/"))
            for page in pages:
                for obj in page.get("Contents", ()):
                    yield (obj["Key"][len(self.prefix):], obj["LastModified"].timestamp(),
                           int(obj.get("Size") or 0))

    def children(self, folder: str) -> list[str]:
        base = self.key(folder.rstrip("/") + "/")
        names = []
        with self._errors("list", folder + "/", watch=False):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket, Prefix=base, Delimiter="/")
            for page in pages:
                for cp in page.get("CommonPrefixes", ()):
                    names.append(cp["Prefix"][len(base):].rstrip("/"))
        return names

    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Threads of this process only: S3 has no lock (see the module docstring)."""
        with self._lock:
            yield

    def stale_temp(self, rel: str, mtime: float, grace_s: float, cutoff: float) -> bool:
        return False     # whole-object PUTs leave no temp objects; a foreign object is not ours


Backend = Union[FolderBackend, S3Backend]


def open_backend(url: Optional[str], data_dir: Union[str, os.PathLike]) -> Backend:
    """The image store for BACKDROP_BLOB_URL `url`: unset -> the data dir; a path or file:// URL
    -> that folder; s3://bucket/prefix -> S3Backend."""
    url = (url or "").strip()
    if not url:
        return FolderBackend(Path(data_dir))
    scheme = urllib.parse.urlsplit(url).scheme.lower()
    if scheme == "s3":
        return S3Backend(url)
    if scheme == "file":
        return FolderBackend(Path(urllib.parse.unquote(urllib.parse.urlsplit(url).path)))
    if scheme and len(scheme) > 1:      # (a Windows drive letter is not a scheme)
        raise InvalidOptionError(f"BACKDROP_BLOB_URL {url!r}: expected a folder, file:///folder or "
                                 "s3://bucket/prefix")
    return FolderBackend(Path(url).expanduser().resolve())


# ------------------------------------------------------------------------------------- store --
class BlobStore:
    """The image files in `backend` (a FolderBackend, an S3Backend, or a folder path), as seen by
    the database whose store id is `owner`."""

    def __init__(self, backend: Union[Backend, str, os.PathLike], owner: str):
        self.backend = backend if isinstance(backend, (FolderBackend, S3Backend)) \
            else FolderBackend(Path(backend))
        self.owner = owner

    @property
    def root(self) -> Optional[Path]:
        """The folder, or None on S3."""
        return getattr(self.backend, "root", None)

    @property
    def location(self) -> str:
        return self.backend.location

    def abs(self, rel: str) -> Path:
        """The file's path (folders only; HistoryError on S3: use read)."""
        return self.backend.abs(rel)

    def ref(self, rel: str) -> Union[Path, str]:
        """What records show for a stored file: an absolute Path (folder) or an s3:// URL."""
        return self.backend.ref(rel)

    def rel_of(self, ref: Union[str, os.PathLike]) -> str:
        """The store-relative name of a record's path (or of a relative name); HistoryError if
        it is not one of the store's files."""
        rel = self.backend.rel_of(ref)
        if rel is None:
            s = str(ref).replace(os.sep, "/")
            if s.startswith(AREAS) and digest_of(s):
                rel = s
            else:                       # the data dir moved, or a record of another store
                digest = digest_of(s)
                if digest is None:
                    raise HistoryError(f"{Path(s).name} is not a history image")
                rel = thumb_rel(digest) if s.endswith(".webp") else image_rel(digest)
        return rel

    # -- claims ----------------------------------------------------------------------------------
    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with self.backend.lock():
            yield

    def _claim(self, digest: str) -> list:
        return self.backend.touch(claim_rel(digest, self.owner))

    def claim(self, digests: Iterable[str]) -> None:
        """Record that this database uses these images (idempotent; refreshes the claim's age);
        the new claims are on disk (fsynced) when it returns."""
        with self._locked():
            changed = []
            for d in digests:
                changed += self._claim(d)
            self.backend.sync(changed)

    def claims(self) -> Iterator[tuple[str, float]]:
        """(digest, mtime of the claim) for every image this database claims."""
        for rel, mtime, _size in self.backend.files(f"{REFS}/{self.owner}"):
            name = rel.rsplit("/", 1)[-1]
            if digest_of(name + ".png") is not None:
                yield name, mtime

    def release(self, digests: Iterable[str], *, older_than: Optional[float] = None,
                deadline: Optional[float] = None) -> tuple[int, int]:
        """Drop this database's claim on each digest (only claims last used before `older_than`, a
        time.time(), when given) and delete the image and thumbnail of those no other database
        claims. The caller has checked that no row of its database uses them. Stops (keeping the
        rest claimed, for a later sweep) once time.time() passes `deadline`. Returns (files
        deleted, bytes freed)."""
        removed = freed = 0
        with self._locked():
            others = [o for o in self.backend.children(REFS) if o != self.owner]
            for digest in digests:
                if deadline is not None and time.time() > deadline:
                    break
                claim = claim_rel(digest, self.owner)
                if older_than is not None:
                    mtime = self.backend.mtime(claim)
                    if mtime is not None and mtime >= older_than:
                        continue                     # used again since the caller looked
                self.backend.remove(claim)
                if any(self.backend.exists(claim_rel(digest, o)) for o in others):
                    continue                         # another database still uses it
                for rel in (image_rel(digest), thumb_rel(digest)):
                    size = self.backend.remove(rel)
                    if size is not None:
                        removed += 1
                        freed += size
        return removed, freed

    def drop_claims(self) -> None:
        """Remove every file under refs/<owner>/ (its claims and marker) and nothing else: for an
        id given up before any database used it, or released by forget."""
        with self._locked():
            for rel, _mtime, _size in list(self.backend.files(f"{REFS}/{self.owner}")):
                self.backend.remove(rel)
            if isinstance(self.backend, FolderBackend):
                self.backend.prune(f"{REFS}/{self.owner}")

    def write_marker(self, info: dict) -> None:
        """Record (refs/<owner>/.store) which database this store id belongs to."""
        self.backend.put(marker_rel(self.owner), json.dumps(info, sort_keys=True).encode())

    def read_marker(self, owner: Optional[str] = None) -> Optional[dict]:
        try:
            data = self.backend.read(marker_rel(owner or self.owner))
        except FileNotFoundError:
            return None
        try:
            info = json.loads(data)
        except ValueError:
            return None
        return info if isinstance(info, dict) else None

    def owners(self) -> dict[str, dict]:
        """Every store id with claims or a marker here: {id: {"claims": n, "last_used": the newest
        claim's or marker's mtime, "marker": bool}}."""
        out: dict[str, dict] = {}
        for rel, mtime, _size in self.backend.files(REFS):
            parts = rel.split("/")
            if len(parts) < 3:
                continue
            entry = out.setdefault(parts[1], {"claims": 0, "last_used": 0.0, "marker": False})
            if len(parts) == 3 and parts[2] == MARKER:
                entry["marker"] = True
            elif len(parts) == 4 and digest_of(parts[3] + ".png") is not None:
                entry["claims"] += 1
            else:
                continue
            entry["last_used"] = max(entry["last_used"], mtime)
        return out

    # -- files -------------------------------------------------------------------------------------
    def prepare(self, arr: np.ndarray, *, thumb: bool, digest: Optional[str] = None) -> Blob:
        """Hash `arr` (unless `digest` is given), claim it and make sure its files are stored."""
        blob = Blob(arr, digest or content_hash(arr), thumb)
        self.ensure(blob)
        return blob

    def ensure(self, blob: Blob) -> None:
        """Claim the blob, then write its files that are missing (a file that exists is kept: the
        claim, taken under the lock, stops any other database from deleting it)."""
        wanted: list[tuple[str, Callable[[], bytes]]] = [(blob.path, lambda: encode_png(blob.arr))]
        if blob.thumb:
            wanted.append((blob.thumb_path, lambda: encode_thumbnail(blob.arr)))
        with self._locked():
            self.backend.sync(self._claim(blob.digest))
            missing = [(rel, produce) for rel, produce in wanted if not self.backend.exists(rel)]
        for rel, produce in missing:
            if self.backend.put(rel, produce(), once=True):
                blob.written.append(rel)

    def exists(self, rel: str) -> bool:
        return self.backend.exists(rel)

    def read(self, rel: str) -> bytes:
        """A stored file's bytes; FileNotFoundError when it is missing (HistoryError: unreadable)."""
        return self.backend.read(rel)

    def read_many(self, rels: list[str]) -> list[Optional[bytes]]:
        """Several files (concurrently on S3); None for each one missing or unreadable."""
        return self.backend.read_many(rels)

    def write(self, rel: str, data: bytes) -> None:
        """Store a whole file (atomically) under `rel`."""
        self.backend.put(rel, data)

    def remove(self, rel: str) -> Optional[int]:
        """Delete one file; returns the bytes freed, or None if it was already gone."""
        return self.backend.remove(rel)

    def walk(self) -> Iterator[tuple[str, float, int]]:
        """(rel, mtime, size) of every file in the store's image folders, temp files included."""
        for area in AREAS:
            yield from self.backend.files(area)

    def stale_temp(self, rel: str, mtime: float, grace_s: float, cutoff: float) -> bool:
        """Whether a file of walk() that is not content-addressed is our temp file left by a dead
        writer (never on S3: uploads are whole objects)."""
        return self.backend.stale_temp(rel, mtime, grace_s, cutoff)
