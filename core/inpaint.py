"""Generative backgrounds: Stable Diffusion inpainting over diffusers' AutoPipelineForInpainting.

Conventions: images are RGB uint8 HxWx3 numpy arrays, masks HxW uint8; for inpainting the
*region* mask has 255 = area to repaint (the background), 0 = keep. Sizes are (width, height).

    req = InpaintRequest("a sunny beach", steps=30, seed=7, variants=2)
    inp = get_inpainter("sd15-inpainting")          # or "sdxl-inpainting", "tiny", a folder, a repo id
    variants = inp.inpaint(rgb, region_mask, req, progress=on_step, cancel=event)
    variants[i].image   # HxWx3 uint8 at the input's full size (before paste-back: see core.compose)
    variants[i].seed    # s + i; running the same request with seed=s+i, variants=1 gives the same bytes

How a call runs:
  * the image and mask are resized to the model's processing size: aspect ratio kept, long side =
    the model's native size (unet.sample_size x vae scale: 512 for SD 1.5, 1024 for SDXL, 64 for
    `tiny`), both sides multiples of 8; the result is resized back to the full input size (bicubic).
  * variants run one after the other, each with its own CPU `torch.Generator` seeded s+i (so a
    variant's seed alone reproduces it, on any device); seed None draws a random seed from the OS
    without touching any global RNG.
  * progress(step, total) after every denoising step, counted over all variants; `cancel`
    (threading.Event) is checked between steps: the run stops at once and raises CancelledError.
  * fp16 on CUDA, fp32 elsewhere. CUDA out-of-memory is retried with attention + VAE slicing, then
    with model CPU offload; if that still fails, OutOfMemoryError (one line). Never a crash.

Models are loaded once and shared: `ModelManager` (one per process, `MANAGER`) owns the loaded
pipelines; asking for another model frees the old one first (capacity 1 by default). Ask the manager
for the inpainter at each job (`get_inpainter(name)` is a dict lookup once loaded) rather than
keeping Inpainter objects around; a closed Inpainter transparently reloads through the manager.

Concurrency: a diffusers pipeline keeps per-call state on itself and in its scheduler, so every
call runs on its own shallow copy of the shared pipeline with its own scheduler built from the
config (the weights are shared, never copied). How many calls may run on the device at once is
`max_concurrent` (default 1: on one GPU running two generations at once only adds memory pressure);
a waiting call still honours `cancel`.
"""
from __future__ import annotations

import copy
import gc
import json
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from core import arrays, config, devices, weights
from core.spec import SCHEDULERS, Generation
from core.errors import (BackdropError, CancelledError, InvalidOptionError, MissingWeightsError,
                         OutOfMemoryError)
from core.tiny import _tiny_tokenizer, build_tiny_inpaint, build_tiny_pipeline  # noqa: F401 - re-exported

ProgressFn = Callable[[int, int], None]

# What to paint is the run spec's generation part (core/spec.py validates it, one line per error).
InpaintRequest = Generation


@dataclass(frozen=True)
class Variant:
    """One generated picture at the input's full size, before paste-back, and the seed that made it."""
    image: np.ndarray
    seed: int


def processing_size(size: tuple[int, int], long_side: int) -> tuple[int, int]:
    """(w, h) with the aspect ratio of `size`, the long side ~= long_side, both multiples of 8 (>= 8)."""
    w, h = size
    s = long_side / max(w, h)
    return max(8, int(round(w * s / 8)) * 8), max(8, int(round(h * s / 8)) * 8)


def _resize(arr: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize an image/mask to (w, h). Shrinking: Gaussian-pyramid halvings while still at least 2x
    too big (fast and antialiased), then area averaging; enlarging: bicubic."""
    import cv2
    w, h = size
    if (arr.shape[1], arr.shape[0]) == (w, h):
        return arr
    if w * h < arr.shape[0] * arr.shape[1]:
        while arr.shape[1] >= 2 * w and arr.shape[0] >= 2 * h:
            arr = cv2.pyrDown(arr)
        return cv2.resize(arr, size, interpolation=cv2.INTER_AREA)
    return cv2.resize(arr, size, interpolation=cv2.INTER_CUBIC)


def _check_inputs(rgb, mask) -> tuple[np.ndarray, np.ndarray]:
    """The image (HxWx3 uint8) and the region mask (HxW uint8 255 = repaint, or bool), checked by
    core.arrays; the mask comes back as uint8 0/255 for a bool one."""
    arrays.rgb(rgb, "image")
    mask = arrays.mask(mask, "region mask", shape=rgb.shape)
    return np.ascontiguousarray(rgb), mask


def _free_device_memory(device: str) -> None:
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
    """One loaded inpainting pipeline. Thread-safe: see the module docstring. Create through
    `get_inpainter` / `ModelManager.get`, which load each model once."""

    # OOM ladder: 0 = as loaded; 1 = attention + VAE slicing/tiling; 2 = model CPU offload (CUDA)
    LEVELS = ("full", "sliced", "cpu-offload")

    def __init__(self, pipe, *, model: str, path: Path, device: str, max_concurrent: int = 1,
                 reload: Optional[Callable[[], "Inpainter"]] = None):
        self._pipe = pipe
        self.model = model
        self.path = Path(path)
        self.device = device
        self.dtype = str(pipe.unet.dtype).replace("torch.", "")
        self.long_side = int(pipe.unet.config.sample_size) * int(pipe.vae_scale_factor)
        self.default_scheduler = type(pipe.scheduler).__name__
        self.level = 0
        self._settings = threading.Lock()
        self._slots = threading.Semaphore(max(1, int(max_concurrent)))
        self._reload = reload

    # -- loading -----------------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path, *, model: str, device: Optional[str] = None, max_concurrent: int = 1,
             attention_slicing: bool = False, cpu_offload: bool = False,
             reload: Optional[Callable[[], "Inpainter"]] = None) -> "Inpainter":
        """Load a diffusers inpainting folder from disk (never the network): fp16 on CUDA, fp32 else."""
        import torch
        from diffusers import AutoPipelineForInpainting
        device = devices.pick(device)
        path = Path(path)
        dtype = torch.float16 if device.startswith("cuda") else torch.float32
        kwargs = dict(dtype=dtype, local_files_only=True)
        try:
            index = json.loads((path / "model_index.json").read_text())
        except (OSError, ValueError):
            raise MissingWeightsError(f"{path} is not a diffusers pipeline folder (no readable "
                                      f"model_index.json)") from None
        if "safety_checker" in index:
            kwargs.update(safety_checker=None, requires_safety_checker=False)
        try:
            pipe = AutoPipelineForInpainting.from_pretrained(str(path), **kwargs)
        except Exception as e:  # corrupt/incomplete folders raise many different types
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            fix = (f"re-download it with `python -m core models download {model}`"
                   if (path.resolve().parent == config.weights_dir()) or ("/" not in model)
                   else "check that the folder holds a complete diffusers inpainting pipeline")
            raise MissingWeightsError(f"could not load model {model!r} from {path}: {first}; {fix}") from None
        pipe.set_progress_bar_config(disable=True)
        inp = cls(pipe, model=model, path=path, device=device, max_concurrent=max_concurrent,
                  reload=reload)
        if cpu_offload and device.startswith("cuda"):
            inp._set_level(2)
        else:
            pipe.to(device)
            if attention_slicing:
                inp._set_level(1)
        return inp

    def close(self) -> None:
        """Drop the pipeline and free its memory. Runs already in progress finish normally."""
        pipe, self._pipe = self._pipe, None
        if pipe is not None:
            del pipe
            _free_device_memory(self.device)

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
    def _scheduler_for(self, pipe, name: Optional[str]):
        """A fresh scheduler for one call (schedulers keep per-call state: never share one)."""
        import diffusers
        cls = getattr(diffusers, SCHEDULERS[name]) if name else type(pipe.scheduler)
        return cls.from_config(pipe.scheduler.config)

    def _run_once(self, image, mask, size, request: InpaintRequest, seed: int,
                  on_step: Callable[[int, int], None], cancel: Optional[threading.Event]) -> np.ndarray:
        import torch
        base = self._pipe
        if base is None:
            raise _Closed()
        pipe = copy.copy(base)                  # shares the modules; per-call attributes stay local
        pipe.scheduler = self._scheduler_for(base, request.scheduler)

        def callback(p, i, t, tensors):
            on_step(i + 1, int(getattr(p, "_num_timesteps", 0) or request.steps))
            if cancel is not None and cancel.is_set():
                raise _Interrupted()
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

    def _generate(self, image, mask, size, request, seed, on_step, cancel) -> np.ndarray:
        import torch
        while True:
            _wait_for(self._slots, cancel)
            try:
                return self._run_once(image, mask, size, request, seed, on_step, cancel)
            except torch.OutOfMemoryError:
                pass  # fall through, with the exception (and its tensors) already released
            finally:
                self._slots.release()
            _free_device_memory(self.device)
            if not self._lighten():
                raise OutOfMemoryError(
                    f"out of {self.device} memory generating {size[0]}x{size[1]} with {self.model!r} "
                    f"even with {self.LEVELS[self.level]}; try a smaller model or close other GPU work")

    def inpaint(self, rgb: np.ndarray, region_mask: np.ndarray, request: InpaintRequest,
                progress: Optional[ProgressFn] = None, cancel: Optional[threading.Event] = None,
                *, timings: Optional[dict] = None) -> list[Variant]:
        """Repaint `region_mask` (HxW uint8, 255 = repaint; bool accepted) of `rgb` (HxWx3 uint8 RGB).

        Returns `request.variants` Variants, each HxWx3 uint8 at the input's size. progress(step,
        total) counts denoising steps over all variants. `timings`, if given, gets the seconds spent
        in "resize" (to processing size), "diffusion" and "upscale" (back to full size) added in.
        Raises CancelledError (cancel set), OutOfMemoryError, InvalidOptionError (bad input, empty
        mask), MissingWeightsError."""
        from PIL import Image
        if not isinstance(request, InpaintRequest):
            raise InvalidOptionError("request must be an InpaintRequest")
        rgb, region_mask = _check_inputs(rgb, region_mask)
        if self.closed:  # unloaded by the manager since this object was handed out
            if self._reload is None:
                raise MissingWeightsError(f"model {self.model!r} was unloaded")
            return self._reload().inpaint(rgb, region_mask, request, progress, cancel, timings=timings)
        spent = {"resize": 0.0, "diffusion": 0.0, "upscale": 0.0}
        clock = time.perf_counter
        t0 = clock()
        H, W = rgb.shape[:2]
        size = self.processing_size((W, H))
        small = _resize(rgb, size)
        small_mask = np.where(_resize(region_mask, size) > 0, 255, 0).astype(np.uint8)
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

                t0 = clock()
                try:
                    out = self._generate(image, mask, size, request, seed, on_step, cancel)
                except _Closed:
                    if self._reload is None:
                        raise MissingWeightsError(f"model {self.model!r} was unloaded") from None
                    return self._reload().inpaint(rgb, region_mask, request, progress, cancel,
                                                  timings=timings)
                finally:
                    spent["diffusion"] += clock() - t0
                t0 = clock()
                variants.append(Variant(_resize(out, (W, H)), seed))
                spent["upscale"] += clock() - t0
        finally:
            if timings is not None:
                for k, x in spent.items():
                    timings[k] = timings.get(k, 0.0) + x
        return variants


class _Closed(Exception):
    pass


# ---------------------------------------------------------------------------------------------
# the one owner of loaded models


class ModelManager:
    """Owns the loaded inpainting pipelines (at most `capacity`, least recently used evicted).

    get() loads a model once and hands the same Inpainter to every caller; switching to another
    model frees the old one first (del + gc + torch.cuda.empty_cache); if loading the new one fails,
    the previous one is loaded back (best effort) and the error is raised. Thread-safe."""

    def __init__(self, capacity: int = 1, max_concurrent: int = 1):
        self.capacity = max(1, int(capacity))
        self.max_concurrent = max_concurrent
        self._lock = threading.RLock()
        self._loaded: "OrderedDict[tuple, Inpainter]" = OrderedDict()

    def get(self, model: str, *, device: Optional[str] = None, **options) -> Inpainter:
        """The Inpainter for `model` (registry name, local folder or HF repo id) on `device`.
        options: attention_slicing, cpu_offload, max_concurrent (used when first loaded).
        Raises MissingWeightsError (with the download command) when the files are absent."""
        spec = weights.spec_for(model, "inpaint")
        path = weights.resolve(model, "inpaint")
        device = devices.pick(device)
        key = (str(Path(path).resolve()), device)
        with self._lock:
            inp = self._loaded.get(key)
            if inp is not None and not inp.closed:
                self._loaded.move_to_end(key)
                return inp
            self._loaded.pop(key, None)
            evicted = []
            while len(self._loaded) >= self.capacity:
                old_key, old = self._loaded.popitem(last=False)
                evicted.append((old_key, old.model, old.device))
                old.close()
                del old
            if evicted:
                _free_device_memory(device)
            options.setdefault("max_concurrent", self.max_concurrent)
            try:
                inp = Inpainter.load(path, model=spec.name, device=device,
                                     reload=lambda: self.get(model, device=device, **options), **options)
            except BaseException:
                for _, old_model, old_device in evicted:  # roll back to what was loaded before
                    try:
                        self.get(old_model, device=old_device)
                    except Exception:
                        pass
                raise
            self._loaded[key] = inp
            return inp

    def loaded(self) -> list[str]:
        with self._lock:
            return [inp.model for inp in self._loaded.values()]

    def unload(self, model: Optional[str] = None) -> None:
        """Free one model (by name) or all of them."""
        with self._lock:
            for key, inp in list(self._loaded.items()):
                if model is None or inp.model == model:
                    del self._loaded[key]
                    inp.close()
            gc.collect()


MANAGER = ModelManager()


def get_inpainter(model: str, *, device: Optional[str] = None, **options) -> Inpainter:
    """The shared Inpainter for `model`: a registry name ("sd15-inpainting", "sdxl-inpainting",
    "tiny"), a local diffusers folder, or a Hugging Face repo id already downloaded with
    `python -m core models download OWNER/NAME`. Loaded once per process (see ModelManager)."""
    return MANAGER.get(model, device=device, **options)
