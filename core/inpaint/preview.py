"""The live preview: while a run paints, its predicted picture as a small RGB image, at most every
PREVIEW_INTERVAL s (the tiny autoencoder in fast mode, a linear latent->RGB map in quality mode).
It reads the latents only: the output is the same bytes with or without it."""
from __future__ import annotations

import functools
import logging
import time
from typing import Callable, Optional

import numpy as np

from core.inpaint.sizes import resize

log = logging.getLogger(__name__)

PreviewFn = Callable[[np.ndarray], None]

PREVIEW_INTERVAL = 0.3      # seconds: at most this often a preview is decoded and delivered
PREVIEW_LONG_SIDE = 256     # pixels: previews are at most this big (the latents are pooled first)

# The linear latent -> RGB approximation (the well-known factors of the SD 1.x and SDXL latent
# spaces, as in ComfyUI's previews): rgb in [-1, 1] ~= latents (4 channels, scaled) @ W + b.
LATENT_RGB: dict[str, tuple[tuple[tuple[float, ...], ...], tuple[float, ...]]] = {
    "sd15": (((0.3512, 0.2297, 0.3227), (0.3250, 0.4974, 0.2350), (-0.2829, 0.1762, 0.2721),
              (-0.2120, -0.2616, -0.7177)), (0.0, 0.0, 0.0)),
    "sdxl": (((0.3651, 0.4232, 0.4341), (-0.2533, -0.0042, 0.1068), (0.1076, 0.1111, -0.0362),
              (-0.3165, -0.2492, -0.2188)), (0.1084, -0.0175, -0.0011)),
}


def latent_rgb(family: Optional[str]):
    return LATENT_RGB.get(family or "", LATENT_RGB["sd15"])


def preview_image(pipe, latents, family: Optional[str]) -> np.ndarray:
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
            weight, bias = latent_rgb(family)
            W = torch.tensor(weight, dtype=torch.float32, device=lat.device)
            b = torch.tensor(bias, dtype=torch.float32, device=lat.device)
            rgb = lat[0].float().permute(1, 2, 0) @ W + b
        img = ((rgb / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    ih, iw = img.shape[:2]
    if max(ih, iw) < PREVIEW_LONG_SIDE // 2:   # the linear preview is at latent size: enlarge
        k = max(1, PREVIEW_LONG_SIDE // max(ih, iw))
        img = resize(img, (iw * k, ih * k))
    return np.ascontiguousarray(img)


class LivePreview:
    """One run's previews: `show(img)` at most every PREVIEW_INTERVAL s, never at the last step; a
    failing `show` turns previews off for the run (the painting goes on). `spent["preview"]` gets
    the seconds spent decoding. Built on the run's own pipeline copy (it wraps its scheduler)."""

    def __init__(self, pipe, show: Optional[PreviewFn], family: Optional[str],
                 spent: Optional[dict] = None):
        self._show = show
        self._family = family
        self._spent = spent
        self._on = show is not None
        self._last = -float("inf")
        self._x0 = None
        if self._on:
            self._keep_prediction(pipe.scheduler)

    def _keep_prediction(self, scheduler) -> None:
        # The scheduler's own prediction of the final latents (LCM's `denoised`, DDIM/Euler's
        # pred_original_sample) previews far better than the noisy latents of an early step.
        # functools.wraps keeps step's signature, so the pipeline passes the same arguments
        # (its generator) as without the wrapper: same bytes out.
        import torch
        step = scheduler.step

        @functools.wraps(step)
        def keep_prediction(*args, **kw):
            out = step(*args, **kw)
            x0 = out[1] if isinstance(out, tuple) and len(out) > 1 else (
                getattr(out, "denoised", None) if getattr(out, "denoised", None) is not None
                else getattr(out, "pred_original_sample", None))
            self._x0 = x0 if torch.is_tensor(x0) else None
            return out

        scheduler.step = keep_prediction

    def after_step(self, pipe, i: int, total: int, latents) -> None:
        """Called after denoising step i (0-based) of `total` with the step's latents."""
        now = time.perf_counter()
        if not (self._on and i + 1 < total and now - self._last >= PREVIEW_INTERVAL):
            return
        x0 = self._x0
        lat = x0 if x0 is not None and x0.shape == latents.shape else latents
        try:
            self._show(preview_image(pipe, lat, self._family))
        except Exception:   # a failing preview never stops the painting
            log.warning("preview failed; no more previews in this run", exc_info=True)
            self._on = False
        self._last = time.perf_counter()
        if self._spent is not None:
            self._spent["preview"] = self._spent.get("preview", 0.0) + self._last - now
