"""The engine in this process: the models, core.jobs and the history store on this machine."""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Optional

import numpy as np

from core.engine import (CAN_CANCEL, CAN_IMAGE_BACKGROUND, CAN_LIVE_PREVIEW, CAN_LOCAL_MODELS,
                         CAN_SKIP_HISTORY, embedding_handle)


class LocalEngine:
    """Everything in-process: segmenters from core.segment's shared registry, runs by
    core.jobs.run_job, files and runs from the configured history store."""

    label = "generating the background"
    where = ""
    parallel_runs = 1
    CAPABILITIES = frozenset({CAN_CANCEL, CAN_IMAGE_BACKGROUND, CAN_LIVE_PREVIEW, CAN_LOCAL_MODELS,
                              CAN_SKIP_HISTORY})

    @property
    def history_id(self) -> str:
        from core import config
        return config.database_url()

    def can(self, capability: str) -> bool:
        return capability in self.CAPABILITIES

    # -- clicks ------------------------------------------------------------------------------
    def segmenter(self, name: str, session: Optional[MutableMapping] = None):
        from core.segment import get_segmenter
        return get_segmenter(name)

    def keep_upload(self, session: MutableMapping, photo_hash: str, data: bytes) -> None:
        """Nothing to keep: the pixels are here."""

    def kept_upload(self, session: MutableMapping, photo_hash: str) -> Optional[bytes]:
        return None

    def embed(self, rgb: np.ndarray, segmenter: str, session: Optional[MutableMapping] = None) -> str:
        self.segmenter(segmenter).prepare(rgb)
        return embedding_handle(segmenter, rgb)

    def segment(self, rgb: np.ndarray, request, segmenter: str,
                size: Optional[tuple[int, int]] = None, session: Optional[MutableMapping] = None):
        return self.segmenter(segmenter).segment(rgb, request, out_size=size)

    # -- runs --------------------------------------------------------------------------------
    def run(self, request, *, record: bool = True, progress=None, cancel=None, preview=None,
            started=None, original: Optional[bytes] = None, reuse: bool = False):
        from core.jobs import run_job
        return run_job(request, record=record, progress=progress, cancel=cancel, preview=preview,
                       started=started)

    # -- history -----------------------------------------------------------------------------
    def _store(self):
        from core.history import open_store
        return open_store()

    def file(self, digest: str, thumb: bool = False) -> bytes:
        from core.errors import HistoryError
        from core.service.photos import blob_bytes
        blob = blob_bytes(self._store(), digest, thumb)
        if blob is None:
            raise HistoryError(f"no file with hash {digest[:12]}… in the image store")
        return blob

    def runs(self, limit: int = 48, batch: Optional[str] = None) -> list[dict[str, Any]]:
        from core.history import RunQuery
        return [r.summary() for r in self._store().list_runs(RunQuery(batch=batch), limit=limit)]

    def get_run(self, run_id: int) -> dict[str, Any]:
        return self._store().get_run(run_id).summary()
