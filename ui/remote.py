"""Client mode: when BACKDROP_SERVER_URL is set, the app's clicks and runs go to the Backdrop
service (core/service, Ray Serve behind an HTTP API) instead of running in this process.

    BACKDROP_SERVER_URL=http://gpu-box:8000  BACKDROP_API_TOKEN=…  streamlit run streamlit_app.py

Unset (the default), nothing here is used: no httpx, no Ray, everything runs in-process as before.

Clicks: on a new photo the prepare task (ui.photo.start_prepare, in the background as in embedded
mode) calls `RemoteSegmenter.prepare`, which POSTs the photo once to /v1/embed; the service keeps
the embedding on one replica and routes the photo's clicks there. The handle it returns is kept in
session state (`state["remote_embeddings"]`, keyed by photo hash and segmenter), and every click is
one small POST /v1/segment with that handle and the preview size, answered with masks at the
preview size — a core.segment.SegmentResult like the local segmenter's, so candidates, grow,
feather and the edge overlay work unchanged. A handle the service no longer holds (evicted, or its
replica restarted: 422 "no longer held") is embedded again once, transparently.

Runs: ui.job starts `start_run` instead of core.jobs.run_job: POST /v1/replace with the photo and
the RunSpec (the service segments the clicks itself, on the replica holding the photo, and records
the run in ITS history), then the outputs are fetched by hash (GET /v1/files/{hash}) and shown and
downloadable exactly like local outputs.

History: the History page keeps reading the history database directly (ui.resources.store). In a
team deployment the app servers and the service share it (the same BACKDROP_DATABASE_URL and
BACKDROP_BLOB_URL everywhere), so runs made through the service appear there; an app whose own
database differs from the service's does not see them (the service's GET /v1/runs does).
"""
from __future__ import annotations

import io
import logging
from collections.abc import MutableMapping
from typing import Any, Optional

import numpy as np
import streamlit as st

from core import config
from core.errors import BackdropError, ImageError, InvalidOptionError
from core.settings import settings

log = logging.getLogger(__name__)

CONNECT_TIMEOUT_S = 10.0     # a service that does not answer the connection: fail fast, one line
REQUEST_TIMEOUT_S = 900.0    # a Quality run on a busy service may take minutes
EMBEDDINGS_KEY = "remote_embeddings"     # {(photo hash, segmenter): embedding handle}
ORIGINALS_KEY = "remote_originals"       # {photo hash: the file as uploaded}, the current photo only
IMAGE_BACKGROUND_NOTE = ("A background photo cannot be used through the Backdrop service (it would "
                         "have to be a file on the server): choose AI scene, Colour, Blur or Transparent.")


def server_url() -> str:
    """The service's base URL (BACKDROP_SERVER_URL), "" in embedded mode."""
    return config.server_url()


def shown_url() -> str:
    """The service's URL as the page shows it: no user or password."""
    from urllib.parse import urlsplit
    parts = urlsplit(server_url())
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return f"{parts.scheme}://{host}{parts.path}" if parts.scheme else server_url()


def is_remote() -> bool:
    """Whether the app is a client of the service (BACKDROP_SERVER_URL set and not empty)."""
    return bool(server_url())


@st.cache_resource(show_spinner=False, max_entries=4)
def _client(url: str, token: str):
    import httpx

    from core.service.client import ServiceClient
    return ServiceClient(url, token or None,
                         timeout=httpx.Timeout(REQUEST_TIMEOUT_S, connect=CONNECT_TIMEOUT_S))


def remote_client():
    """The process's ServiceClient for BACKDROP_SERVER_URL and BACKDROP_API_TOKEN (one per URL and
    token, shared by every session: it is thread-safe, one connection pool)."""
    return _client(server_url(), settings().api_token)


# ----------------------------------------------------------------------------- clicks
def _expired(error: BaseException) -> bool:
    """Whether a /v1/segment failure by handle means the service no longer holds the embedding.
    By handle no photo is decoded, so an ImageError there can only be that."""
    return isinstance(error, ImageError) or "no longer held" in str(error)


class RemoteSegmenter:
    """The Segmenter protocol (prepare / segment) over the service. `handles` is the session's
    {(photo hash, segmenter): handle} mapping; prepare may run in a worker thread (it only sets
    one key of that plain dict, never Streamlit state)."""

    remote = True

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
        masks = np.asarray(out["masks"], dtype=bool)
        return SegmentResult(masks=masks, scores=np.asarray(out["scores"], dtype=np.float32),
                             best=int(out["best"]))


def load_segmenter(state: MutableMapping, name: str) -> tuple[str, Any, list[str]]:
    """(name, RemoteSegmenter, one-line errors), as ui.prompts.load_segmenter returns in embedded
    mode; no model is loaded in this process. The segmenter is None when no client can be made."""
    from ui.widgets import one_line

    handles = state.get(EMBEDDINGS_KEY)
    if not isinstance(handles, dict):
        handles = {}
        state[EMBEDDINGS_KEY] = handles
    try:
        client = remote_client()
    except Exception as e:
        log.warning("no client for the Backdrop service at %s: %s", server_url(), e)
        return name, None, [one_line(e, "connecting to the Backdrop service")]
    return name, RemoteSegmenter(name, client, handles, state.get(ORIGINALS_KEY)), []


# ----------------------------------------------------------------------------- runs
def _decode(blob: bytes) -> np.ndarray:
    """A PNG output from the service -> HxWx3 RGB or HxWx4 RGBA uint8, as run_job returns them."""
    from PIL import Image

    img = Image.open(io.BytesIO(blob))
    if img.mode not in ("RGB", "RGBA"):
        img = img.convert("RGBA" if "A" in img.getbands() or "transparency" in img.info else "RGB")
    return np.asarray(img)


def original_file(state: MutableMapping, image) -> Optional[bytes]:
    """The file `image` (a LoadedImage) was read from, when this session uploaded it."""
    originals = state.get(ORIGINALS_KEY)
    return originals.get(image.hash) if isinstance(originals, dict) else None


def run_on_service(client, request, progress=None, original: Optional[bytes] = None):
    """One run on the service (core.jobs.JobRequest: photo, spec, optional full-size mask, name)
    -> core.jobs.JobResult with the outputs fetched at full size. `original`: the photo's file as
    uploaded, sent instead of a PNG of its pixels. Blocking: call it in a worker."""
    from core.jobs import JobResult

    spec = request.spec
    if spec.background.kind == "image":
        raise InvalidOptionError(IMAGE_BACKGROUND_NOTE)
    if progress is not None:
        progress("server", 0.0)
    out = client.replace(spec, photo=original if original is not None else request.image,
                         mask=request.mask,
                         source_name=request.source_name or "")
    if progress is not None:
        progress("download", 1.0)
    outputs = [_decode(client.file(o["hash"])) for o in out["outputs"]]
    if not outputs:
        raise BackdropError(f"the service finished run #{out.get('run_id')} without outputs "
                            f"(status {out.get('status')})")
    return JobResult(run_id=out.get("run_id"), outputs=outputs,
                     seeds=[o.get("seed") for o in out["outputs"]], mask=None,
                     timings=dict(out.get("timings") or {}))
