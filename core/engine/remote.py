"""The engine on the team service (BACKDROP_SERVER_URL): every click, run and file is an HTTP
request to core/service/api.py through core.service.client.ServiceClient; httpx is imported only
when the first request is made, and Ray never in this process.

Clicks: prepare(rgb) POSTs the photo once to /v1/embed (the file as uploaded when keep_upload has
it); the service keeps the embedding on one replica and routes the photo's clicks there. The handle
is kept in the person's session mapping (EMBEDDINGS_KEY, keyed by photo hash and segmenter); every
click is one small POST /v1/segment with that handle and the preview size, answered with masks at
that size as a core.segment.SegmentResult. A handle the service no longer holds (evicted, or its
replica restarted: "no longer held") is embedded again once, transparently.

Runs: POST /v1/replace with the photo and the RunSpec (the service segments the clicks itself, or
finds the subject with subject.auto and answers how sure it is, and records the run in ITS history,
with its own model and edge fallbacks), then the outputs are fetched by hash (GET /v1/files/{hash}).
"""
from __future__ import annotations

import io
import logging
import threading
from collections.abc import MutableMapping
from typing import Any, Optional

import numpy as np

from core.engine import IMAGE_BACKGROUND_NOTE
from core.errors import BackdropError, ImageError, InvalidOptionError

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0     # a service that does not answer the connection: fail fast, one line
REQUEST_TIMEOUT_S = 900.0    # a Quality run on a busy service may take minutes
EMBEDDINGS_KEY = "remote_embeddings"     # session: {(photo hash, segmenter): embedding handle}
ORIGINALS_KEY = "remote_originals"       # session: {photo hash: the file as uploaded}, current photo
ROW_KEYS = ("id", "created", "status", "source_name", "background", "prompt", "model", "outputs",
            "favorite", "batch", "duration", "error", "spec")


def _expired(error: BaseException) -> bool:
    """Whether a /v1/segment failure by handle means the service no longer holds the embedding.
    By handle no photo is decoded, so an ImageError there can only be that."""
    return isinstance(error, ImageError) or "no longer held" in str(error)


def _decode(blob: bytes) -> np.ndarray:
    """A PNG output from the service -> HxWx3 RGB or HxWx4 RGBA uint8, as run_job returns them."""
    from PIL import Image

    img = Image.open(io.BytesIO(blob))
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    return np.asarray(img)


def _row(run: dict) -> dict:
    """A service run (GET /v1/runs) as a local RunRecord.summary() row."""
    return {k: len(run.get(k) or ()) if k == "outputs" else run.get(k) for k in ROW_KEYS}


class RemoteSegmenter:
    """The Segmenter protocol (prepare / segment) over the service. `handles` is the session's
    {(photo hash, segmenter): handle} mapping; prepare may run in a worker thread (it only sets
    one key of that plain dict, never Streamlit state)."""

    remote = True      # the service holds the full photo: clicks go in ORIGINAL pixels (ui.prompts)

    def __init__(self, name: str, client, handles: dict, originals: Optional[dict] = None):
        self.name, self.client, self.handles = name, client, handles
        self.originals = originals or {}

    def _key(self, rgb: np.ndarray) -> tuple[str, str]:
        from core.segment import image_key
        return image_key(rgb), self.name

    def prepare(self, rgb: np.ndarray) -> str:
        """Send the photo once; the service computes and keeps its embedding. Returns the handle."""
        key = self._key(rgb)
        out = self.client.embed(photo=self.originals.get(key[0], rgb), segmenter=self.name)
        self.handles[key] = out["embedding"]
        return out["embedding"]

    def segment(self, rgb: np.ndarray, request, out_size: Optional[tuple[int, int]] = None):
        """Masks for `request` (ORIGINAL pixels) at `out_size`, computed by the service from the
        embedding it holds (embedded first when this session has no handle for the photo)."""
        from core.segment import SegmentResult

        handle = self.handles.get(self._key(rgb)) or self.prepare(rgb)
        try:
            out = self.client.segment(request, embedding=handle, size=out_size)
        except (ImageError, InvalidOptionError) as e:
            if not _expired(e):
                raise
            log.info("embedding %s no longer held by the service; embedding again", handle)
            out = self.client.segment(request, embedding=self.prepare(rgb), size=out_size)
        return SegmentResult(masks=np.asarray(out["masks"], dtype=bool),
                             scores=np.asarray(out["scores"], dtype=np.float32), best=int(out["best"]))


class RemoteEngine:
    """The service at `url` with bearer `token`: one thread-safe ServiceClient, made on first use."""

    label = "running on the Backdrop service"
    parallel_runs = 8            # the service spreads a batch over its replicas
    CAPABILITIES: frozenset = frozenset()

    def __init__(self, url: str, token: Optional[str] = None):
        from core.service.client import _without_credentials
        self.url, self.token = url, token
        self.where = _without_credentials(url).rstrip("/")
        self.history_id = self.where
        self._client = None
        self._lock = threading.Lock()

    def can(self, capability: str) -> bool:
        return capability in self.CAPABILITIES

    @property
    def client(self):
        """The ServiceClient (BackdropError, one line, when none can be made: e.g. a bad token)."""
        with self._lock:
            if self._client is None:
                import httpx

                from core.service.client import ServiceClient
                self._client = ServiceClient(self.url, self.token, timeout=httpx.Timeout(
                    REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))
            return self._client

    # -- clicks ------------------------------------------------------------------------------
    def segmenter(self, name: str, session: Optional[MutableMapping] = None) -> RemoteSegmenter:
        session = {} if session is None else session
        handles = session.get(EMBEDDINGS_KEY)
        if not isinstance(handles, dict):
            handles = {}
            session[EMBEDDINGS_KEY] = handles
        try:
            client = self.client
        except Exception as e:       # the app's log says why (the page shows the one line)
            log.warning("no client for the Backdrop service at %s: %s", self.url, e)
            raise
        return RemoteSegmenter(name, client, handles, session.get(ORIGINALS_KEY))

    def keep_upload(self, session: MutableMapping, photo_hash: str, data: bytes) -> None:
        session[ORIGINALS_KEY] = {photo_hash: bytes(data)}    # the current photo only

    def kept_upload(self, session: MutableMapping, photo_hash: str) -> Optional[bytes]:
        return (session.get(ORIGINALS_KEY) or {}).get(photo_hash)

    def embed(self, rgb: np.ndarray, segmenter: str, session: Optional[MutableMapping] = None) -> str:
        return self.segmenter(segmenter, session).prepare(rgb)

    def segment(self, rgb: np.ndarray, request, segmenter: str,
                size: Optional[tuple[int, int]] = None, session: Optional[MutableMapping] = None):
        return self.segmenter(segmenter, session).segment(rgb, request, out_size=size)

    # -- runs --------------------------------------------------------------------------------
    def run(self, request, *, record: bool = True, progress=None, cancel=None, preview=None,
            started=None, original: Optional[bytes] = None, reuse: bool = False):
        """One run on the service -> core.jobs.JobResult with the outputs fetched at full size.
        `original`: the photo's file as uploaded (kept_upload), sent instead of a PNG of its
        pixels. `reuse`: a run the service already has for the same input is answered with that
        one. Blocking: call it in a worker."""
        from core.jobs import JobResult

        if not record:
            raise InvalidOptionError("a run that is not recorded is not available through the "
                                     "Backdrop service: the service records every run")
        if request.spec.background.kind == "image":
            raise InvalidOptionError(IMAGE_BACKGROUND_NOTE)
        client = self.client
        if progress is not None:
            progress("server", 0.0)
        out = client.replace(request.spec, photo=original if original is not None else request.image,
                             mask=request.mask, source_name=request.source_name or "", reuse=reuse,
                             batch=request.batch)
        if progress is not None:
            progress("download", 1.0)
        outputs = [_decode(client.file(o["hash"])) for o in out["outputs"]]
        if not outputs:
            raise BackdropError(f"the service finished run #{out.get('run_id')} without outputs "
                                f"(status {out.get('status')})")
        return JobResult(run_id=out.get("run_id"), outputs=outputs,
                         seeds=[o.get("seed") for o in out["outputs"]], mask=None,
                         timings=dict(out.get("timings") or {}),
                         auto_confidence=out.get("auto_confidence"))   # batch --auto's review list

    # -- history -----------------------------------------------------------------------------
    def file(self, digest: str, thumb: bool = False) -> bytes:
        return self.client.file(digest, thumb=thumb)

    def runs(self, limit: int = 48, batch: Optional[str] = None) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = []
        cursor = None
        while len(rows) < limit:
            page = self.client.runs(limit=min(200, limit - len(rows)), cursor=cursor, batch=batch)
            rows += [_row(r) for r in page["runs"]]
            cursor = page.get("next_cursor")
            if not cursor:
                break
        return rows

    def get_run(self, run_id: int) -> dict[str, Any]:
        return _row(self.client.run(run_id))
