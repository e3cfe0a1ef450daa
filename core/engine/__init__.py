"""One engine seam: everything the app, the CLI and batch ask of Backdrop's work, whether it runs in
this process (LocalEngine) or on the team service (RemoteEngine, over core.service.client).

    engine = get_engine()            # picked once from core.settings: BACKDROP_SERVER_URL set -> remote
    seg = engine.segmenter("tiny", session)          # prepare(rgb) = embed, segment(rgb, request)
    result = engine.run(JobRequest(...), progress=..., cancel=...)    # core.jobs.JobResult
    png = engine.file(result_hash); rows = engine.runs(limit=20)

Callers never ask "client mode?": what differs between the two is a capability (`engine.can(...)`,
the CAN_* names below) or a plain attribute (`label`, `where`, `parallel_runs`). The service's
ingress (core/service/api.py) is the remote engine's other end: its routes do what LocalEngine does.
See docs/architecture.md ("How a click travels").
"""
from __future__ import annotations

import threading
from collections.abc import MutableMapping
from typing import Any, Callable, Optional, Protocol

# capabilities: what one engine can do that the other cannot
CAN_IMAGE_BACKGROUND = "image_background"   # a background photo from this machine's disk
CAN_CANCEL = "cancel"                       # stop a run between steps
CAN_LIVE_PREVIEW = "live_preview"           # pictures of the background while it is painted
CAN_SKIP_HISTORY = "skip_history"           # a run that is not recorded (--no-history)
CAN_LOCAL_MODELS = "local_models"           # models (weights, fallbacks) are on this machine

IMAGE_BACKGROUND_NOTE = ("A background photo cannot be used through the Backdrop service (it would "
                         "have to be a file on the server): choose AI scene, Colour, Blur or Transparent.")


class Engine(Protocol):
    """What the app, the CLI and batch need of Backdrop's work."""

    label: str            # what a run is doing, for a progress line ("generating the background")
    where: str            # "" in this process, else the service's URL (no password) for messages
    history_id: str       # whose run ids these are (a run id means something in one history only)
    parallel_runs: int    # photos a batch runs at once by default

    def can(self, capability: str) -> bool:
        """Whether this engine offers `capability` (one of the CAN_* names)."""

    def segmenter(self, name: str, session: Optional[MutableMapping] = None) -> Any:
        """A core.segment.Segmenter for `name`: prepare(rgb) embeds the photo (returns its
        handle), segment(rgb, request, out_size) gives masks for clicks/box. `session`: where a
        remote engine keeps this person's embedding handles (a plain mapping)."""

    def keep_upload(self, session: MutableMapping, photo_hash: str, data: bytes) -> None:
        """Remember the file a photo was uploaded as (the service then gets it as is)."""

    def kept_upload(self, session: MutableMapping, photo_hash: str) -> Optional[bytes]:
        """The file keep_upload kept for that photo, if any (None in this process)."""

    def run(self, request, *, record: bool = True, progress=None, cancel=None, preview=None,
            started: Optional[Callable[[int], None]] = None, original: Optional[bytes] = None,
            reuse: bool = False):
        """One run (core.jobs.JobRequest) -> core.jobs.JobResult with full-size outputs.
        `progress(stage, fraction)`, `cancel` (threading.Event), `preview(rgb)` and
        `started(run_id)` as core.jobs.run_job takes them (a remote run reports two stages and
        cannot be stopped). `original`: the photo's file as uploaded; `reuse`: answer a run the
        service already has for the same input with that run."""

    def file(self, digest: str, thumb: bool = False) -> bytes:
        """A stored image's bytes by content hash (PNG; WebP thumbnail with thumb)."""

    def runs(self, limit: int = 48, batch: Optional[str] = None) -> list[dict]:
        """The newest `limit` runs as short rows (core.history RunRecord.summary() keys); with
        `batch`, only that batch's runs (core.batch: its name)."""

    def get_run(self, run_id: int) -> dict:
        """One run as a row, as runs() gives them."""


def embedding_handle(segmenter: str, rgb) -> str:
    """The handle of a photo's embedding: the same on both engines (segmenter:photo hash)."""
    from core.segment import image_key
    return f"{segmenter}:{image_key(rgb)}"


_engines: dict[tuple[str, str], Engine] = {}
_lock = threading.Lock()


def get_engine() -> Engine:
    """The engine for the current settings (BACKDROP_SERVER_URL set: the service; else in-process),
    made once per URL and token and shared by every caller (both are thread-safe)."""
    from core.settings import settings

    s = settings()
    key = (s.server_url, s.api_token or "")
    with _lock:
        engine = _engines.get(key)
        if engine is None:
            if s.server_url:
                from core.engine.remote import RemoteEngine
                engine = RemoteEngine(s.server_url, s.api_token or None)
            else:
                from core.engine.local import LocalEngine
                engine = LocalEngine()
            _engines[key] = engine
    return engine
