"""The subject found by a learned salient-object model: BiRefNet (MIT, github.com/ZhengPeng7/BiRefNet).

`birefnet-lite` (Swin-T, ~44 M weights) runs on the CPU, `birefnet` (Swin-L) on a GPU; both come
through Backdrop's weights registry (task "subject": weights/<name>/model.safetensors from the
Hugging Face hub) and are loaded into Backdrop's own copy of the architecture (core.salient.arch) by
key name, strictly — no code is fetched or run from the hub. `tiny` is a random test model built in
code, never picked automatically.
"""
from __future__ import annotations

import functools
from pathlib import Path
from typing import Optional

import numpy as np

from core import weights
from core.errors import BackdropError, MissingWeightsError

TASK = "subject"
AUTOMATIC = ("birefnet", "birefnet-lite")      # never "tiny"
MEAN = np.array([0.485, 0.456, 0.406], np.float32)
STD = np.array([0.229, 0.224, 0.225], np.float32)


class ModelLoadError(BackdropError):
    """A weights file that is not the checkpoint of the model named (one line)."""


def weights_file(name: str) -> Path:
    """The model's safetensors file; MissingWeightsError (one line: what, where, how) when absent."""
    return weights.resolve(name, TASK) / "model.safetensors"


def default_device(name: str) -> str:
    """The general model on a GPU when there is one; the lite (and tiny) one on the CPU."""
    from core import devices
    return devices.pick() if name == "birefnet" else "cpu"


def load(name: str, device: Optional[str] = None):
    """The model `name` with its weights, in eval mode on `device`, fp32 on the CPU. Raises
    MissingWeightsError when not downloaded and ModelLoadError (one line) when the file is not
    that model's checkpoint (keys or shapes differ). Kept loaded while the file is unchanged."""
    from core import cpu_engine
    path = weights_file(name)
    device = device or default_device(name)
    return _load(name, str(path), path.stat().st_mtime_ns, device, cpu_engine.wanted(device))


@functools.lru_cache(maxsize=2)
def _load(name: str, path: str, _mtime: int, device: str, openvino: bool = False):
    import torch
    from safetensors.torch import load_file
    from core.salient.arch import ARCHS, BiRefNet
    try:
        state = load_file(str(path))
    except Exception as e:
        raise ModelLoadError(f"cannot read {path}: {e} — download {name} again") from None
    model = BiRefNet(ARCHS[name])
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    extra = sorted(set(state) - set(ours))
    shapes = sorted(k for k in set(ours) & set(state) if tuple(ours[k].shape) != tuple(state[k].shape))
    if missing or extra or shapes:
        first = (missing or extra or shapes)[0]
        raise ModelLoadError(f"{path} is not a {name} checkpoint: {len(missing)} weights missing, "
                             f"{len(extra)} unexpected, {len(shapes)} of another shape (first: {first})")
    model.load_state_dict(state, strict=True)
    model = model.to(device=device, dtype=torch.float32).eval()
    if openvino:                    # on a CPU under BACKDROP_CPU_BACKEND (docs/cpu.md)
        from core import cpu_encoders
        cpu_encoders.use_for_birefnet(model, Path(path), device, ARCHS[name].size)
    return model


def predict(rgb: np.ndarray, name: str, device: Optional[str] = None) -> np.ndarray:
    """The subject's probability per pixel, HxW float32 0..1 at the photo's full resolution:
    the photo resized to the model's square input, ImageNet-normalised, the sigmoid of the last
    prediction resized back."""
    import cv2
    import torch
    from core.salient.arch import ARCHS
    model = load(name, device)
    size = ARCHS[name].size
    h, w = rgb.shape[:2]
    x = cv2.resize(rgb[..., :3], (size, size), interpolation=cv2.INTER_LINEAR).astype(np.float32) / 255
    x = torch.from_numpy(((x - MEAN) / STD).transpose(2, 0, 1)[None].copy())
    dev = next(model.parameters()).device
    with torch.inference_mode():
        prob = model(x.to(dev)).sigmoid()[0, 0].float().cpu().numpy()
    return cv2.resize(prob, (w, h), interpolation=cv2.INTER_LINEAR)


def confidence(prob: np.ndarray) -> float:
    """How sure the model is, 0..1: the share of pixels it puts clearly on one side (p < 0.1 or
    p > 0.9). Near 1 for a crisp cut-out; low where much of the map is undecided grey."""
    return float(np.mean((prob < 0.1) | (prob > 0.9)))


def find_subject(rgb: np.ndarray, name: str = "birefnet-lite", device: Optional[str] = None):
    """The subject as a core.auto.AutoSubject (mask 255 = subject, box, confidence, method = name).
    Raises core.auto's NoSubjectError when the model finds nothing."""
    from core import arrays
    from core.auto import AutoSubject, NoSubjectError
    rgb = arrays.rgb(rgb, "photo")
    prob = predict(rgb, name, device)
    mask = np.where(prob > 0.5, 255, 0).astype(np.uint8)
    ys, xs = np.nonzero(mask)
    if not len(xs):
        raise NoSubjectError("no subject found: the model sees no salient object in the photo")
    box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    return AutoSubject(mask, confidence(prob), box, method=name)


def available() -> Optional[str]:
    """The learned model to use automatically: `birefnet` when present and a GPU is there, else
    `birefnet-lite` when present, else None. The tiny test model is never chosen."""
    present = [n for n in AUTOMATIC if weights.is_present(weights.get_spec(n, TASK))]
    if "birefnet" in present and default_device("birefnet") != "cpu":
        return "birefnet"
    return "birefnet-lite" if "birefnet-lite" in present else None


__all__ = ["TASK", "load", "predict", "find_subject", "available", "confidence", "weights_file",
           "MissingWeightsError", "ModelLoadError"]
