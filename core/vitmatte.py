"""Learned alpha matting at the subject's border: ViTMatte (transformers `VitMatteForImageMatting`).

    alpha = predict_alpha(rgb, trimap)          # HxW float32 in [0, 1]
    available()                                 # are the default model's files on disk?

`rgb` is an RGB uint8 HxWx3 photo (or a crop of one), `trimap` an HxW uint8 map of the same size
holding only 0 (sure background), 128 (unknown: the model decides) and 255 (sure subject), e.g.
`core.matte.trimap`. The alpha is the model's output everywhere; clamping the known regions to
0 / 1 is the caller's choice (core.matte does it).

Models are the "matte" task of the weights registry (`core.weights`): `DEFAULT_MODEL`
(hustvl/vitmatte-small-composition-1k), `vitmatte-base`, and `tiny` (random-initialised, built in
code by `core.tiny`, for tests). A model is loaded once per (name, folder, device) and shared by
every thread; absent files raise `MissingWeightsError` naming the folder, the size and
`python -m core models download NAME`. Nothing is ever downloaded here.

Sizes: ViTMatte needs height and width padded to a multiple of 32 (its image processor pads at
the bottom and right; the alpha is cropped back). Its attention is global in a few blocks, so the
cost grows with the square of the pixel count: inputs larger than `TILE` on a side are matted in
overlapping `TILE` x `TILE` tiles, blended with linear ramps over the `OVERLAP` px they share.
A tile without any unknown (128) pixel is not run at all; its alpha is trimap / 255. Runs in
float32 on `core.devices.pick()`, under torch.inference_mode. torch and transformers are imported
inside functions.
"""
from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core import arrays, devices, weights
from core.errors import InvalidOptionError, MissingWeightsError
from core.loaded import LoadedModels
from core.log import quiet_transformers

__all__ = ["DEFAULT_MODEL", "TILE", "OVERLAP", "predict_alpha", "available", "load", "loaded_models",
           "clear_models"]

#: Registry name (task "matte") of hustvl/vitmatte-small-composition-1k.
DEFAULT_MODEL = "vitmatte-small"
TASK = "matte"

#: Largest side matted in one pass, and the overlap of neighbouring tiles (multiples of 32).
#: ViTMatte was trained on 512 px crops; its global-attention blocks make a 1024 px pass ~9x the
#: cost of a 512 px one (random-init ViTMatte-S, 2 CPU cores: 256 px 0.6 s, 512 px 2.8 s, 1024 px 25 s).
TILE = 512
OVERLAP = 64

#: Loaded models kept at once (ViTMatte-S is 100 MB, -B 390 MB).
MAX_LOADED = 2

_TRIMAP_OK = np.zeros(256, bool)
_TRIMAP_OK[[0, 128, 255]] = True


class _Loaded:
    """One loaded ViTMatte: the model (eval, on its device) and its image processor."""

    def __init__(self, name: str, model, processor):
        self.name = name
        self.model = model
        self.processor = processor
        self.calls = 0              # forward passes run (for tests/benchmarks)
        self._lock = threading.Lock()

    def alpha(self, rgb: np.ndarray, trimap: np.ndarray) -> np.ndarray:
        """The model's alpha for one tile (any size: padded to a multiple of 32, cropped back)."""
        import torch

        h, w = trimap.shape
        inputs = self.processor(images=rgb, trimaps=trimap, return_tensors="pt",
                                input_data_format="channels_last")
        pixel_values = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        with self._lock:
            self.calls += 1
        with torch.inference_mode():
            alphas = self.model(pixel_values=pixel_values).alphas      # (1, 1, H32, W32)
            alpha = alphas[0, 0, :h, :w].float().clamp(0, 1).cpu().numpy()
        return alpha.astype(np.float32, copy=False)


_LOADED: "LoadedModels[_Loaded]" = LoadedModels(lambda: MAX_LOADED)   # (name, path, device) ->


# ----------------------------------------------------------------------------- models
def _spec(model: Optional[str]) -> "weights.ModelSpec":
    name = DEFAULT_MODEL if model is None else model
    if not isinstance(name, str):
        raise InvalidOptionError(f"matting model must be a registry name, got {type(name).__name__}")
    return weights.get_spec(name, TASK)   # InvalidOptionError "unknown matte model ...; known: ..."


def available(model: Optional[str] = None) -> bool:
    """Whether the matting model (`DEFAULT_MODEL` if None) is on disk; loads and downloads nothing.
    InvalidOptionError for a name that is not a "matte" model of the registry."""
    return weights.is_present(_spec(model))


def _load_folder(spec: "weights.ModelSpec", path: Path, device: str) -> _Loaded:
    import torch
    from transformers import VitMatteForImageMatting, VitMatteImageProcessor

    with quiet_transformers():
        try:
            processor = VitMatteImageProcessor.from_pretrained(path, local_files_only=True)
            model = VitMatteForImageMatting.from_pretrained(path, local_files_only=True)
        except Exception as e:  # truncated download, wrong files, another architecture
            raise MissingWeightsError(
                f"model {spec.name!r}: {path} is incomplete or not a ViTMatte folder ({type(e).__name__}); "
                f"delete it and run `python -m core models download {spec.name}`"
            ) from e
    return _Loaded(spec.name, model.to(device=device, dtype=torch.float32).eval(), processor)


def load(model: Optional[str] = None, device: Optional[str] = None) -> _Loaded:
    """The shared loaded model for a registry name (default `DEFAULT_MODEL`) on `device` (default
    `core.devices.pick()`), loaded on first use. MissingWeightsError when its files are absent."""
    spec = _spec(model)
    path = weights.resolve(spec.name, TASK)      # MissingWeightsError: folder, size, the command
    device = devices.pick(device)
    key = (spec.name, str(Path(path).resolve()), device)
    return _LOADED.get(key, lambda: _load_folder(spec, path, device))


def loaded_models() -> list[str]:
    """Names of the matting models kept loaded, least recently used first."""
    return [loaded.name for _, loaded in _LOADED.items()]


def clear_models() -> None:
    """Forget every loaded matting model (freed once nobody holds it)."""
    _LOADED.clear()


# ----------------------------------------------------------------------------- matting
def _check(image: Any, trimap: Any) -> tuple[np.ndarray, np.ndarray]:
    image = arrays.rgb(image, "image")
    if not isinstance(trimap, np.ndarray) or trimap.dtype != np.uint8 or trimap.ndim != 2:
        raise InvalidOptionError(f"trimap must be a uint8 array of shape HxW (0, 128, 255), "
                                 f"got {arrays.describe(trimap)}")
    if trimap.shape != image.shape[:2]:
        raise InvalidOptionError(f"trimap is {trimap.shape[1]}x{trimap.shape[0]} but must match the image "
                                 f"{image.shape[1]}x{image.shape[0]}")
    if not _TRIMAP_OK[trimap].all():
        bad = int(trimap[~_TRIMAP_OK[trimap]][0])
        raise InvalidOptionError(f"trimap may only hold 0 (background), 128 (unknown) and 255 (subject), "
                                 f"found {bad}")
    return image, trimap


def _starts(n: int, tile: int, overlap: int) -> list[int]:
    """Tile origins along a side of n px: stride tile - overlap, the last tile flush with the end."""
    if n <= tile:
        return [0]
    stride = tile - overlap
    starts = list(range(0, n - tile, stride))
    return starts + [n - tile]


def _ramp(n: int, overlap: int, first: bool, last: bool) -> np.ndarray:
    """Blend weights along one side of a tile: rising over `overlap` px unless at the image edge."""
    w = np.ones(n, np.float32)
    if overlap > 0:
        r = (np.arange(overlap, dtype=np.float32) + 0.5) / overlap
        if not first:
            w[:overlap] = np.minimum(w[:overlap], r)
        if not last:
            w[-overlap:] = np.minimum(w[-overlap:], r[::-1])
    return w


def predict_alpha(image: np.ndarray, trimap: np.ndarray, model: Optional[str] = None) -> np.ndarray:
    """Alpha matte (HxW float32 in [0, 1], 1 = subject) of `image` (RGB uint8 HxWx3) guided by
    `trimap` (HxW uint8: 0 background, 128 unknown, 255 subject), with the registry's matting
    model `model` (default `DEFAULT_MODEL`). Any size works (padding to a multiple of 32 and
    tiling above `TILE` px are done here). Deterministic for a given model and device.

    Raises InvalidOptionError (one line) for a bad image/trimap or an unknown model name and
    MissingWeightsError when the model's files are not downloaded."""
    image, trimap = _check(image, trimap)
    spec = _spec(model)
    weights.resolve(spec.name, TASK)             # missing weights fail first, even with nothing to do
    h, w = trimap.shape
    unknown = trimap == 128
    if not unknown.any():
        return trimap.astype(np.float32) / 255.0
    loaded = load(spec.name)
    tile, overlap = int(TILE), int(OVERLAP)
    if h <= tile and w <= tile:
        return loaded.alpha(image, trimap)
    ys, xs = _starts(h, tile, overlap), _starts(w, tile, overlap)
    total = np.zeros((h, w), np.float32)
    weight = np.zeros((h, w), np.float32)
    for i, y in enumerate(ys):
        for j, x in enumerate(xs):
            sl = (slice(y, y + tile), slice(x, x + tile))
            t = trimap[sl]
            th, tw = t.shape
            if unknown[sl].any():
                a = loaded.alpha(np.ascontiguousarray(image[sl]), np.ascontiguousarray(t))
            else:
                a = t.astype(np.float32) / 255.0
            wt = np.outer(_ramp(th, overlap, i == 0, i == len(ys) - 1),
                          _ramp(tw, overlap, j == 0, j == len(xs) - 1))
            total[sl] += a * wt
            weight[sl] += wt
    return np.clip(total / weight, 0.0, 1.0).astype(np.float32, copy=False)
