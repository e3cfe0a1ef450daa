"""The one registry of model files: what each model is, where it lives locally, how to get it.

Local layout under `config.weights_dir()` (BACKDROP_WEIGHTS_DIR, default ./weights):
  single-file checkpoints (SAM)        -> weights/<filename>
  repositories (diffusers, SAM 2.1,    -> weights/<name>/   (a snapshot folder)
  SAM-HQ, ViTMatte)
  any other Hugging Face repo id       -> weights/<owner>--<name>/   (inpainting only)
  fast-mode add-ons (task "fast")      -> weights/<name>/   (a LoRA file or a tiny-autoencoder folder)
  `tiny` test models                   -> built in code (core.tiny), random-initialised, never downloaded

Tasks: "segment" (finds the subject), "inpaint" (paints the background), "matte" (the learned alpha
matte at the subject's border: ViTMatte, see core.vitmatte) and "fast": the few-step
LoRAs (LCM, TCD) and tiny autoencoders (TAESD) that fast mode puts on an inpainting model of the same
`family` ("sd15", "sdxl"; "tiny" for the test models). They are never offered as inpainting models;
`fast_lora(family, scheduler)` and `tiny_autoencoder(family)` name the ones a family uses.

Public API:
  specs(task=None) -> list[ModelSpec]          get_spec(name, task) -> ModelSpec
  spec_for(model, task) -> ModelSpec           registry name, a local folder, or an HF repo id
  local_path(spec) -> Path                     is_present(spec) -> bool
  resolve(name, task) -> Path                  MissingWeightsError (file, size, fix) when absent
  missing_message(spec) -> str
  download(name, task, progress=None, *, url=None, cancel=None) -> Path
                                               checksum-verified, atomic, resumable
  download_file(url, dst, *, sha256=None, size=None, progress=None, cancel=None) -> Path
  partial_path(dst) -> Path                    where an unfinished download is kept to resume
  list_models(task=None) -> list[ModelInfo]    what `python -m core models list` prints
  fast_lora(family, scheduler) / tiny_autoencoder(family) -> registry name or None
  addons(model, mode=None) -> list[ModelSpec]  what `mode` (default: this machine's) adds to a model
  run_needs(model, mode, lora, scheduler)      every file an AI run needs: the model (+ its add-ons)
  fast_supported(model) -> bool                whether fast mode has add-ons for the model's family
  download_plan(name, task, addons=None)       the model, then the add-ons its default mode needs
  starter_set(segmenter, model, mode)          what the app needs on this machine, in one list
  download_many(specs, progress, cancel, on_item)   one after the other, present ones skipped
  manual_install(spec) -> str                  where to put a model's files by hand (offline)
  HostUnreachableError                         a DownloadError: the host cannot be reached
  model_family(model) -> "sd15" | "sdxl" | "sd2" | "tiny" | None   (reads configs, loads nothing)

`progress(done_bytes, total_bytes)`; total_bytes is 0 when the server does not say.
`cancel`: a threading.Event (or a callable returning bool) checked between chunks; when set, the
download stops with CancelledError and keeps what it has for the next try.
Nothing here imports torch/diffusers at module import time.
"""
from __future__ import annotations

# Where it lives: registry.py (the table, where files live, lookups, in_the_way), download.py
# (download, download_many), hub.py (huggingface_hub snapshots), urls.py (the resumable downloader
# for plain URLs), messages.py (what a failed download says).
from core.weights.download import download, download_many
from core.weights.hub import _hf_tqdm, download_repo
from core.weights.messages import OFFLINE, HostUnreachableError, manual_install, sam_url
from core.weights.registry import (DIFFUSERS_ALLOW, DIFFUSERS_IGNORE, FAMILY_NAMES, FAST_LORAS, REGISTRY,
                                   SAM_URL, TASKS, TAESD_FILES, TINY_AUTOENCODERS, TRANSFORMERS_KINDS,
                                   TRANSFORMERS_WEIGHTS, ModelInfo, ModelSpec, addons, download_plan,
                                   fast_lora, fast_supported, get_spec, in_the_way, is_present,
                                   list_models, local_path, lora_file, missing_message, model_family,
                                   resolve, run_needs, size_text, spec_for, specs, starter_set,
                                   tiny_autoencoder)
from core.weights.urls import CancelFn, ProgressFn, download_file, partial_path

_size_text = size_text   # the name cli.py and ui/resources.py use

__all__ = ["download", "download_many", "download_repo", "OFFLINE", "HostUnreachableError",
           "manual_install", "sam_url", "DIFFUSERS_ALLOW", "DIFFUSERS_IGNORE", "FAMILY_NAMES",
           "FAST_LORAS", "REGISTRY", "SAM_URL", "TASKS", "TAESD_FILES", "TINY_AUTOENCODERS",
           "TRANSFORMERS_KINDS", "TRANSFORMERS_WEIGHTS", "ModelInfo", "ModelSpec", "addons",
           "download_plan", "fast_lora", "fast_supported", "get_spec", "in_the_way", "is_present",
           "list_models", "local_path", "lora_file", "missing_message", "model_family", "resolve",
           "run_needs", "size_text", "spec_for", "specs", "starter_set", "tiny_autoencoder",
           "CancelFn", "ProgressFn", "download_file", "partial_path", "_hf_tqdm", "_size_text"]
