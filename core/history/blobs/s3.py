"""The image store in an S3-compatible bucket (boto3): whole-object PUTs written once (If-None-Match),
bounded requests (BACKDROP_S3_TIMEOUT_S) with a WARNING while one waits, a store that stops
answering failing every request at once for as long, an in-memory cache of thumbnails."""
from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
import urllib.parse
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator, Optional, Union

from core.config import redact
from core.errors import HistoryError, InvalidOptionError
from core.settings import Settings, settings

log = logging.getLogger(__name__)

S3_TIMEOUT_S = Settings.model_fields["s3_timeout_s"].default  # the most one S3 request may wait, in all


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
