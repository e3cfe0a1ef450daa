"""The model deployments: where the heavy work runs, one model copy per replica.

    Segmenter   the segmenter's image encoder and its click decoder (core.engine's LocalEngine):
                `embed` computes a photo's embedding once and keeps it (and the photo) on this
                replica; `segment` answers clicks/box from it. The ingress routes every request
                for a photo to the replica that holds it (Serve model multiplexing keyed by the
                photo's content hash), so a click never re-embeds while the replica keeps it.
    Inpainter   one run end to end: the photo decoded (upload or history source), the subject
                mask (uploaded, or from the Segmenter), then LocalEngine.run (core.jobs.run_job):
                the inpainting model (core.inpaint.get_inpainter, loaded once per replica) for an
                "sd" background, compose for every background, and the history row and files,
                written once, here.

Both take the builder's environment (core.service.config.apply_env) before anything loads, and
report a core.errors failure as a `Failed` value rather than raising it (an exception crossing a
Ray boundary carries its traceback in its text; a `Failed` carries the one line).
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np
from ray import serve

from core.engine.local import LocalEngine
from core.errors import BackdropError, InvalidOptionError
from core.service.config import apply_env

log = logging.getLogger("backdrop.service")
LOCAL = LocalEngine()       # what a replica does is what the app does in-process (core/engine)

#: Photos (and so embeddings) a Segmenter replica keeps for `segment` calls by handle.
HELD_IMAGES = 6


@dataclass(frozen=True)
class Failed:
    """A core.errors failure crossing the Ray boundary: the class name and its one line."""

    kind: str
    message: str

    def raise_(self) -> None:
        import core.errors as errors
        from core.service import deployments, photos
        cls = next((c for c in (getattr(m, self.kind, None) for m in (errors, photos, deployments))
                    if c is not None), None)
        if not (isinstance(cls, type) and issubclass(cls, BackdropError)):
            cls = BackdropError
        raise cls(self.message)


def unwrap(value: Any) -> Any:
    """`value`, or the core.errors exception a deployment reported, raised here."""
    if isinstance(value, Failed):
        value.raise_()
    return value


# An absolute path in a message: "/" not inside a word, URL or relative path, then a name.
_PATH = re.compile(r"(?<![\w.:/~-])/(?=[\w.~-])[^\s'\"`<>|;,()\[\]{}]*")


def hide_paths(text: str) -> str:
    """`text` with every absolute server path cut to "…/" + its last part (what an API client may
    see of a failure: a replica's error or a failed run's; the service log keeps them whole)."""
    return _PATH.sub(lambda m: "…/" + m.group(0).rstrip("/").rsplit("/", 1)[-1], text)


def _failed(e: BackdropError) -> Failed:
    """The nearest class of `e` that the other side knows (core.errors or this package's own),
    with its line, server paths hidden (it goes out to an API client)."""
    import core.errors as errors
    from core.service import photos
    known = next(c for c in type(e).__mro__
                 if c.__module__ in (errors.__name__, photos.__name__, __name__))
    return Failed(known.__name__, hide_paths(str(e)))


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

        from core.segment import image_key
        segmenter = LOCAL.segmenter(name)      # the remote engine's other end: this process's engine
        rgb = _readonly(rgb)
        key = image_key(rgb)
        t = time.perf_counter()
        segmenter.prepare(rgb)
        self._hold(key, rgb)
        return {"image": key, "segmenter": name, "width": int(rgb.shape[1]),
                "height": int(rgb.shape[0]), "seconds": time.perf_counter() - t}

    async def segment(self, name: str, request: dict, rgb: Optional[np.ndarray] = None,
                      key: Optional[str] = None, out_size: Optional[tuple[int, int]] = None,
                      png: bool = False) -> "dict | Failed":
        """Masks for `request` (a core.segment.SegmentRequest as a dict) on `rgb`, or on the photo
        this replica holds under `key` (from `embed`). Returns {"masks": bool (N, H, W) (or, with
        `png`, a list of PNG bytes, L 255 = subject, encoded here), "scores", "best",
        "embedded", "width", "height"}."""
        await self._route()
        try:
            return await asyncio.to_thread(self._segment, name, request, rgb, key, out_size, png)
        except BackdropError as e:
            return _failed(e)

    def _segment(self, name, request, rgb, key, out_size, png=False) -> dict:
        from core.errors import ImageError
        from core.segment import SegmentRequest, image_key
        segmenter = LOCAL.segmenter(name)
        req = SegmentRequest.load(request)
        if rgb is None:
            rgb = self._held(key or "")
            if rgb is None:
                raise ImageError("that embedding is no longer held by the service "
                                 "(evicted or its replica restarted); send the photo again")
        else:
            rgb = _readonly(rgb)
            self._hold(image_key(rgb), rgb)
        before = getattr(segmenter, "encoder_calls", 0)
        result = segmenter.segment(rgb, req, out_size=out_size)
        masks = result.masks
        if png:
            from core.images import encode_png
            masks = [encode_png(np.where(m, 255, 0).astype(np.uint8)) for m in result.masks]
        return {"masks": masks, "scores": [float(s) for s in result.scores],
                "width": int(result.masks.shape[2]), "height": int(result.masks.shape[1]),
                "best": int(result.best),
                # whether this call had to compute the image embedding (it was not held here)
                "embedded": getattr(segmenter, "encoder_calls", 0) > before}

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
    """One run: reads the photo (upload or history source) and the mask, has the Segmenter find
    the subject when the spec gives clicks/box instead, then core.jobs.run_job (which loads the
    inpainting model once per replica) writes the run to history."""

    def __init__(self, env: dict[str, str], preload: tuple[str, ...] = (), segmenter=None):
        apply_env(env)
        self.segmenter = segmenter
        self._running: dict[str, asyncio.Future] = {}    # a `reuse` run's identity -> its work here
        from core.segment import SEGMENTERS
        models = [m for m in preload if m not in SEGMENTERS]
        if models:
            from core import config
            from core.inpaint import get_inpainter
            for model in models:
                get_inpainter(model, mode=config.default_mode())

    @serve.multiplexed(max_num_models_per_replica=64)
    async def _request(self, key: str) -> str:
        """Marks this replica as the one that took `reuse` request `key`, so a repeat of it (the
        ingress routes by the key) comes here, where the first may still be running."""
        return key

    async def run(self, photo: Optional[bytes], source: Optional[str], mask: Optional[bytes],
                  spec: dict, source_name: str = "", reuse: bool = False,
                  batch: Optional[str] = None) -> "dict | Failed":
        """Returns {"run_id", "status", "outputs": [{hash, seed, width, height}], "mask": hash,
        "timings", "reused", "retried", "auto_confidence"}; the run is in history (or a Failed says
        why not). "auto_confidence": with spec.subject.auto, how sure the subject found is (0..1,
        a reused run's too: the subject is found again to know the run), else None.

        `batch`: the batch the run is part of (core.batch sends it), None for one photo.
        `reuse`: the same photo, subject mask, spec, source_name and batch already recorded as succeeded,
        or running here, is answered with that run, and nothing runs or is recorded again (a batch
        rerun after its client was killed mid-photo). The work of a run goes on when its caller
        goes away (so a repeat can wait for it)."""
        from core.service import photos
        from core.spec import RunSpec
        key = serve.get_multiplexed_model_id()
        if key:
            await self._request(key)
        try:
            spec_ = RunSpec.from_json(spec)
            image = await asyncio.to_thread(photos.photo, photo, source)
            retried, auto = [0], {}
            if mask is not None:
                subject = await asyncio.to_thread(photos.mask_array, mask, image)
            else:
                subject = await self._subject(spec_, image, retried, auto)
            sure = auto.get("confidence")
            work, ident = None, None
            if reuse:
                ident, mask_hash = await asyncio.to_thread(_identity, image, spec_, subject, source_name,
                                                           batch)
                work = self._running.get(ident)
                if work is None:
                    found = await asyncio.to_thread(_recorded, image.hash, mask_hash, spec_, source_name,
                                                    batch)
                    if found is not None:
                        return {**found, "reused": True, "retried": retried[0], "auto_confidence": sure}
            reused = work is not None
            if work is None:
                work = asyncio.ensure_future(asyncio.to_thread(self._run, image, spec_, subject, source_name,
                                                                batch))
                work.add_done_callback(lambda w: w.cancelled() or w.exception())   # seen, even unawaited
                if ident is not None:
                    self._running[ident] = work
                    work.add_done_callback(lambda _, k=ident: self._running.pop(k, None))
            out = await asyncio.shield(work)
            return {**out, "reused": reused, "retried": retried[0], "auto_confidence": sure}
        except BackdropError as e:
            return _failed(e)

    async def _subject(self, spec, image, retried: list, found: dict) -> np.ndarray:
        """The subject mask from the Segmenter deployment (as core.jobs.subject_mask picks it);
        `found` gets the confidence of a subject found with subject.auto."""
        from core.segment import SegmentRequest
        subject = spec.subject
        if subject.auto:          # found without clicks here (clicks refine it), as core.jobs does
            from core.jobs import JobRequest, subject_mask
            return await asyncio.to_thread(subject_mask, JobRequest(image=image, spec=spec), found)
        if not subject.segmenter:
            raise InvalidOptionError("no segmenter chosen for the clicks")
        request = SegmentRequest(clicks=subject.clicks, box=subject.box).model_dump()
        out = await call(self.segmenter.segment, subject.segmenter, request, image.rgb, image.hash,
                         None, photo=image.hash, retried=retried)
        index = out["best"] if subject.candidate is None else subject.candidate
        if not 0 <= index < len(out["masks"]):
            raise InvalidOptionError(f"mask candidate {index} does not exist (there are {len(out['masks'])})")
        mask = np.where(out["masks"][index], 255, 0).astype(np.uint8)
        if not mask.any():
            from core.jobs import no_subject
            raise no_subject(subject.segmenter)
        return mask

    def _run(self, image, spec, mask, source_name, batch) -> dict:
        from core.errors import HistoryError
        from core.history import open_store
        from core.jobs import JobRequest

        result = LOCAL.run(JobRequest(image=image, spec=spec, mask=mask, source_name=source_name,
                                      batch=batch))
        if result.run_id is None:
            raise HistoryError(f"the run finished but could not be saved in history: {result.record_error}")
        return _result(open_store().get_run(result.run_id), result.timings)

    def check_health(self) -> None:
        return None


def _result(run, timings: Optional[dict] = None) -> dict:
    """What /v1/replace answers for a recorded run."""
    return {"run_id": run.id, "status": run.status,
            "outputs": [{"hash": o.hash, "seed": o.seed, "width": o.width, "height": o.height}
                        for o in run.outputs],
            "mask": run.mask.hash if run.mask else None,
            "timings": {k: round(float(v), 4) for k, v in (timings or run.timings or {}).items()}}


def _identity(image, spec, subject: np.ndarray, source_name: str,
              batch: Optional[str]) -> tuple[str, str]:
    """(what a `reuse` run is known by here, the content hash of the mask history will store
    for it: the subject refined as core.jobs.run_job refines it)."""
    from core.images import content_hash
    from core.masks import refine
    mask_hash = content_hash(refine(np.where(subject > 127, 255, 0).astype(np.uint8), spec.mask))
    h = hashlib.sha256("|".join((image.hash, mask_hash, source_name, batch or "",
                                 json.dumps(spec.to_json(), sort_keys=True))).encode())
    return h.hexdigest(), mask_hash


def _recorded(image_hash: str, mask_hash: str, spec, source_name: str,
              batch: Optional[str]) -> Optional[dict]:
    """The newest succeeded run in history of this photo, mask, spec (as it ran), name and batch."""
    from core.history import RunQuery, open_store
    from core.jobs import resolved
    try:
        want = resolved(spec).to_json()
    except BackdropError:        # it cannot run as asked: let the run say so (and record it)
        return None
    page = open_store().list_runs(RunQuery(source_hash=image_hash, status="succeeded"), limit=100)
    for run in page.runs:
        if (run.source_name == source_name and run.batch == (batch or None) and run.outputs
                and run.mask is not None and run.mask.hash == mask_hash and run.spec.to_json() == want):
            return _result(run)
    return None


# --------------------------------------------------------------------------------- calling one --
#: A request whose replica died is sent again this many times (another replica answers).
REPLICA_RETRIES = 2


class ReplicaLost(BackdropError):
    """A model replica stopped while working on a request, and the retries did too (HTTP 503)."""


def replica_lost(e: BaseException) -> bool:
    import ray.exceptions as rx
    lost = tuple(c for c in (getattr(rx, n, None) for n in
                             ("RayActorError", "ActorDiedError", "ActorUnavailableError"))
                 if isinstance(c, type))
    return isinstance(e, lost)


async def call(method, *args, photo: Optional[str] = None, retried: Optional[list] = None, **kwargs):
    """`await method.remote(*args)` on a deployment handle, routed to the replica holding `photo`
    when given; a core.errors failure is raised here; a lost replica is retried."""
    for attempt in range(REPLICA_RETRIES + 1):
        try:
            target = method.options(multiplexed_model_id=photo) if photo else method
            return unwrap(await target.remote(*args, **kwargs))
        except Exception as e:
            if not replica_lost(e):
                raise
            log.warning("replica lost (%s); attempt %d", type(e).__name__, attempt + 1)
            if retried is not None:
                retried[0] += 1
    raise ReplicaLost("the model replica stopped while working on this request; try again")
