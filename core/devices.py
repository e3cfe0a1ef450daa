"""The one device choice for every model (segmentation and inpainting alike).

    pick()          -> "cuda" | "mps" | "cpu"   the best available, or BACKDROP_DEVICE
    pick("cpu")     -> "cpu"                    an explicit request, checked the same way
    name("cuda")    -> "NVIDIA H200"            what to show a user

Order: an explicit `requested` device, else `BACKDROP_DEVICE`, else CUDA when a GPU is usable,
else Apple's MPS when available, else the CPU. A named device that is unknown or not available
here raises InvalidOptionError (one line). Only the device is chosen here: each model decides its
own dtype (inpainting uses fp16 on CUDA only, see core.inpaint). torch is imported lazily.
"""
from __future__ import annotations

import os
import re
from typing import Optional

from core.errors import InvalidOptionError

__all__ = ["ENV", "pick", "name"]

ENV = "BACKDROP_DEVICE"
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
    env = os.environ.get(ENV, "").strip()
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
