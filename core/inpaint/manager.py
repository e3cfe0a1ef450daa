"""The one owner of loaded models: `ModelManager` (an LRU of loaded pipelines, one per process as
`MANAGER`) and `get_inpainter`, the lookup every job goes through."""
from __future__ import annotations

import gc
import threading
from collections import OrderedDict
from pathlib import Path
from typing import Optional

from core import config, devices, weights
from core.errors import InvalidOptionError
from core.inpaint.fast import fast_parts
from core.inpaint.pipeline import Inpainter, free_device_memory


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
                free_device_memory(device)
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
                free_device_memory(device)       # whatever the failed load had built is dropped
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
