"""The service's settings, read once from the environment where the application is built and
handed to every replica (replicas may run on other machines, with another environment).

BACKDROP_API_TOKEN, BACKDROP_API_MAX_UPLOAD_MB and BACKDROP_SERVE_* (replicas, GPUs and CPUs per
replica, models to preload) are described with every other setting in core/settings.py.
Every other BACKDROP_* variable (data dir, weights dir, database URL, blob store, device, mode, ...)
and the Hugging Face offline switches are forwarded to the replicas as they are here
(BACKDROP_SERVER_URL and the token are not: replicas run the work themselves).
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from typing import Any, Optional

from core.errors import InvalidOptionError
from core.settings import Settings, load

FORWARDED_PREFIXES = ("BACKDROP_",)
FORWARDED = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HOME", "HF_HUB_CACHE", "TORCH_HOME")
# The replicas ARE the service: they never become clients of one, and never see the token.
NOT_FORWARDED = ("BACKDROP_SERVER_URL", "BACKDROP_API_TOKEN")
DEFAULT_MAX_UPLOAD_MB = Settings.model_fields["api_max_upload_mb"].default


def _number(name: str, text: str, *, whole: bool = False, low: float = 0.0) -> float:
    try:
        value = int(text) if whole else float(text)
    except ValueError:
        raise InvalidOptionError(f"{name} must be a {'whole ' if whole else ''}number, got {text!r}") from None
    if value < low:
        raise InvalidOptionError(f"{name} must be at least {low:g}, got {text!r}")
    return value


def clean_token(value: Optional[str]) -> Optional[str]:
    """A bearer token as set in BACKDROP_API_TOKEN: surrounding whitespace (the newline a secret
    file ends with) taken off; None when empty. InvalidOptionError, which never shows the token,
    when what is left is not printable ASCII without spaces (all an HTTP header can carry)."""
    token = (value or "").strip()
    if not token:
        return None
    if not all("!" <= c <= "~" for c in token):
        raise InvalidOptionError("BACKDROP_API_TOKEN may hold only printable ASCII characters without "
                                 "spaces (it travels in an HTTP header); check the variable or the file "
                                 "it is read from")
    return token


def _replicas(text: str) -> tuple[int, int]:
    low, sep, high = text.strip().partition("-")
    a = int(_number("BACKDROP_SERVE_REPLICAS", low, whole=True, low=1))
    b = int(_number("BACKDROP_SERVE_REPLICAS", high, whole=True, low=1)) if sep else a
    if b < a:
        raise InvalidOptionError(f"BACKDROP_SERVE_REPLICAS: MIN-MAX needs MIN <= MAX, got {text!r}")
    return a, b


def _default_gpus() -> float:
    try:
        import torch
        return 1.0 if torch.cuda.is_available() else 0.0
    except Exception:      # no torch here: the replicas will say what is wrong
        return 0.0


@dataclass(frozen=True)
class ServiceConfig:
    """What the application is built with. `env` is set in every replica before anything loads."""

    token: Optional[str] = None
    max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * 2**20
    min_replicas: int = 1
    max_replicas: int = 1
    num_gpus: float = 0.0
    num_cpus: float = 1.0
    ingress_num_cpus: float = 0.0
    max_ongoing_requests: int = 1        # per model replica: one job at a time per model copy
    preload: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_env(cls, environ: Optional[dict[str, str]] = None, **overrides: Any) -> "ServiceConfig":
        """The settings of `environ` (default: this process's environment, core/settings.py)."""
        # The whole environment is copied only to forward it to the replicas (apply_env).
        env = dict(os.environ if environ is None else environ)
        s = load(environ)
        low, high = _replicas(s.serve_replicas)
        cfg = cls(
            token=clean_token(s.api_token),
            max_upload_bytes=int(s.api_max_upload_mb * 2**20),
            min_replicas=low, max_replicas=high,
            num_gpus=_default_gpus() if s.serve_num_gpus is None else s.serve_num_gpus,
            num_cpus=s.serve_num_cpus,
            preload=tuple(p.strip() for p in s.serve_preload.split(",") if p.strip()),
            env={k: v for k, v in env.items()
                 if (k.startswith(FORWARDED_PREFIXES) or k in FORWARDED) and k not in NOT_FORWARDED},
        )
        return replace(cfg, **overrides) if overrides else cfg

    def autoscaling(self) -> dict[str, Any]:
        """Serve's autoscaling_config for a model deployment (min = max: a fixed count)."""
        return {"min_replicas": self.min_replicas, "max_replicas": self.max_replicas,
                "initial_replicas": self.min_replicas,
                "target_ongoing_requests": max(1, self.max_ongoing_requests),
                "upscale_delay_s": 10.0, "downscale_delay_s": 300.0}

    def actor_options(self) -> dict[str, Any]:
        return {"num_gpus": self.num_gpus, "num_cpus": self.num_cpus}


def apply_env(env: dict[str, str]) -> None:
    """In a replica: take the builder's settings (data dir, weights, database, offline switches)."""
    os.environ.update({str(k): str(v) for k, v in env.items()})
    for name in NOT_FORWARDED:
        os.environ.pop(name, None)
