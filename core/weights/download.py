"""Getting a model onto this machine: `download` (built in code for the tiny ones, the plain-URL
downloader for SAM checkpoints, huggingface_hub for repositories), `download_many`, and
`in_the_way` (never replace what is not ours)."""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from core import tiny
from core.errors import DownloadError, InvalidOptionError, MissingWeightsError
from core.weights.hub import download_repo
from core.weights.messages import sam_url
from core.weights.registry import ModelSpec, in_the_way, is_present, local_path, missing_message, spec_for
from core.weights.urls import CancelFn, ProgressFn, download_file

# the models built in code (no network), by kind: what writes one at a path (tiny-birefnet: below)
BUILT_IN_CODE: dict[str, Callable[[Path], Path]] = {
    "tiny-diffusers": tiny.build_tiny_inpaint, "tiny-sam": tiny.build_tiny_sam,
    "tiny-lora": tiny.build_tiny_lora, "tiny-taesd": tiny.build_tiny_taesd,
    "tiny-vitmatte": tiny.build_tiny_vitmatte, "tiny-sam-hq": tiny.build_tiny_sam_hq}


def download_many(chosen: list[ModelSpec], progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelFn] = None,
                  on_item: Optional[Callable[[int, ModelSpec], None]] = None) -> list[Path]:
    """Download (or build) each model of `chosen` in turn, skipping those already present.
    `progress(done, total)` counts bytes over the whole set (sizes approximate; models built in
    code count nothing); `on_item(i, spec)` is called as model i starts. Stops at the first error
    (DownloadError, CancelledError); what was fetched stays, and the next call goes on from there."""
    todo = [s for s in chosen if not is_present(s)]
    total = sum(s.size_bytes for s in todo if not s.kind.startswith("tiny"))
    before = 0
    for i, spec in enumerate(todo):
        if on_item:
            on_item(i, spec)
        own = 0 if spec.kind.startswith("tiny") else spec.size_bytes

        def step(done: int, _total: int, before=before, own=own) -> None:
            if progress:
                progress(before + min(done, own or done), total)

        download(spec.name, spec.task, progress=step, cancel=cancel)
        before += own
        if progress:
            progress(before, total)
    return [local_path(s) for s in chosen]




def download(name: str, task: str, progress: Optional[ProgressFn] = None, *,
             url: Optional[str] = None, cancel: Optional[CancelFn] = None) -> Path:
    """Fetch (or, for `tiny`, build) a model so `resolve(name, task)` succeeds; returns its path.
    Already-present models are returned as they are. `url` overrides a single-file model's URL
    (mirrors, tests). A failed or cancelled download keeps what it got and the next call resumes.
    Raises DownloadError (one line: what, size, why) when it cannot, CancelledError when `cancel`
    is set."""
    spec = spec_for(name, task)
    if spec.kind == "builtin":
        raise InvalidOptionError(f"model {spec.name!r} is built in and needs no download")
    if spec.kind == "local":
        if not is_present(spec):
            raise MissingWeightsError(missing_message(spec))
        return local_path(spec)
    path = local_path(spec)
    if is_present(spec) and url is None:
        return path
    blocker = in_the_way(spec, path)
    if blocker:
        raise DownloadError(blocker)
    if spec.kind in BUILT_IN_CODE:
        return BUILT_IN_CODE[spec.kind](path)
    if spec.kind == "tiny-birefnet":         # its builder imports core.salient: only when needed
        from core.salient.tiny import build_tiny_birefnet
        return build_tiny_birefnet(path)
    if spec.kind == "sam":
        return download_file(url or sam_url(spec), path, sha256=spec.sha256,
                             size=None if url else spec.size_bytes, progress=progress, cancel=cancel)
    if spec.kind in ("sam2", "sam-hq", "diffusers", "vitmatte", "lora", "taesd", "birefnet"):
        return download_repo(spec, progress, cancel)
    raise InvalidOptionError(f"don't know how to download model {spec.name!r} (kind {spec.kind})")
