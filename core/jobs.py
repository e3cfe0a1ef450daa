"""One run end to end: (image, clicks or mask, mask options, background) -> result, recorded in history.

Shared by the CLI, the app and the benchmarks; never imports streamlit.

    image + clicks --segment--> subject mask --refine--> --inpaint (sd only)--> compose --> outputs
                                                                                   └──> history row
"""
from __future__ import annotations

import dataclasses
import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from core import devices
from core.compose import compose
from core.errors import BackdropError, CancelledError, HistoryError, InvalidOptionError
from core.images import LoadedImage
from core.masks import refine
from core.matte import for_options
from core.segment import SegmentRequest
from core.spec import RunSpec

log = logging.getLogger(__name__)
Progress = Callable[[str, float], None]
Preview = Callable[[np.ndarray], None]      # a small HxWx3 uint8 picture of the painting so far


@dataclass(frozen=True)
class JobRequest:
    """One run: the photo, its RunSpec (core/spec.py: subject, mask options, background,
    generation), and a ready-made subject mask when there is one (then spec.subject.segmenter is
    None and nothing is segmented)."""

    image: LoadedImage
    spec: RunSpec
    mask: Optional[np.ndarray] = None      # full-size HxW uint8, 255 = subject; skips segmentation
    source_name: str = ""                  # display only, never used as a path
    batch: Optional[str] = None            # the batch this run is part of (core.batch), None for one photo


@dataclass(frozen=True)
class JobResult:
    run_id: Optional[int]
    outputs: list[np.ndarray]              # full size; HxWx3 RGB, or HxWx4 RGBA for transparent
    seeds: list[Optional[int]]
    mask: np.ndarray                       # full size HxW uint8, 255 = subject (after refine)
    timings: dict[str, float]
    record_error: Optional[str] = None     # why the run is not (fully) in history; outputs are fine
    auto_confidence: Optional[float] = None   # subject.auto: how sure the automatic subject is, 0..1


def _check(request: JobRequest) -> None:
    subject = request.spec.subject
    if request.mask is None and not subject.auto and not subject.clicks and subject.box is None:
        raise InvalidOptionError("no subject given: click on the subject, draw a box, or pass a mask")
    if request.mask is None and not subject.segmenter and (subject.clicks or subject.box is not None):
        raise InvalidOptionError("no segmenter chosen for the clicks")
    if request.mask is not None and request.mask.shape != (request.image.height, request.image.width):
        raise InvalidOptionError(
            f"mask is {request.mask.shape[1]}x{request.mask.shape[0]} but the photo is "
            f"{request.image.width}x{request.image.height}; they must be the same size")


def subject_mask(request: JobRequest, found: Optional[dict] = None) -> np.ndarray:
    """The full-size subject mask (uint8, 255 = subject) for the request, before refinement.
    With subject.auto the subject is found without clicks (core.catalogue.auto_subject) and any
    clicks refine it (core.refine); `found`, if given, gets its "confidence"."""
    if request.mask is not None:
        return np.where(request.mask > 127, 255, 0).astype(np.uint8)
    from core.segment import get_segmenter

    subject = request.spec.subject
    if subject.auto:
        from core.catalogue import auto_subject
        auto = auto_subject(request.image.rgb)
        if found is not None:
            found["confidence"] = float(auto.confidence)
        if not subject.clicks:
            return auto.mask
        from core import refine as clicks_refine
        out = clicks_refine.refine(get_segmenter(subject.segmenter), request.image.rgb, auto.mask,
                                   subject.clicks, out_size=(request.image.width, request.image.height))
        return np.where(out.masks[out.best], 255, 0).astype(np.uint8)
    segmenter = get_segmenter(subject.segmenter)
    result = segmenter.segment(request.image.rgb, SegmentRequest(clicks=subject.clicks, box=subject.box))
    index = result.best if subject.candidate is None else subject.candidate
    if not 0 <= index < len(result.masks):
        raise InvalidOptionError(f"mask candidate {index} does not exist (there are {len(result.masks)})")
    return np.where(result.masks[index], 255, 0).astype(np.uint8)


def resolved(spec: RunSpec) -> RunSpec:
    """The spec as it will run: in fast mode the few-step LoRA actually used is filled in (so
    history records it and a re-run reproduces it). Raises MissingWeightsError / InvalidOptionError
    when fast mode cannot run (its LoRA or tiny autoencoder missing, a model family without one)."""
    gen = spec.generation
    if gen is None or gen.mode != "fast":
        return spec
    from core.inpaint import resolve_generation
    return spec.replace(generation=resolve_generation(gen).model_dump())


def no_subject(segmenter: Optional[str]) -> InvalidOptionError:
    """The one line for a segmentation that found nothing (no background-only result is "done")."""
    return InvalidOptionError(f"no subject found: {segmenter} found nothing at the clicks / in the box; "
                              "click on the subject, draw a box around it, or try another segmenter")


def run_job(request: JobRequest, *, record: bool = True, progress: Optional[Progress] = None,
            cancel: Optional[threading.Event] = None, preview: Optional[Preview] = None,
            started: Optional[Callable[[int], None]] = None) -> JobResult:
    """Run one background replacement. Raises BackdropError subclasses with one-line messages.

    `preview(rgb)`, if given, gets small pictures of the background while it is painted (a few per
    second at most; core.inpaint decides how often); the outputs are the same with or without it.
    `started(run_id)`, if given, gets the history run's id as soon as the run is recorded (so the
    app's History can show that run's progress).

    When `record` is true the run is written to the history store first as "running", then
    finished as succeeded / failed / cancelled, so nothing a person tried is lost. If the history
    cannot record it (full disk, database down), the run still completes and its outputs are
    returned with `record_error` saying why it is not in history; a started row is then marked
    failed with that cause where the database still allows it.
    """
    _check(request)
    report = progress or (lambda stage, fraction: None)
    try:
        request, not_runnable = dataclasses.replace(request, spec=resolved(request.spec)), None
    except BackdropError as e:        # recorded as a failed run below, like any other failure
        not_runnable = e
    store = run_id = record_error = None
    if record:
        from core.history import open_store
        try:
            store = open_store(sweep=True)
            run_id = store.start_run(source=request.image, spec=request.spec,
                                     source_name=request.source_name, batch=request.batch)
        except HistoryError as e:
            store, record_error = None, str(e)
        if run_id is not None and started is not None:
            started(run_id)
    timings: dict[str, float] = {}
    try:
        if not_runnable is not None:
            raise not_runnable
        t = time.perf_counter()
        report("mask", 0.0)
        found: dict = {}
        mask = subject_mask(request, found)
        if request.mask is None and not mask.any():
            raise no_subject(request.spec.subject.segmenter)
        given_empty = request.mask is not None and not mask.any()
        mask = refine(mask, request.spec.mask)
        if not mask.any():      # a background-only picture is not a result: say why instead
            raise InvalidOptionError(
                "nothing of the photo would be kept: the subject mask is "
                + ("all black (white = subject)" if given_empty else
                   "empty after the mask options (shrink, minimum area, invert)"))
        timings["mask"] = time.perf_counter() - t
        if cancel is not None and cancel.is_set():
            raise CancelledError("cancelled before the background was made")

        outputs, seeds = _backgrounds(request, mask, report, cancel, timings, preview)
        report("done", 1.0)
        result = JobResult(run_id, outputs, seeds, mask, timings,
                           auto_confidence=found.get("confidence"))
    except BaseException as e:  # recorded (unexpected ones too), then re-raised for the caller
        if store is not None:
            status = "cancelled" if isinstance(e, CancelledError) else "failed"
            text = str(e) if isinstance(e, BackdropError) else f"{type(e).__name__}: {e}"
            try:
                store.fail_run(run_id, text, status=status, timings=timings)
            except HistoryError as h:   # the job's own error is what the user needs to see
                log.warning("run %s could not be marked %s in history: %s", run_id, status, h)
        raise
    if store is not None:
        t = time.perf_counter()
        try:
            store.finish_run(run_id, mask=mask, outputs=list(zip(outputs, seeds)), timings=timings,
                             device=devices.pick())
        except HistoryError as e:
            record_error = str(e)
            try:
                store.fail_run(run_id, f"the outputs could not be saved in history: {e}",
                               timings=timings, device=devices.pick())
                record_error += f" (history run {run_id} is marked failed)"
            except HistoryError as h:   # the row stays "running" until a later open marks it stopped
                log.warning("run %s could not be marked failed in history: %s", run_id, h)
            run_id = None
        timings["record"] = time.perf_counter() - t
    return dataclasses.replace(result, run_id=run_id, record_error=record_error)


def _backgrounds(request: JobRequest, mask: np.ndarray, report: Progress,
                 cancel: Optional[threading.Event], timings: dict[str, float],
                 preview: Optional[Preview] = None):
    spec = request.spec
    rgb = request.image.rgb
    t = time.perf_counter()
    report("edge", 0.0)
    matte = for_options(rgb, mask, spec.mask)     # the hard mask feathered, or an alpha matte
    timings["edge"] = time.perf_counter() - t
    if spec.framing.active:
        return _framed(request, mask, matte, report, cancel, timings, preview)
    if spec.generation is None:
        t = time.perf_counter()
        report("compose", 0.5)
        out = compose(rgb, mask, spec.background, matte=matte)
        timings["compose"] = time.perf_counter() - t
        return [out], [None]

    # repaint everything that is not the subject, and under a matted border too (hair shows the
    # new background through it)
    region = 255 - matte.core.view(np.uint8) * np.uint8(255) if spec.mask.matted else 255 - mask
    variants = _paint(rgb, region, spec.generation, report, cancel, timings, preview)
    t = time.perf_counter()
    report("compose", 0.95)
    outputs = [compose(rgb, mask, spec.background, generated=v.image, matte=matte)
               for v in variants]
    timings["compose"] = time.perf_counter() - t
    return outputs, [v.seed for v in variants]


def _paint(rgb: np.ndarray, region: np.ndarray, gen, report: Progress,
           cancel: Optional[threading.Event], timings: dict[str, float], preview: Optional[Preview]):
    """The AI backgrounds for `rgb`, painted where `region` is 255: loads the model ("load" in
    timings), then paints (adds "resize", "diffusion" and "upscale"). A first load that prepares
    the CPU engine (core.cpu_engine) reports "preparing the CPU engine, once (~N s): UNet, 1 of 4"
    as its stage, with its progress."""
    from core import cpu_engine
    from core.inpaint import get_inpainter
    t = time.perf_counter()
    report("load model", 0.0)
    with cpu_engine.progress_to(report):
        inpainter = get_inpainter(gen.model, mode=gen.mode, lora=gen.lora)
    timings["load"] = time.perf_counter() - t
    extra = {"preview": preview} if preview is not None else {}
    return inpainter.inpaint(rgb, region, gen, progress=lambda i, n: report("diffusion", i / max(n, 1)),
                             cancel=cancel, timings=timings, **extra)


def _framed(request: JobRequest, mask: np.ndarray, matte, report: Progress,
            cancel: Optional[threading.Event], timings: dict[str, float], preview: Optional[Preview]):
    """A framed and/or shadowed run (core/catalogue.py): the subject placed on the frame, the
    background made at the frame's size (an AI one painted there, the padding included:
    outpainting), the shadow on it, the subject over both."""
    from core.catalogue import finish, frame_of, shadow_of, stage
    spec = request.spec
    t = time.perf_counter()
    report("frame", 0.5)
    staged = stage(request.image.rgb, mask, matte, frame_of(spec.framing))
    shadow = shadow_of(spec.framing)
    timings["frame"] = time.perf_counter() - t
    if spec.generation is None:
        t = time.perf_counter()
        report("compose", 0.7)
        out = finish(staged, spec.background, shadow)
        timings["compose"] = time.perf_counter() - t
        return [out], [None]
    variants = _paint(staged.canvas, staged.paint_region, spec.generation, report, cancel, timings,
                      preview)
    t = time.perf_counter()
    report("compose", 0.95)
    outputs = [finish(staged, spec.background, shadow, generated=v.image) for v in variants]
    timings["compose"] = time.perf_counter() - t
    return outputs, [v.seed for v in variants]
