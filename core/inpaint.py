"""Generative backgrounds: Stable Diffusion inpainting over diffusers' AutoPipelineForInpainting.

Conventions: images are RGB uint8 HxWx3 numpy arrays, masks HxW uint8; for inpainting the
*region* mask has 255 = area to repaint (the background), 0 = keep. Sizes are (width, height).

    req = InpaintRequest("a sunny beach", steps=30, seed=7, variants=2)
    inp = get_inpainter("sd15-inpainting")          # or "sdxl-inpainting", "tiny", a folder, a repo id
    variants = inp.inpaint(rgb, region_mask, req, progress=on_step, cancel=event, preview=show)
    variants[i].image   # HxWx3 uint8 at the input's full size (before paste-back: see core.compose)
    variants[i].seed    # s + i; running the same request with seed=s+i, variants=1 gives the same bytes

Modes (`request.mode`, core/spec.py):
  * quality: the model as published, its own VAE, the scheduler asked for (or the model's own).
  * fast: the few-step LoRA of the model's family (LCM-LoRA or TCD-LoRA; registry task "fast")
    loaded with diffusers' `load_lora_weights`, FUSED into the UNet (no per-step LoRA cost), the
    LCM/TCD scheduler built from the pipeline's config, guidance 1.0 (one UNet pass per step, batch
    1), and the tiny autoencoder (TAESD / TAESDXL, `AutoencoderTiny`) in place of the VAE for
    encode and decode. `resolve_generation(gen)` says which LoRA a fast request uses (history
    records it) and raises the one-line error when an add-on is missing or the family has none.
  Each (model, device, mode, LoRA) is its own pipeline in the manager: the quality one is never
  modified. `inp.inpaint` routes a request of the other mode to the right pipeline.

How a call runs:
  * the image and mask are resized to the model's processing size: aspect ratio kept, long side =
    the model's native size (unet.sample_size x vae scale: 512 for SD 1.5, 1024 for SDXL, 64 for
    `tiny`), both sides multiples of 8; the result is resized back to the full input size (bicubic).
  * variants run one after the other, each with its own CPU `torch.Generator` seeded s+i (so a
    variant's seed alone reproduces it, on any device); seed None draws a random seed from the OS
    without touching any global RNG.
  * progress(step, total) after every denoising step, counted over all variants; `cancel`
    (threading.Event) is checked between steps: the run stops at once and raises CancelledError.
  * preview(img) (optional), at most every PREVIEW_INTERVAL s during diffusion: the step's
    predicted image as a small HxWx3 uint8 RGB (long side <= PREVIEW_LONG_SIDE), decoded with the
    tiny autoencoder in fast mode, with the linear latent->RGB approximation in quality mode (no
    extra weights). It reads the latents only: the output is the same bytes with or without it.
    No preview after cancel, none at the last step (the result follows at once).
  * dtype from core.devices.dtype: fp16 on CUDA (SDPA attention, diffusers' default), fp32 on MPS
    (plus attention slicing, as diffusers recommends for Macs) and the CPU. BACKDROP_COMPILE=1
    compiles the UNet with torch.compile on CUDA; the first run at each size then reports its
    time as "compile" in timings (warm-up included), not as "diffusion".
  * CUDA out-of-memory is retried with attention + VAE slicing, then with model CPU offload; if
    that still fails, OutOfMemoryError (one line). Never a crash.

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
import functools
import gc
import json
import logging
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

from core import arrays, config, devices, weights
from core.spec import SCHEDULERS, Generation
from core.settings import settings
from core.errors import (BackdropError, CancelledError, InvalidOptionError, MissingWeightsError,
                         OutOfMemoryError)
from core.tiny import _tiny_tokenizer, build_tiny_inpaint, build_tiny_pipeline  # noqa: F401 - re-exported

log = logging.getLogger(__name__)

ProgressFn = Callable[[int, int], None]
PreviewFn = Callable[[np.ndarray], None]

PREVIEW_INTERVAL = 0.3      # seconds: at most this often a preview is decoded and delivered
PREVIEW_LONG_SIDE = 256     # pixels: previews are at most this big (the latents are pooled first)
COMPILE_ENV = "BACKDROP_COMPILE"

# The linear latent -> RGB approximation (the well-known factors of the SD 1.x and SDXL latent
# spaces, as in ComfyUI's previews): rgb in [-1, 1] ~= latents (4 channels, scaled) @ W + b.
LATENT_RGB: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "sd15": (((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
              (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0)),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}

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


# ---------------------------------------------------------------------------------------------
# fast mode: which add-ons a request uses


@dataclass(frozen=True)
class FastParts:
    """What fast mode puts on a model: the family, the LoRA's and the tiny autoencoder's specs."""
    family: str
    lora: "weights.ModelSpec"
    autoencoder: "weights.ModelSpec"


def _family_name(family: Optional[str]) -> str:
    return weights.FAMILY_NAMES.get(family or "", "an architecture Backdrop does not know")


def fast_parts(model: str, lora: Optional[str] = None, scheduler: Optional[str] = "lcm") -> FastParts:
    """The LoRA and tiny autoencoder fast mode uses on `model` (checked present). `lora` None = the
    family's own for `scheduler`. Raises InvalidOptionError (no LoRA for the family, a LoRA of
    another family, not a LoRA) or MissingWeightsError (an add-on not downloaded), one line each."""
    family = weights.model_family(model)
    if family is None:
        weights.resolve(model, "inpaint")          # not downloaded: that error (with its command)
    name = lora or weights.fast_lora(family, scheduler)
    if name is None:
        raise InvalidOptionError(f"fast mode has no few-step LoRA for model {model!r} "
                                 f"({_family_name(family)}); use mode quality")
    lspec = weights.get_spec(name, "fast")         # unknown name: "unknown fast model ...; known: ..."
    if lspec.kind not in ("lora", "tiny-lora"):
        raise InvalidOptionError(f"{name!r} is not a few-step LoRA (it is {lspec.description})")
    if lspec.family != family:
        raise InvalidOptionError(f"LoRA {name!r} is for {_family_name(lspec.family)} but model "
                                 f"{model!r} is {_family_name(family)}")
    aname = weights.tiny_autoencoder(family)
    if aname is None:
        raise InvalidOptionError(f"fast mode has no tiny autoencoder for model {model!r} "
                                 f"({_family_name(family)}); use mode quality")
    aspec = weights.get_spec(aname, "fast")
    for spec in (lspec, aspec):
        if not weights.is_present(spec):
            raise MissingWeightsError(f"fast mode needs {spec.name!r} ({spec.description}): "
                                      + weights.missing_message(spec))
    return FastParts(family, lspec, aspec)


def resolve_generation(gen: Generation) -> Generation:
    """The generation as it will really run: for mode fast, `lora` filled in with the registry name
    of the LoRA used (the model family's own when None) after checking that it and the tiny
    autoencoder are on disk; quality requests come back unchanged. Raises MissingWeightsError (an
    add-on missing; the line names `python -m core models download NAME`) or InvalidOptionError
    (no LoRA for the model's family, a LoRA of another family). Loads no weights."""
    if gen.mode != "fast":
        return gen
    parts = fast_parts(gen.model, gen.lora, gen.scheduler)
    return gen if gen.lora == parts.lora.name else gen.model_copy(update={"lora": parts.lora.name})


def _first_line(e: BaseException, prefer: str = "") -> str:
    lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()] or [type(e).__name__]
    return (next((ln for ln in lines if prefer and prefer in ln), lines[0]))[:240]


def _load_taesd(spec, dtype):
    from diffusers import AutoencoderTiny
    path = weights.local_path(spec)
    try:
        return AutoencoderTiny.from_pretrained(str(path), torch_dtype=dtype, local_files_only=True)
    except Exception as e:
        raise MissingWeightsError(f"could not load the tiny autoencoder {spec.name!r} from {path}: "
                                  f"{_first_line(e)}; re-download it with "
                                  f"`python -m core models download {spec.name}`") from None


def _fuse_lora(pipe, spec, model: str) -> None:
    """load_lora_weights + fuse_lora + unload (the fused weights stay, the LoRA layers go).
    A file that cannot be read: MissingWeightsError; one that does not fit the UNet:
    InvalidOptionError. On error the pipeline is half-modified: the caller must drop it."""
    from safetensors.torch import load_file
    path = weights.lora_file(spec)
    try:
        state = load_file(str(path))
    except Exception as e:
        raise MissingWeightsError(f"LoRA {spec.name!r} at {path} cannot be read ({_first_line(e)}); "
                                  f"re-download it with `python -m core models download {spec.name}`") from None
    try:
        pipe.load_lora_weights(state, adapter_name="fast")
        if "fast" not in sum(pipe.get_list_adapters().values(), []):
            raise ValueError("none of its layers matches the model")
        pipe.fuse_lora(lora_scale=1.0, adapter_names=["fast"])
        pipe.unload_lora_weights()
    except Exception as e:
        raise InvalidOptionError(f"LoRA {spec.name!r} does not fit model {model!r}: "
                                 f"{_first_line(e, 'mismatch')}") from None


def _latent_rgb(family: Optional[str]):
    return LATENT_RGB.get(family or "", LATENT_RGB["sd15"])


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
            kwargs["vae"] = _load_taesd(fast.autoencoder, dtype)
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
            _fuse_lora(pipe, fast.lora, model)      # raises; the caller drops the pipeline
            pipe.scheduler = cls._scheduler_class(pipe, "tcd" if fast.lora.name.startswith("tcd")
                                                  else "lcm").from_config(pipe.scheduler.config)
        compile = settings().compile if compile is None else compile
        compile = bool(compile) and device.startswith("cuda") and not offload
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
    @staticmethod
    def _scheduler_class(pipe, name: Optional[str]):
        import diffusers
        return getattr(diffusers, SCHEDULERS[name]) if name else type(pipe.scheduler)

    def _scheduler_for(self, pipe, name: Optional[str]):
        """A fresh scheduler for one call (schedulers keep per-call state: never share one)."""
        return self._scheduler_class(pipe, name).from_config(pipe.scheduler.config)

    # -- live preview --------------------------------------------------------------------------
    def _preview_image(self, pipe, latents) -> np.ndarray:
        """HxWx3 uint8 RGB of (the first image of) `latents`, long side <= PREVIEW_LONG_SIDE:
        the tiny autoencoder when the pipeline has one (fast mode), else the linear approximation."""
        import torch
        import torch.nn.functional as F
        lat = latents[:1].detach()
        h, w = lat.shape[-2:]
        with torch.no_grad():
            if type(pipe.vae).__name__ == "AutoencoderTiny":
                scale = int(pipe.vae_scale_factor)
                f = max(1, -(-max(h, w) * scale // PREVIEW_LONG_SIDE))
                if f > 1:       # pool the latents: a 2x smaller decode costs 4x less
                    lat = F.interpolate(lat.float(), size=(max(1, h // f), max(1, w // f)), mode="area")
                vae = pipe.vae
                x = vae.decode(lat.to(vae.dtype) / vae.config.scaling_factor, return_dict=False)[0]
                rgb = x[0].permute(1, 2, 0).float()
            else:
                weight, bias = _latent_rgb(self.family)
                W = torch.tensor(weight, dtype=torch.float32, device=lat.device)
                b = torch.tensor(bias, dtype=torch.float32, device=lat.device)
                rgb = lat[0].float().permute(1, 2, 0) @ W + b
            img = ((rgb / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
        ih, iw = img.shape[:2]
        if max(ih, iw) < PREVIEW_LONG_SIDE // 2:   # the linear preview is at latent size: enlarge
            k = max(1, PREVIEW_LONG_SIDE // max(ih, iw))
            img = _resize(img, (iw * k, ih * k))
        return np.ascontiguousarray(img)

    def _run_once(self, image, mask, size, request: InpaintRequest, seed: int,
                  on_step: Callable[[int, int], None], cancel: Optional[threading.Event],
                  preview: Optional[PreviewFn] = None, spent: Optional[dict] = None) -> np.ndarray:
        import torch
        base = self._pipe
        if base is None:
            raise _Closed()
        pipe = copy.copy(base)                  # shares the modules; per-call attributes stay local
        pipe.scheduler = self._scheduler_for(base, request.scheduler)
        predicted: dict = {}
        if preview is not None:
            # The scheduler's own prediction of the final latents (LCM's `denoised`, DDIM/Euler's
            # pred_original_sample) previews far better than the noisy latents of an early step.
            # functools.wraps keeps step's signature, so the pipeline passes the same arguments
            # (its generator) as without the wrapper: same bytes out.
            step = pipe.scheduler.step

            @functools.wraps(step)
            def keep_prediction(*args, **kw):
                out = step(*args, **kw)
                x0 = out[1] if isinstance(out, tuple) and len(out) > 1 else (
                    getattr(out, "denoised", None) if getattr(out, "denoised", None) is not None
                    else getattr(out, "pred_original_sample", None))
                predicted["x0"] = x0 if torch.is_tensor(x0) else None
                return out

            pipe.scheduler.step = keep_prediction
        shown = {"on": preview is not None, "last": -float("inf")}

        def callback(p, i, t, tensors):
            total = int(getattr(p, "_num_timesteps", 0) or request.steps)
            on_step(i + 1, total)
            if cancel is not None and cancel.is_set():
                raise _Interrupted()
            now = time.perf_counter()
            if shown["on"] and i + 1 < total and now - shown["last"] >= PREVIEW_INTERVAL:
                x0 = predicted.get("x0")
                lat = x0 if x0 is not None and x0.shape == tensors["latents"].shape else tensors["latents"]
                try:
                    preview(self._preview_image(p, lat))
                except Exception:   # a failing preview never stops the painting
                    log.warning("preview failed; no more previews in this run", exc_info=True)
                    shown["on"] = False
                shown["last"] = time.perf_counter()
                if spent is not None:
                    spent["preview"] = spent.get("preview", 0.0) + shown["last"] - now
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
            _free_device_memory(self.device)
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

    def get(self, model: str, *, device: Optional[str] = None, mode: str = "quality",
            lora: Optional[str] = None, **options) -> Inpainter:
        """The Inpainter for `model` (registry name, local folder or HF repo id) on `device`, in
        `mode` ("quality", or "fast" with `lora`: a registry LoRA name, None = the family's LCM one).
        options: attention_slicing, cpu_offload, max_concurrent, compile (used when first loaded).
        Raises MissingWeightsError (with the download command) when the files are absent,
        InvalidOptionError for fast mode on a family without a LoRA or with a LoRA that does not fit."""
        if mode not in config.MODES:
            raise InvalidOptionError(f"mode must be fast or quality, got {mode!r}")
        spec = weights.spec_for(model, "inpaint")
        path = weights.resolve(model, "inpaint")
        device = devices.pick(device)
        fast = fast_parts(model, lora) if mode == "fast" else None
        key = (str(Path(path).resolve()), device, mode, fast.lora.name if fast else None)
        with self._lock:
            inp = self._loaded.get(key)
            if inp is not None and not inp.closed:
                self._loaded.move_to_end(key)
                return inp
            self._loaded.pop(key, None)
            evicted = []
            while len(self._loaded) >= self.capacity:
                old_key, old = self._loaded.popitem(last=False)
                evicted.append(old._origin)
                old.close()
                del old
            if evicted:
                _free_device_memory(device)
            options.setdefault("max_concurrent", self.max_concurrent)
            origin = dict(model=model, device=device, mode=mode,
                          lora=fast.lora.name if fast else None, **options)
            try:
                inp = Inpainter.load(
                    path, model=spec.name, device=device, mode=mode, fast=fast,
                    family=weights.model_family(model),
                    reload=lambda: self.get(**origin),
                    route=lambda m, lo: self.get(model, device=device, mode=m, lora=lo, **options),
                    **options)
            except BaseException:
                _free_device_memory(device)       # whatever the failed load had built is dropped
                for old_origin in evicted:        # roll back to what was loaded before
                    try:
                        self.get(**old_origin)
                    except Exception:
                        pass
                raise
            inp._origin = origin
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


def get_inpainter(model: str, *, device: Optional[str] = None, mode: str = "quality",
                  lora: Optional[str] = None, **options) -> Inpainter:
    """The shared Inpainter for `model`: a registry name ("sd15-inpainting", "sdxl-inpainting",
    "tiny"), a local diffusers folder, or a Hugging Face repo id already downloaded with
    `python -m core models download OWNER/NAME`, in `mode` (fast: with the family's few-step LoRA
    or `lora`, and its tiny autoencoder). Loaded once per process (see ModelManager)."""
    return MANAGER.get(model, device=device, mode=mode, lora=lora, **options)
