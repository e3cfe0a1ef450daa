"""Short ways to record runs in tests: `record(store, source=..., background="sd", prompt="x",
seed=3, outputs=[...])` builds the RunSpec from the few parameters a test cares about (the rest
take the spec's defaults) and passes the store's own arguments (outputs, mask, status, ...) on."""
from __future__ import annotations

from typing import Any, Optional

from core.spec import Generation, MaskOptions, RunSpec, Subject

GENERATION = set(Generation.model_fields)
SUBJECT = {"clicks", "box", "candidate", "segmenter"}


def spec(background: str = "color:#00ff00", *, mask_options: Optional[dict] = None,
         **params: Any) -> RunSpec:
    """A RunSpec from flat keyword arguments (generation fields only matter for background sd)."""
    gen = {k: params.pop(k) for k in list(params) if k in GENERATION}
    gen = {k: v for k, v in gen.items() if v is not None}     # None: the spec's default
    sub = {k: params.pop(k) for k in list(params) if k in SUBJECT}
    if params:
        raise TypeError(f"not a spec parameter: {sorted(params)}")
    sub.setdefault("segmenter", "tiny")
    generation = None
    if gen and background != "sd":
        raise TypeError(f"generation parameters {sorted(gen)} given for background {background}")
    if background == "sd":
        gen.setdefault("prompt", "a test scene")
        gen.setdefault("model", "tiny")
        generation = Generation(**gen)
    return RunSpec(subject=Subject(**sub), mask=MaskOptions(**(mask_options or {})),
                   background=background, generation=generation)


_STORE_ARGS = {"source", "mask", "outputs", "timings", "status", "error", "duration", "created",
               "source_name", "device", "batch"}


def _split(kw: dict) -> tuple[dict, dict]:
    store_args = {k: kw.pop(k) for k in list(kw) if k in _STORE_ARGS}
    return store_args, kw


def record(store, **kw: Any) -> int:
    store_args, params = _split(kw)
    return store.record_run(spec=spec(**params), **store_args)


def start(store, **kw: Any) -> int:
    store_args, params = _split(kw)
    return store.start_run(spec=spec(**params), **store_args)
