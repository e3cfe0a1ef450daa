"""The model deployments: where the heavy work runs, one model copy per replica.

    Segmenter   the segmenter's image encoder and its click decoder (core.segment.get_segmenter):
                `embed` computes a photo's embedding once and keeps it (and the photo) on this
                replica; `segment` answers clicks/box from it. The ingress routes every request
                for a photo to the replica that holds it (Serve model multiplexing keyed by the
                photo's content hash), so a click never re-embeds while the replica keeps it.
    Inpainter   one run end to end through core.jobs.run_job with the subject mask already made:
                the inpainting model (core.inpaint.get_inpainter, loaded once per replica) for an
                "sd" background, compose for every background, and the history row and files,
                written once, here.

Both take the builder's environment (core.service.config.apply_env) before anything loads, and
report a core.errors failure as a `Failed` value rather than raising it (an exception crossing a
Ray boundary carries its traceback in its text; a `Failed` carries the one line).
"""
from __future__ import annotations

import asyncio
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from ray import serve

from core.errors import BackdropError
from core.service.config import apply_env

log = logging.getLogger("backdrop.service")

#: Photos (and so embeddings) a Segmenter replica keeps for `segment` calls by handle.
HELD_IMAGES = 6


@dataclass(frozen=True)
class Failed:
    """A core.errors failure crossing the Ray boundary: the class name and its one line."""

    kind: str
    message: str

    def raise_(self) -> None:
        import core.errors as errors
        cls = getattr(errors, self.kind, None)
        if not (isinstance(cls, type) and issubclass(cls, BackdropError)):
            cls = BackdropError
        raise cls(self.message)


def unwrap(value: Any) -> Any:
    """`value`, or the core.errors exception a deployment reported, raised here."""
    if isinstance(value, Failed):
        value.raise_()
    return value


def _failed(e: BackdropError) -> Failed:
    return Failed(type(e).__name__, str(e))


def _preload_segmenters(names) -> None:
    from core.segment import SEGMENTERS, get_segmenter
    for name in names:
        if name in SEGMENTERS:
            get_segmenter(name)


# ------------------------------------------------------------------------------------ segmenter --
@serve.deployment(name="segmenter")
class Segmenter:
    """Image embeddings and masks. Clicks and boxes are (x, y) pixels of the original photo."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = ()):
        apply_env(env)
        self._images: "OrderedDict[str, np.ndarray]" = OrderedDict()   # hash -> rgb (read-only)
        self._lock = threading.Lock()
        _preload_segmenters(preload)

    @serve.multiplexed(max_num_models_per_replica=HELD_IMAGES)
    async def _photo(self, key: str) -> str:
        """Marks this replica as the one holding photo `key` (the pixels are in self._images)."""
        return key

    async def _route(self) -> None:
        key = serve.get_multiplexed_model_id()
        if key:
            await self._photo(key)

    def _hold(self, key: str, rgb: np.ndarray) -> None:
        with self._lock:
            self._images[key] = rgb
            self._images.move_to_end(key)
            while len(self._images) > HELD_IMAGES:
                self._images.popitem(last=False)

    def _held(self, key: str) -> Optional[np.ndarray]:
        with self._lock:
            rgb = self._images.get(key)
            if rgb is not None:
                self._images.move_to_end(key)
            return rgb

    async def embed(self, name: str, rgb: np.ndarray) -> "dict | Failed":
        """Compute (or find) the embedding of `rgb` (HxWx3 uint8) with segmenter `name`."""
        await self._route()
        try:
            return await asyncio.to_thread(self._embed, name, rgb)
        except BackdropError as e:
            return _failed(e)

    def _embed(self, name: str, rgb: np.ndarray) -> dict:
        import time

        from core.segment import get_segmenter, image_key
        segmenter = get_segmenter(name)
        rgb = _readonly(rgb)
        key = image_key(rgb)
        t = time.perf_counter()
        segmenter.prepare(rgb)
        self._hold(key, rgb)
        return {"image": key, "segmenter": name, "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]), "seconds": time.perf_counter() - t}

    async def segment(self, name: str, request: dict, rgb: Optional[np.ndarray] = None,
                      key: Optional[str] = None,
                      out_size: Optional[tuple[int, int]] = None) -> "dict | Failed":
        """Masks for `request` (a core.segment.SegmentRequest as a dict) on `rgb`, or on the photo
        this replica holds under `key` (from `embed`). Returns bool masks (N, H, W), scores, best."""
        await self._route()
        try:
            return await asyncio.to_thread(self._segment, name, request, rgb, key, out_size)
        except BackdropError as e:
            return _failed(e)

    def _segment(self, name, request, rgb, key, out_size) -> dict:
        from core.errors import ImageError
        from core.segment import SegmentRequest, get_segmenter, image_key
        segmenter = get_segmenter(name)
        req = SegmentRequest.load(request)
        if rgb is None:
            rgb = self._held(key or "")
            if rgb is None:
                raise ImageError("that embedding is no longer held by the service "
                                 "(evicted or its replica restarted); send the photo again")
        else:
            rgb = _readonly(rgb)
            self._hold(image_key(rgb), rgb)
        result = segmenter.segment(rgb, req, out_size=out_size)
        return {"masks": result.masks, "scores": [float(s) for s in result.scores],
                "best": int(result.best)}

    def check_health(self) -> None:      # Serve calls this periodically; nothing to check
        return None


def _readonly(rgb: np.ndarray) -> np.ndarray:
    """A read-only view (so core.segment.image_key may memoise its hash)."""
    arr = np.asarray(rgb)
    if arr.flags.writeable:
        arr = arr.view()
        arr.flags.writeable = False
    return arr


# ------------------------------------------------------------------------------------ inpainter --
@serve.deployment(name="inpainter")
class Inpainter:
    """Runs a whole job (core.jobs.run_job) with the subject mask given, and records it."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = ()):
        apply_env(env)
        from core.segment import SEGMENTERS
        models = [m for m in preload if m not in SEGMENTERS]
        if models:
            from core import config
            from core.inpaint import get_inpainter
            for model in models:
                get_inpainter(model, mode=config.default_mode())

    def run(self, rgb: np.ndarray, alpha: Optional[np.ndarray], fmt: str, spec: dict,
            mask: np.ndarray, source_name: str = "") -> "dict | Failed":
        """One run: returns {"run_id", "status", "outputs": [{hash, seed, width, height}],
        "mask": hash, "timings"}; the run is in history (or a Failed says why not)."""
        try:
            return self._run(rgb, alpha, fmt, spec, mask, source_name)
        except BackdropError as e:
            return _failed(e)

    def _run(self, rgb, alpha, fmt, spec, mask, source_name) -> dict:
        from core.errors import HistoryError
        from core.history import open_store
        from core.images import LoadedImage
        from core.jobs import JobRequest, run_job
        from core.spec import RunSpec

        image = LoadedImage(rgb=rgb, alpha=alpha, format=fmt)
        request = JobRequest(image=image, spec=RunSpec.from_json(spec), mask=mask,
                             source_name=source_name)
        result = run_job(request)
        if result.run_id is None:
            raise HistoryError(f"the run finished but could not be saved in history: {result.record_error}")
        run = open_store().get_run(result.run_id)
        return {"run_id": run.id, "status": run.status,
                "outputs": [{"hash": o.hash, "seed": o.seed, "width": o.width, "height": o.height}
                            for o in run.outputs],
                "mask": run.mask.hash if run.mask else None,
                "timings": {k: round(float(v), 4) for k, v in result.timings.items()}}

    def check_health(self) -> None:
        return None
