"""One run end to end: (image, clicks or mask, mask options, background) -> result, recorded in history.

Shared by the CLI, the app and the benchmarks; never imports streamlit.

    image + clicks --segment--> subject mask --refine--> --inpaint (sd only)--> compose --> outputs
                                                                                   └──> history row
"""
from __future__ import annotations

import dataclasses
import threading
import time
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np

from core import config
from core.compose import BackgroundSpec, compose
from core.errors import BackdropError, CancelledError, HistoryError, InvalidOptionError
from core.images import LoadedImage
from core.inpaint import InpaintRequest
from core.masks import MaskOptions, refine
from core.segment import Click, SegmentRequest

Progress = Callable[[str, float], None]


@dataclass(frozen=True)
class JobRequest:
    """Everything one run needs. Coordinates are in pixels of the original image (x, y)."""

    image: LoadedImage
    background: BackgroundSpec
    clicks: tuple[Click, ...] = ()
    box: Optional[tuple[float, float, float, float]] = None
    mask: Optional[np.ndarray] = None      # full-size HxW uint8, 255 = subject; skips segmentation
    candidate: Optional[int] = None        # multimask candidate chosen in the UI (None = best score)
    segmenter: str = field(default_factory=config.default_segmenter)
    mask_options: MaskOptions = MaskOptions()
    inpaint: Optional[InpaintRequest] = None  # required when background.kind == "sd"
    model: str = field(default_factory=config.default_inpaint_model)
    source_name: str = ""                  # display only, never used as a path


@dataclass(frozen=True)
class JobResult:
    run_id: Optional[int]
    outputs: list[np.ndarray]              # full size; HxWx3 RGB, or HxWx4 RGBA for transparent
    seeds: list[Optional[int]]
    mask: np.ndarray                       # full size HxW uint8, 255 = subject (after refine)
    timings: dict[str, float]
    record_error: Optional[str] = None     # why the run is not (fully) in history; outputs are fine


def _check(request: JobRequest) -> None:
    if request.mask is None and not request.clicks and request.box is None:
        raise InvalidOptionError("no subject given: click on the subject, draw a box, or pass a mask")
    if request.mask is not None and request.mask.shape != (request.image.height, request.image.width):
        raise InvalidOptionError(
            f"mask is {request.mask.shape[1]}x{request.mask.shape[0]} but the photo is "
            f"{request.image.width}x{request.image.height}; they must be the same size")
    if request.background.kind == "sd" and request.inpaint is None:
        raise InvalidOptionError("a Stable Diffusion background needs a prompt")


def subject_mask(request: JobRequest) -> np.ndarray:
    """The full-size subject mask (uint8, 255 = subject) for the request, before refinement."""
    if request.mask is not None:
        return np.where(request.mask > 127, 255, 0).astype(np.uint8)
    from core.segment import get_segmenter

    segmenter = get_segmenter(request.segmenter)
    result = segmenter.segment(request.image.rgb,
                               SegmentRequest(clicks=tuple(request.clicks), box=request.box))
    index = result.best if request.candidate is None else request.candidate
    if not 0 <= index < len(result.masks):
        raise InvalidOptionError(f"mask candidate {index} does not exist (there are {len(result.masks)})")
    return np.where(result.masks[index], 255, 0).astype(np.uint8)


def run_job(request: JobRequest, *, record: bool = True, progress: Optional[Progress] = None,
            cancel: Optional[threading.Event] = None) -> JobResult:
    """Run one background replacement. Raises BackdropError subclasses with one-line messages.

    When `record` is true the run is written to the history store first as "running", then
    finished as succeeded / failed / cancelled, so nothing a person tried is lost. If the history
    cannot record it (full disk, database down), the run still completes and its outputs are
    returned with `record_error` saying why it is not in history; a started row is then marked
    failed with that cause where the database still allows it.
    """
    _check(request)
    report = progress or (lambda stage, fraction: None)
    store = run_id = record_error = None
    if record:
        from core.history import open_store
        try:
            store = open_store(sweep=True)
            run_id = store.start_run(**_run_fields(request))
        except HistoryError as e:
            store, record_error = None, str(e)
    timings: dict[str, float] = {}
    try:
        t = time.perf_counter()
        report("mask", 0.0)
        mask = refine(subject_mask(request), request.mask_options)
        timings["mask"] = time.perf_counter() - t
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled before the background was made")

        outputs, seeds = _backgrounds(request, mask, report, cancel, timings)
        report("done", 1.0)
        result = JobResult(run_id, outputs, seeds, mask, timings)
    except BaseException as e:  # recorded (unexpected ones too), then re-raised for the caller
        if store is not None:
            status = "cancelled" if isinstance(e, CancelledError) else "failed"
            text = str(e) if isinstance(e, BackdropError) else f"{type(e).__name__}: {e}"
            try:
                store.fail_run(run_id, text, status=status, timings=timings)
            except HistoryError:
                pass   # the job's own error is what the user needs to see
        raise
    if store is not None:
        t = time.perf_counter()
        try:
            store.finish_run(run_id, mask=mask, outputs=list(zip(outputs, seeds)), timings=timings,
                             device=_device())
        except HistoryError as e:
            record_error = str(e)
            try:
                store.fail_run(run_id, f"the outputs could not be saved in history: {e}",
                               timings=timings, device=_device())
                record_error += f" (history run {run_id} is marked failed)"
            except HistoryError:
                pass   # the row stays "running" until a later open marks its process stopped
            run_id = None
        timings["record"] = time.perf_counter() - t
    return dataclasses.replace(result, run_id=run_id, record_error=record_error)


def _backgrounds(request: JobRequest, mask: np.ndarray, report: Progress,
                 cancel: Optional[threading.Event], timings: dict[str, float]):
    feather = request.mask_options.feather
    rgb = request.image.rgb
    if request.background.kind != "sd":
        t = time.perf_counter()
        report("compose", 0.5)
        out = compose(rgb, mask, request.background, feather=feather)
        timings["compose"] = time.perf_counter() - t
        return [out], [None]

    from core.inpaint import get_inpainter

    t = time.perf_counter()
    report("load model", 0.0)
    inpainter = get_inpainter(request.model)
    timings["load"] = time.perf_counter() - t

    def step(i: int, total: int) -> None:
        report("diffusion", i / max(total, 1))

    region = 255 - mask  # repaint everything that is not the subject
    # adds "resize", "diffusion" and "upscale" to timings
    variants = inpainter.inpaint(rgb, region, request.inpaint, progress=step, cancel=cancel,
                                 timings=timings)
    t = time.perf_counter()
    report("compose", 0.95)
    outputs = [compose(rgb, mask, request.background, feather=feather, generated=v.image)
               for v in variants]
    timings["compose"] = time.perf_counter() - t
    return outputs, [v.seed for v in variants]


def _device() -> str:
    try:
        import torch
        return "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:  # pragma: no cover - torch is a requirement
        return "cpu"


def _run_fields(request: JobRequest) -> dict:
    """What the history store records about the request (before any result exists)."""
    inp = request.inpaint
    sd = request.background.kind == "sd"
    return dict(
        source=request.image,
        source_name=request.source_name,
        segmenter=None if request.mask is not None else request.segmenter,
        clicks=[(c.x, c.y, c.label) for c in request.clicks],
        box=list(request.box) if request.box else None,
        mask_options=vars(request.mask_options).copy() | {"candidate": request.candidate},
        background=str(request.background),
        prompt=inp.prompt if sd and inp else None,
        negative=inp.negative if sd and inp else None,
        seed=inp.seed if sd and inp else None,
        steps=inp.steps if sd and inp else None,
        guidance=inp.guidance if sd and inp else None,
        strength=inp.strength if sd and inp else None,
        scheduler=inp.scheduler if sd and inp else None,
        variants=inp.variants if sd and inp else 1,
        model=request.model if sd else None,
    )
