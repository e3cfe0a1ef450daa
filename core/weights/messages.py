"""What a failed download says: one line naming what, its size and why (the host unreachable, a
gated or missing repo, an HTTP status), and how to install the files by hand."""
from __future__ import annotations

import os

from core.errors import DownloadError
from core.settings import settings
from core.weights.registry import TAESD_FILES, ModelSpec, local_path

OFFLINE = "can't reach the model host — offline?"


class HostUnreachableError(DownloadError):
    """The model host could not be reached (no network, DNS failure, connection refused, offline
    mode). str() is OFFLINE, then how to put the files in place by hand."""


def manual_install(spec: ModelSpec) -> str:
    """Where a model's files go when they are installed by hand, and where they come from."""
    path = local_path(spec)
    if spec.kind == "sam":
        return f"save {sam_url(spec)} as {path}"
    if spec.kind.startswith("tiny"):
        return f"{spec.name} is built in code: python -m core models download {spec.name}"
    if spec.kind == "local":
        return f"{path} must be a diffusers folder (model_index.json and the model's subfolders)"
    what = {"diffusers": "model_index.json and the scheduler, tokenizer, text_encoder, unet and vae "
                         "folders (safetensors)",
            "lora": spec.filename or "the .safetensors file",
            "taesd": " and ".join(TAESD_FILES)}.get(spec.kind, "the *.json files and model.safetensors")
    return f"put {what} from https://huggingface.co/{spec.repo_id} in {path}{os.sep}"


_OFFLINE_ERRNOS = {"ENETUNREACH", "EHOSTUNREACH", "ECONNREFUSED", "ECONNRESET", "ETIMEDOUT",
                   "ENETDOWN", "EHOSTDOWN"}


def unreachable(e: BaseException) -> bool:
    """Whether an error (or one it was raised from) means the host could not be reached."""
    import errno
    import socket
    seen = 0
    while e is not None and seen < 8:
        names = {c.__name__ for c in type(e).__mro__}
        if names & {"LocalEntryNotFoundError", "OfflineModeIsEnabled", "ConnectError", "ConnectTimeout",
                    "TimeoutException", "NetworkError", "ConnectionError", "gaierror", "timeout",
                    "TimeoutError", "ConnectionRefusedError"}:
            return True
        if isinstance(e, (socket.gaierror, ConnectionError, TimeoutError)):
            return True
        code = getattr(e, "errno", None)
        if isinstance(code, int) and errno.errorcode.get(code) in _OFFLINE_ERRNOS:
            return True
        reason = getattr(e, "reason", None)
        e = reason if isinstance(reason, BaseException) else (e.__cause__ or e.__context__)
        seen += 1
    return False


def plain_reason(e: BaseException) -> str:
    """A short reason a person can read: the HTTP status when there is one, never a class name."""
    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    names = {c.__name__ for c in type(e).__mro__}
    if "GatedRepoError" in names or status in (401, 403):
        return "the model host refused it (a gated model: accept its licence and log in first)"
    if "RepositoryNotFoundError" in names or status == 404:
        return "the model host has no such model (HTTP 404)"
    if status:
        return f"the model host answered HTTP {status}"
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return "the download failed (see the log)"


def sam_url(spec: ModelSpec) -> str:
    """The SAM checkpoint URL; BACKDROP_SAM_URL_BASE replaces the official base (mirrors, tests)."""
    base = settings().sam_url_base
    if base:
        return base.rstrip("/") + "/" + spec.filename
    return spec.url
