"""Hub downloads: huggingface_hub's snapshot_download (its resume and file filters) into a hidden
partial folder beside the model's place, renamed into place when complete; progress through a
tqdm class that draws nothing and forwards bytes."""
from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path
from typing import Optional

from core.errors import CancelledError, DownloadError
from core.weights.messages import OFFLINE, HostUnreachableError, manual_install, plain_reason, unreachable
from core.weights.registry import (DIFFUSERS_ALLOW, DIFFUSERS_IGNORE, TAESD_FILES, ModelSpec, in_the_way,
                                   local_path, size_text)
from core.weights.urls import CancelFn, ProgressFn, cancelled

log = logging.getLogger("core.weights")

def _hf_tqdm(progress: Optional[ProgressFn], cancel: Optional[CancelFn] = None):
    """A tqdm class for snapshot_download that forwards its byte counter to progress() and stops
    the download (CancelledError) at its next update once `cancel` is set. It draws nothing (the
    CLI draws its own bar on a terminal, the app its own progress): a bar of the hub's on stderr
    would land around the CLI's one `error:` line and in the app's server log."""
    from tqdm.auto import tqdm

    class _Forward(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            self.bytes = kwargs.get("unit") == "B"      # a disabled bar keeps no unit

        def update(self, n=1):
            r = super().update(n)           # a disabled bar neither draws nor counts: count here
            self.n += n or 0
            if cancelled(cancel):
                raise CancelledError("download cancelled; the files fetched so far are kept to resume")
            if progress and self.bytes:
                try:
                    progress(int(self.n), int(self.total or 0))
                except Exception:  # progress reporting never breaks a download
                    pass
            return r

    return _Forward


def _transformers_files(spec: ModelSpec) -> list[str]:
    """allow_patterns for a transformers model repo: its configs and one copy of its weights
    (safetensors if the repo has them, else pytorch_model.bin). Asks the hub for the file list."""
    from huggingface_hub import HfApi
    files = HfApi().list_repo_files(spec.repo_id, revision=spec.revision or "main")
    weights = "*.safetensors*" if any(".safetensors" in f for f in files) else "pytorch_model.bin*"
    return ["*.json", weights]


def download_repo(spec: ModelSpec, progress: Optional[ProgressFn],
                   cancel: Optional[CancelFn] = None) -> Path:
    """snapshot_download into weights/.<name>.partial (resumable), then rename into place."""
    final = local_path(spec)
    partial = final.with_name(f".{final.name}.partial")
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        from huggingface_hub import snapshot_download
        kwargs = {}
        if spec.kind == "diffusers":
            kwargs = {"allow_patterns": DIFFUSERS_ALLOW, "ignore_patterns": DIFFUSERS_IGNORE}
        elif spec.kind in ("lora", "birefnet"):
            kwargs = {"allow_patterns": [spec.filename]}
        elif spec.kind == "taesd":
            kwargs = {"allow_patterns": TAESD_FILES}
        elif spec.kind in ("sam-hq", "vitmatte"):
            kwargs = {"allow_patterns": _transformers_files(spec)}
        if progress or cancel is not None:
            kwargs["tqdm_class"] = _hf_tqdm(progress, cancel)
        snapshot_download(spec.repo_id, revision=spec.revision or "main", local_dir=partial, **kwargs)
    except CancelledError:
        raise
    except Exception as e:  # huggingface_hub raises many types: offline, 404, gated, network
        what = f"{spec.name} ({size_text(spec.size_bytes)})"
        if unreachable(e):
            log.info("download of %s: host unreachable: %s", spec.repo_id, e)
            raise HostUnreachableError(f"{OFFLINE} {what}: to install it by hand, "
                                       f"{manual_install(spec)}") from None
        log.warning("download of %s failed", spec.repo_id, exc_info=True)
        raise DownloadError(f"could not download {what} from {spec.repo_id}: {plain_reason(e)} "
                            f"(to install it by hand, {manual_install(spec)})") from None
    # snapshot_download keeps its resume metadata in .cache/; the final folder doesn't need it
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    blocker = in_the_way(spec, final)       # something appeared there during the download
    if blocker:
        raise DownloadError(blocker + " (the download is kept and used on the next try)")
    os.replace(partial, final)
    return final
