"""The one device choice for every model (segmentation and inpainting alike).

    pick()          -> "cuda" | "mps" | "cpu"   the best available, or BACKDROP_DEVICE
    pick("cpu")     -> "cpu"                    an explicit request, checked the same way
    name("cuda")    -> "NVIDIA H200"            what to show a user
    dtype("cuda")   -> torch.float16            what the diffusion models run in there

Order: an explicit `requested` device, else `BACKDROP_DEVICE`, else CUDA when a GPU is usable,
else Apple's MPS when available, else the CPU. A named device that is unknown or not available
here raises InvalidOptionError (one line). torch is imported lazily.

Precision (`dtype`): fp16 on CUDA (with PyTorch's SDPA attention, diffusers' default processor);
fp32 on Apple MPS (fp16 SD 1.5 inpainting on MPS is known to give NaN/black images on some macOS
versions, so the safe choice; BACKDROP_DTYPE=float16 opts in) and on the CPU (bf16 autocast and
channels-last measured no faster there: see bench/generate.py). `BACKDROP_DTYPE` (float16,
bfloat16, float32) overrides the choice for every device; fp16 on the CPU is refused (most CPU
kernels lack it).
"""
from __future__ import annotations

import re
from typing import Optional

from core.errors import InvalidOptionError
from core.settings import settings

__all__ = ["ENV", "DTYPE_ENV", "pick", "name", "dtype"]

ENV = "BACKDROP_DEVICE"
DTYPE_ENV = "BACKDROP_DTYPE"
_DTYPES = {"float16": "float16", "fp16": "float16", "half": "float16", "bfloat16": "bfloat16",
           "bf16": "bfloat16", "float32": "float32", "fp32": "float32"}
_FORM = re.compile(r"^(cpu|mps|cuda(:\d+)?)$")


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def _mps() -> bool:
    import torch
    mps = getattr(torch.backends, "mps", None)
    return bool(mps is not None and mps.is_available())


def _check(device: str, source: str) -> str:
    d = device.strip().lower()
    if not _FORM.match(d):
        raise InvalidOptionError(f"unknown device {device!r} ({source}); use cpu, cuda, cuda:N or mps")
    if d.startswith("cuda"):
        import torch
        if not torch.cuda.is_available():
            raise InvalidOptionError(f"device {device!r} ({source}) is not available: no usable CUDA GPU")
        index = int(d.split(":")[1]) if ":" in d else 0
        if index >= torch.cuda.device_count():
            raise InvalidOptionError(f"device {device!r} ({source}) is not available: "
                                     f"{torch.cuda.device_count()} CUDA GPU(s) found")
    elif d == "mps" and not _mps():
        raise InvalidOptionError(f"device {device!r} ({source}) is not available on this machine")
    return d


def pick(requested: Optional[str] = None) -> str:
    """The device to run a model on (see the module docstring for the order)."""
    if requested:
        return _check(requested, "requested")
    env = settings().device
    if env:
        return _check(env, ENV)
    if _cuda():
        return "cuda"
    if _mps():
        return "mps"
    return "cpu"


def name(device: Optional[str] = None) -> str:
    """A human-readable name of `device` (default: `pick()`), e.g. "NVIDIA H200", "Apple MPS", "CPU"."""
    device = pick(device)
    if device.startswith("cuda"):
        import torch
        return torch.cuda.get_device_name(device)
    return "Apple MPS" if device == "mps" else "CPU"


def dtype(device: Optional[str] = None):
    """The torch dtype the diffusion models run in on `device` (default `pick()`): float16 on CUDA,
    float32 on MPS and the CPU, or `BACKDROP_DTYPE` (see the module docstring)."""
    import torch
    device = pick(device)
    env = settings().dtype.lower()
    if env:
        if env not in _DTYPES:
            raise InvalidOptionError(f"unknown dtype {env!r} ({DTYPE_ENV}); use float16, bfloat16 or float32")
        if _DTYPES[env] == "float16" and device == "cpu":
            raise InvalidOptionError(f"float16 ({DTYPE_ENV}) is not supported on the CPU; use bfloat16 "
                                     "or float32")
        return getattr(torch, _DTYPES[env])
    return torch.float16 if device.startswith("cuda") else torch.float32
