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

Where it lives: pipeline.py (Inpainter: build, scheduler map, OOM ladder, compile, one call's run),
fast.py (fast mode's LoRA fuse and tiny autoencoder), preview.py (the live preview), sizes.py
(processing size, resizing), manager.py (ModelManager, the LRU of loaded pipelines).
"""
from __future__ import annotations

from core.inpaint.fast import FastParts, fast_parts, resolve_generation
from core.inpaint.manager import MANAGER, ModelManager, get_inpainter
from core.inpaint.pipeline import InpaintRequest, Inpainter, ProgressFn, Variant
from core.inpaint.preview import LATENT_RGB, PREVIEW_INTERVAL, PREVIEW_LONG_SIDE, PreviewFn
from core.inpaint.sizes import processing_size
from core.spec import SCHEDULERS
from core.tiny import _tiny_tokenizer, build_tiny_inpaint, build_tiny_pipeline

__all__ = ["FastParts", "fast_parts", "resolve_generation", "MANAGER", "ModelManager", "get_inpainter",
           "InpaintRequest", "Inpainter", "ProgressFn", "Variant", "LATENT_RGB", "PREVIEW_INTERVAL",
           "PREVIEW_LONG_SIDE", "PreviewFn", "processing_size", "SCHEDULERS", "build_tiny_inpaint",
           "build_tiny_pipeline", "_tiny_tokenizer"]
