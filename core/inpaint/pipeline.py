"""The inpainting pipeline: building it from a diffusers folder (fast mode's add-ons, torch.compile),
the scheduler map, the CUDA out-of-memory ladder and one call's run (see core/inpaint/__init__.py)."""
from __future__ import annotations

import copy
import gc
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from core import arrays, config, devices
from core.weights import local_path as weights_path
from core.errors import (BackdropError, CancelledError, InvalidOptionError, MissingWeightsError,
                         OutOfMemoryError)
from core.inpaint.fast import FastParts, fuse_lora, load_taesd, resolve_generation
from core.inpaint.preview import LivePreview, PreviewFn
from core.inpaint.sizes import processing_size, resize
from core.settings import settings
from core.spec import SCHEDULERS, Generation

ProgressFn = Callable[[int, int], None]

# What to paint is the run spec's generation part (core/spec.py validates it, one line per error).
InpaintRequest = Generation


@dataclass(frozen=True)
class Variant:
    """One generated picture at the input's full size, before paste-back, and the seed that made it."""
    image: np.ndarray
    seed: int


def _check_inputs(rgb, mask) -> tuple[np.ndarray, np.ndarray]:
    """The image (HxWx3 uint8) and the region mask (HxW uint8 255 = repaint, or bool), checked by
    core.arrays; the mask comes back as uint8 0/255 for a bool one."""
    arrays.rgb(rgb, "image")
    mask = arrays.mask(mask, "region mask", shape=rgb.shape)
    return np.ascontiguousarray(rgb), mask


def free_device_memory(device: str) -> None:
    gc.collect()
    if device.startswith("cuda"):
        import torch
        torch.cuda.empty_cache()


class _Interrupted(Exception):
    """Raised inside the step callback to stop the denoising loop at once."""


def _wait_for(sem: threading.Semaphore, cancel: Optional[threading.Event]) -> None:
    while not sem.acquire(timeout=0.1):
        if cancel is not None and cancel.is_set():
            raise CancelledError("generation cancelled")


class Inpainter:
    """One loaded inpainting pipeline. Thread-safe: see core/inpaint/__init__.py. Create through
    `get_inpainter` / `ModelManager.get`, which load each model once."""

    # OOM ladder: 0 = as loaded; 1 = attention + VAE slicing/tiling; 2 = model CPU offload (CUDA)
    LEVELS = ("full", "sliced", "cpu-offload")

    def __init__(self, pipe, *, model: str, path: Path, device: str, max_concurrent: int = 1,
                 reload: Optional[Callable[[], "Inpainter"]] = None, mode: str = "quality",
                 lora: Optional[str] = None, family: Optional[str] = None,
                 route: Optional[Callable[[str, Optional[str]], "Inpainter"]] = None,
                 compiled: bool = False):
        self._pipe = pipe
        self.model = model
        self.path = Path(path)
        self.device = device
        self.mode = mode                    # "quality" | "fast"
        self.lora = lora                    # fast: the fused LoRA's registry name
        self.family = family                # "sd15" | "sdxl" | "tiny" | ... (None: unknown)
        self.compiled = compiled            # UNet wrapped in torch.compile (BACKDROP_COMPILE=1, CUDA)
        self.dtype = str(pipe.unet.dtype).replace("torch.", "")
        self.long_side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.default_scheduler = type(pipe.scheduler).__name__
        self.level = 0
        self._settings = threading.Lock()
        self._slots = threading.Semaphore(max(1, int(max_concurrent)))
        self._reload = reload
        self._route = route
        self._warm_sizes: set = set()       # compiled: sizes already run once (compiled for)
        self._origin: dict = {}             # the manager's get() arguments that made it

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, *, model: str, device: Optional[str] = None, max_concurrent: int = 1,
             attention_slicing: bool = False, cpu_offload: bool = False,
             reload: Optional[Callable[[], "Inpainter"]] = None, mode: str = "quality",
             fast: Optional[FastParts] = None, family: Optional[str] = None,
             route: Optional[Callable[[str, Optional[str]], "Inpainter"]] = None,
             compile: Optional[bool] = None) -> "Inpainter":
        """Load a diffusers inpainting folder from disk (never the network), in devices.dtype.
        mode "fast" needs `fast` (see fast_parts): the tiny autoencoder replaces the VAE (the full
        VAE is not even loaded) and the LoRA is fused into the UNet; a bad LoRA raises before
        anything is kept. compile: torch.compile the UNet (CUDA only; default BACKDROP_COMPILE=1)."""
        from diffusers import AutoPipelineForInpainting
        from diffusers.utils import logging as dlog
        device = devices.pick(device)
        path = Path(path)
        dtype = devices.dtype(device)
        if mode == "fast" and fast is None:
            raise InvalidOptionError("fast mode needs its LoRA and tiny autoencoder (see fast_parts)")
        kwargs = dict(dtype=dtype, local_files_only=True)
        try:
            index = json.loads((path / "model_index.json").read_text())
        except (OSError, ValueError):
            raise MissingWeightsError(f"{path} is not a diffusers pipeline folder (no readable "
                                      f"model_index.json)") from None
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        if fast is not None:
            kwargs["vae"] = load_taesd(fast.autoencoder, dtype)
        verbosity = dlog.get_verbosity()
        try:
            if fast is not None:   # an AutoencoderTiny where an AutoencoderKL is expected is on purpose
                dlog.set_verbosity_error()
            pipe = AutoPipelineForInpainting.from_pretrained(str(path), **kwargs)
        except Exception as e:  # corrupt/incomplete folders raise many different types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            fix = (f"re-download it with `python -m core models download {model}`"
                   if (path.resolve().parent == config.weights_dir()) or ("/" not in model)
                   else "check that the folder holds a complete diffusers inpainting pipeline")
            raise MissingWeightsError(f"could not load model {model!r} from {path}: {first}; {fix}") from None
        finally:
            dlog.set_verbosity(verbosity)
        pipe.set_progress_bar_config(disable=True)
        offload = cpu_offload and device.startswith("cuda")
        if not offload:
            pipe.to(device)                         # before fusing: the GPU fuses faster
        if fast is not None:
            fuse_lora(pipe, fast.lora, model)      # raises; the caller drops the pipeline
            pipe.scheduler = cls._scheduler_class(pipe, "tcd" if fast.lora.name.startswith("tcd")
                                                  else "lcm").from_config(pipe.scheduler.config)
        compile = settings().compile if compile is None else compile
        compile = bool(compile) and device.startswith("cuda") and not offload
        from core import cpu_engine
        if cpu_engine.wanted(device):               # OpenVINO on a CPU (docs/cpu.md)
            cpu_engine.use_for(pipe, model_path=path, lora=fast.lora.name if fast else None,
                               vae_path=weights_path(fast.autoencoder) if fast else None)
        if compile:
            import torch
            pipe.unet = torch.compile(pipe.unet)
        inp = cls(pipe, model=model, path=path, device=device, max_concurrent=max_concurrent,
                  reload=reload, mode=mode, lora=fast.lora.name if fast else None,
                  family=fast.family if fast else family, route=route, compiled=compile)
        if offload:
            inp._set_level(2)
        else:
            if device == "mps":             # diffusers' advice for Macs with less than 64 GB
                pipe.enable_attention_slicing()
            if attention_slicing:
                inp._set_level(1)
        return inp

    def close(self) -> None:
        """Drop the pipeline and free its memory. Runs already in progress finish normally."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            del pipe
            free_device_memory(self.device)

    @property
    def closed(self) -> bool:
        return self._pipe is None

    def processing_size(self, size: tuple[int, int]) -> tuple[int, int]:
        return processing_size(size, self.long_side)

    # -- memory ladder -----------------------------------------------------------------------
    def _set_level(self, level: int) -> None:
        pipe = self._pipe
        with self._settings:
            if level <= self.level or pipe is None:
                return
            if level >= 1:
                pipe.enable_attention_slicing("max")
                pipe.vae.enable_slicing()
                pipe.vae.enable_tiling()
            if level >= 2:
                pipe.enable_model_cpu_offload(device=self.device)
            self.level = level

    def _lighten(self) -> bool:
        """Move one step down the OOM ladder; False when there is nothing lighter left."""
        top = 2 if self.device.startswith("cuda") else 1
        if self.level >= top:
            return False
        self._set_level(self.level + 1)
        return True

    # -- generation --------------------------------------------------------------------------
    @staticmethod
    def _scheduler_class(pipe, name: Optional[str]):
        import diffusers
        return getattr(diffusers, SCHEDULERS[name]) if name else type(pipe.scheduler)

    def _scheduler_for(self, pipe, name: Optional[str]):
        """A fresh scheduler for one call (schedulers keep per-call state: never share one)."""
        return self._scheduler_class(pipe, name).from_config(pipe.scheduler.config)

    def _run_once(self, image, mask, size, request: InpaintRequest, seed: int,
                  on_step: Callable[[int, int], None], cancel: Optional[threading.Event],
                  preview: Optional[PreviewFn] = None, spent: Optional[dict] = None) -> np.ndarray:
        import torch
        base = self._pipe
        if base is None:
            raise _Closed()
        pipe = copy.copy(base)                  # shares the modules; per-call attributes stay local
        pipe.scheduler = self._scheduler_for(base, request.scheduler)
        live = LivePreview(pipe, preview, self.family, spent)

        def callback(p, i, t, tensors):
            total = int(getattr(p, "_num_timesteps", 0) or request.steps)
            on_step(i + 1, total)
            if cancel is not None and cancel.is_set():
                raise _Interrupted()
            live.after_step(p, i, total, tensors["latents"])
            return {}

        try:
            out = pipe(
                prompt=request.prompt, negative_prompt=request.negative or None,
                image=image, mask_image=mask, width=size[0], height=size[1],
                num_inference_steps=request.steps, guidance_scale=float(request.guidance),
                strength=float(request.strength),
                generator=torch.Generator("cpu").manual_seed(seed),
                callback_on_step_end=callback, output_type="np",
            ).images[0]
        except _Interrupted:
            pipe.maybe_free_model_hooks()
            raise CancelledError("generation cancelled") from None
        if not np.isfinite(out).all():
            raise BackdropError(f"model {self.model!r} produced an invalid image (NaN values); "
                                f"try another seed")
        return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)

    def _generate(self, image, mask, size, request, seed, on_step, cancel, preview=None,
                  spent=None) -> np.ndarray:
        import torch
        while True:
            _wait_for(self._slots, cancel)
            try:
                return self._run_once(image, mask, size, request, seed, on_step, cancel, preview, spent)
            except torch.OutOfMemoryError:
                pass  # fall through, with the exception (and its tensors) already released
            finally:
                self._slots.release()
            free_device_memory(self.device)
            if not self._lighten():
                raise OutOfMemoryError(
                    f"out of {self.device} memory generating {size[0]}x{size[1]} with {self.model!r} "
                    f"even with {self.LEVELS[self.level]}; try a smaller model or close other GPU work")

    def _serves(self, request: InpaintRequest) -> bool:
        return request.mode == self.mode and (request.mode != "fast" or request.lora == self.lora)

    def inpaint(self, rgb: np.ndarray, region_mask: np.ndarray, request: InpaintRequest,
                progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
                *, timings: Optional[dict] = None, preview: Optional[PreviewFn] = None) -> list[Variant]:
        """Repaint `region_mask` (HxW uint8, 255 = repaint; bool accepted) of `rgb` (HxWx3 uint8 RGB).

        Returns `request.variants` Variants, each HxWx3 uint8 at the input's size. progress(step,
        total) counts denoising steps over all variants. preview(img): see the module docstring
        (img is HxWx3 uint8 RGB, small). `timings`, if given, gets the seconds spent in "resize"
        (to processing size), "diffusion" and "upscale" (back to full size) added in, plus
        "preview" (decoding previews, part of diffusion) when previewing and "compile" (the first
        run at a size with a compiled UNet, instead of "diffusion"). A request of the other mode
        (or another LoRA) runs on that pipeline through the manager. Raises CancelledError (cancel
        set), OutOfMemoryError, InvalidOptionError (bad input, empty mask), MissingWeightsError."""
        from PIL import Image
        if not isinstance(request, InpaintRequest):
            raise InvalidOptionError("request must be an InpaintRequest")
        rgb, region_mask = _check_inputs(rgb, region_mask)
        again = dict(timings=timings, preview=preview)
        if request.mode == "fast" and request.lora is None:
            request = resolve_generation(request)
        if not self._serves(request):
            if self._route is None:
                raise InvalidOptionError(f"this {self.model!r} pipeline runs mode {self.mode}"
                                         + (f" with LoRA {self.lora!r}" if self.lora else "")
                                         + "; get one for the request with get_inpainter(model, mode=..., lora=...)")
            return self._route(request.mode, request.lora).inpaint(rgb, region_mask, request, progress,
                                                                   cancel, **again)
        if self.closed:  # unloaded by the manager since this object was handed out
            if self._reload is None:
                raise MissingWeightsError(f"model {self.model!r} was unloaded")
            return self._reload().inpaint(rgb, region_mask, request, progress, cancel, **again)
        spent = {"resize": 0.0, "diffusion": 0.0, "upscale": 0.0}
        clock = time.perf_counter
        t0 = clock()
        H, W = rgb.shape[:2]
        size = self.processing_size((W, H))
        small = resize(rgb, size)
        small_mask = np.where(resize(region_mask, size) > 0, 255, 0).astype(np.uint8)
        if not small_mask.any():
            raise InvalidOptionError("nothing to repaint: the background region is empty")
        image, mask = Image.fromarray(small), Image.fromarray(small_mask)
        spent["resize"] += clock() - t0
        seeds = request.seeds()
        variants: list[Variant] = []
        try:
            for v, seed in enumerate(seeds):
                if cancel is not None and cancel.is_set():
                    raise CancelledError("generation cancelled")

                def on_step(i: int, n: int, v=v) -> None:
                    if progress is not None:
                        progress(v * n + i, len(seeds) * n)

                stage = "diffusion"
                if self.compiled and size not in self._warm_sizes:
                    stage = "compile"               # torch.compile's warm-up happens in this run
                t0 = clock()
                try:
                    out = self._generate(image, mask, size, request, seed, on_step, cancel, preview, spent)
                    self._warm_sizes.add(size)
                except _Closed:
                    if self._reload is None:
                        raise MissingWeightsError(f"model {self.model!r} was unloaded") from None
                    return self._reload().inpaint(rgb, region_mask, request, progress, cancel, **again)
                finally:
                    spent[stage] = spent.get(stage, 0.0) + clock() - t0
                t0 = clock()
                variants.append(Variant(resize(out, (W, H)), seed))
                spent["upscale"] += clock() - t0
        finally:
            if timings is not None:
                for k, x in spent.items():
                    timings[k] = timings.get(k, 0.0) + x
        return variants


class _Closed(Exception):
    pass
