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

import contextlib
import hashlib
import http.client
import logging
import os
import re
import shutil
import stat
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Callable, Optional, Union

from core import config, tiny
from core.errors import CancelledError, DownloadError, InvalidOptionError, MissingWeightsError
from core.files import resolve_target, short
from core.settings import settings

log = logging.getLogger(__name__)

try:
    import fcntl
except ImportError:  # pragma: no cover - not POSIX: no lock against two downloads of one file
    fcntl = None

ProgressFn = Callable[[int, int], None]
CancelFn = Union[threading.Event, Callable[[], bool]]


@dataclass(frozen=True)
class ModelSpec:
    name: str                       # registry key used on the command line and in the app
    kind: str                       # "sam" | "sam2" | "diffusers" | "tiny-sam" | "tiny-diffusers"
    #                                 | "sam-hq" | "tiny-sam-hq" (transformers SamHQModel folders)
    #                                 | "builtin" | "local" (a diffusers folder given by path)
    #                                 | "lora" | "taesd" | "tiny-lora" | "tiny-taesd" (task "fast")
    #                                 | "vitmatte" | "tiny-vitmatte" (task "matte")
    task: str                       # "segment" | "inpaint" | "matte" | "fast" | "subject"
    description: str
    size_bytes: int = 0             # approximate download size
    filename: Optional[str] = None  # single-file checkpoint name (kind "sam"; a LoRA's file in its repo)
    url: Optional[str] = None       # direct download URL (kind "sam")
    sha256: Optional[str] = None    # of the single file
    repo_id: Optional[str] = None   # Hugging Face repo (kinds "sam2", "sam-hq", "diffusers", "vitmatte")
    revision: Optional[str] = None  # pinned revision for repos ("main" if unknown)
    sam_type: Optional[str] = None  # key in segment_anything.sam_model_registry
    path: Optional[str] = None      # kind "local": the folder itself
    family: Optional[str] = None    # inpainting models and fast add-ons: "sd15" | "sdxl" | "tiny"


SAM_URL = "https://dl.fbaipublicfiles.com/segment_anything/"

# Names are unique per task: `tiny` is both the test segmenter and the test inpainting model.
REGISTRY: dict[tuple[str, str], ModelSpec] = {
    (s.task, s.name): s
    for s in [
        ModelSpec("sam-vit-b", "sam", "segment", "Segment Anything ViT-B (official checkpoint)",
                  375_042_383, "sam_vit_b_01ec64.pth", SAM_URL + "sam_vit_b_01ec64.pth",
                  "ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912", sam_type="vit_b"),
        ModelSpec("sam-vit-l", "sam", "segment", "Segment Anything ViT-L (official checkpoint)",
                  1_249_524_607, "sam_vit_l_0b3195.pth", SAM_URL + "sam_vit_l_0b3195.pth",
                  "3adcc4315b642a4d2101128f611684e8734c41232a17c648ed1693702a49a622", sam_type="vit_l"),
        ModelSpec("sam-vit-h", "sam", "segment", "Segment Anything ViT-H (official checkpoint)",
                  2_564_550_879, "sam_vit_h_4b8939.pth", SAM_URL + "sam_vit_h_4b8939.pth",
                  "a7bf3b02f3ebf1267aba913ff637d9a2d5c33d3173bb679e46d9f338c26f262e", sam_type="vit_h"),
        ModelSpec("sam2-tiny", "sam2", "segment", "SAM 2.1 Hiera-Tiny via transformers (fast on CPU)",
                  156_000_000, repo_id="facebook/sam2.1-hiera-tiny", revision="main"),
        ModelSpec("sam2-small", "sam2", "segment", "SAM 2.1 Hiera-Small via transformers",
                  184_000_000, repo_id="facebook/sam2.1-hiera-small", revision="main"),
        # SAM-HQ: SAM's ViT with a high-quality output token (finer borders), via transformers.
        ModelSpec("sam-hq-vit-b", "sam-hq", "segment", "SAM-HQ ViT-B via transformers (finer borders)",
                  380_000_000, repo_id="syscv-community/sam-hq-vit-base", revision="main"),
        ModelSpec("sam-hq-vit-l", "sam-hq", "segment", "SAM-HQ ViT-L via transformers (finer borders)",
                  1_260_000_000, repo_id="syscv-community/sam-hq-vit-large", revision="main"),
        ModelSpec("sam-hq-vit-h", "sam-hq", "segment", "SAM-HQ ViT-H via transformers (finer borders)",
                  2_570_000_000, repo_id="syscv-community/sam-hq-vit-huge", revision="main"),
        ModelSpec("grabcut", "builtin", "segment", "OpenCV GrabCut: quick fallback, no weights needed"),
        ModelSpec("tiny", "tiny-sam", "segment", "Random-initialised small SAM for tests (built in code)"),
        ModelSpec("tiny-sam-hq", "tiny-sam-hq", "segment",
                  "Random-initialised small SAM-HQ for tests (built in code)"),
        ModelSpec("sd15-inpainting", "diffusers", "inpaint", "Stable Diffusion 1.5 inpainting",
                  4_270_000_000, repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting",
                  revision="main", family="sd15"),
        ModelSpec("sdxl-inpainting", "diffusers", "inpaint", "Stable Diffusion XL 1.0 inpainting",
                  13_900_000_000, repo_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
                  revision="main", family="sdxl"),
        ModelSpec("tiny", "tiny-diffusers", "inpaint",
                  "Random-initialised tiny SD inpainting for tests (built in code)", family="tiny"),
        # learned matting at the subject's border (core.vitmatte): image + trimap -> alpha
        ModelSpec("vitmatte-small", "vitmatte", "matte", "ViTMatte-S (Composition-1k): learned alpha matte",
                  103_000_000, repo_id="hustvl/vitmatte-small-composition-1k", revision="main"),
        ModelSpec("vitmatte-base", "vitmatte", "matte", "ViTMatte-B (Composition-1k): finer, ~4x slower",
                  390_000_000, repo_id="hustvl/vitmatte-base-composition-1k", revision="main"),
        ModelSpec("tiny", "tiny-vitmatte", "matte",
                  "Random-initialised tiny ViTMatte for tests (built in code)"),
        # fast mode: few-step distillation LoRAs (fused into the UNet) and tiny autoencoders.
        # Repos are fetched with snapshot_download (the hub checks each file's sha256; only the
        # weights file / config + safetensors are fetched); sizes are approximate.
        ModelSpec("lcm-sd15", "lora", "fast", "LCM-LoRA for SD 1.5 (4 steps, LCM sampler)",
                  135_000_000, "pytorch_lora_weights.safetensors",
                  repo_id="latent-consistency/lcm-lora-sdv1-5", revision="main", family="sd15"),
        ModelSpec("lcm-sdxl", "lora", "fast", "LCM-LoRA for SDXL (4 steps, LCM sampler)",
                  394_000_000, "pytorch_lora_weights.safetensors",
                  repo_id="latent-consistency/lcm-lora-sdxl", revision="main", family="sdxl"),
        ModelSpec("tcd-sd15", "lora", "fast", "TCD-LoRA for SD 1.5 (4-8 steps, TCD sampler)",
                  67_500_000, "TCD-SD15-LoRA.safetensors",
                  repo_id="h1t/TCD-SD15-LoRA", revision="main", family="sd15"),
        ModelSpec("tcd-sdxl", "lora", "fast", "TCD-LoRA for SDXL (4-8 steps, TCD sampler)",
                  394_000_000, "TCD-SDXL-LoRA.safetensors",
                  repo_id="h1t/TCD-SDXL-LoRA", revision="main", family="sdxl"),
        ModelSpec("taesd", "taesd", "fast", "Tiny autoencoder (TAESD) for SD 1.x: fast encode/decode",
                  9_800_000, repo_id="madebyollin/taesd", revision="main", family="sd15"),
        ModelSpec("taesdxl", "taesd", "fast", "Tiny autoencoder (TAESDXL) for SDXL: fast encode/decode",
                  9_800_000, repo_id="madebyollin/taesdxl", revision="main", family="sdxl"),
        ModelSpec("tiny-lcm", "tiny-lora", "fast",
                  "Random-initialised LoRA for the tiny test model (built in code)",
                  filename="pytorch_lora_weights.safetensors", family="tiny"),
        ModelSpec("tiny-taesd", "tiny-taesd", "fast",
                  "Random-initialised tiny autoencoder for the tiny test model (built in code)",
                  family="tiny"),
        # the subject found without clicks (core.salient): BiRefNet, MIT licence, loaded into
        # Backdrop's own copy of the architecture (no trust_remote_code); one safetensors file
        ModelSpec("birefnet-lite", "birefnet", "subject",
                  "BiRefNet_lite (Swin-T, MIT): finds the subject without clicks, fine on CPU",
                  178_000_000, "model.safetensors", repo_id="ZhengPeng7/BiRefNet_lite", revision="main"),
        ModelSpec("birefnet", "birefnet", "subject",
                  "BiRefNet general (Swin-L, MIT): finds the subject without clicks, for a GPU",
                  885_000_000, "model.safetensors", repo_id="ZhengPeng7/BiRefNet", revision="main"),
        ModelSpec("tiny", "tiny-birefnet", "subject",
                  "Random-initialised tiny BiRefNet for tests (built in code)", filename="model.safetensors"),
    ]
}

TASKS = ("segment", "inpaint", "fast", "matte", "subject")

# Which add-on a family uses in fast mode: (family, scheduler) -> LoRA, family -> tiny autoencoder.
FAST_LORAS: dict[tuple[str, str], str] = {
    ("sd15", "lcm"): "lcm-sd15", ("sd15", "tcd"): "tcd-sd15",
    ("sdxl", "lcm"): "lcm-sdxl", ("sdxl", "tcd"): "tcd-sdxl",
    ("tiny", "lcm"): "tiny-lcm", ("tiny", "tcd"): "tiny-lcm",
}
TINY_AUTOENCODERS: dict[str, str] = {"sd15": "taesd", "sdxl": "taesdxl", "tiny": "tiny-taesd"}
FAMILY_NAMES = {"sd15": "Stable Diffusion 1.x", "sdxl": "Stable Diffusion XL",
                "sd2": "Stable Diffusion 2.x", "tiny": "the tiny test model"}
TAESD_FILES = ["config.json", "diffusion_pytorch_model.safetensors"]

# What a diffusers snapshot needs: fp32 safetensors + configs/tokenizers. Skips the original .ckpt,
# .bin duplicates, fp16/non-EMA variants, ONNX/Flax exports and the 1.2 GB safety checker
# (pipelines are loaded with safety_checker=None; see core.inpaint).
DIFFUSERS_ALLOW = ["model_index.json", "scheduler/*", "tokenizer/*", "tokenizer_2/*",
                   "text_encoder/*", "text_encoder_2/*", "unet/*", "vae/*"]
DIFFUSERS_IGNORE = ["*.ckpt", "*.bin", "*.fp16.*", "*non_ema*", "*.onnx", "*.msgpack", "*.pb", "*.h5"]

# transformers model folders (SAM-HQ, ViTMatte): configs + one copy of the weights, safetensors
# when the repo has them (else the PyTorch .bin), never the TF/Flax/ONNX exports.
TRANSFORMERS_KINDS = ("sam-hq", "tiny-sam-hq", "vitmatte", "tiny-vitmatte")
TRANSFORMERS_WEIGHTS = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin",
                        "pytorch_model.bin.index.json")

_REPO_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def fast_lora(family: Optional[str], scheduler: Optional[str] = "lcm") -> Optional[str]:
    """Registry name of the few-step LoRA for a model family and fast sampler, None if there is none."""
    return FAST_LORAS.get((family or "", scheduler or "lcm"))


def tiny_autoencoder(family: Optional[str]) -> Optional[str]:
    """Registry name of the tiny autoencoder (TAESD) for a model family, None if there is none."""
    return TINY_AUTOENCODERS.get(family or "")


def model_family(model: str) -> Optional[str]:
    """"sd15", "sdxl", "sd2" or "tiny" for an inpainting model (registry name, folder or repo id):
    from the registry, else from the downloaded folder's configs (pipeline class, UNet
    cross_attention_dim: 768 SD 1.x, 1024 SD 2.x, 2048 SDXL, 32 the tiny test UNet). None when it
    cannot be told (not downloaded, or another architecture). Loads no weights."""
    import json
    spec = spec_for(model, "inpaint")
    if spec.family:
        return spec.family
    path = local_path(spec)
    try:
        index = json.loads((path / "model_index.json").read_text())
        unet = json.loads((path / "unet" / "config.json").read_text())
    except (OSError, ValueError):
        return None
    if "XL" in str(index.get("_class_name", "")):
        return "sdxl"
    dim = unet.get("cross_attention_dim")
    return {768: "sd15", 1024: "sd2", 2048: "sdxl", 32: "tiny"}.get(dim if isinstance(dim, int) else 0)


def addons(model: str, mode: Optional[str] = None) -> list["ModelSpec"]:
    """The add-ons `mode` puts on inpainting model `model` (a registry name, folder or repo id):
    in fast mode (`mode` None = this machine's default, config.default_mode) the family's LCM-LoRA
    and tiny autoencoder; in quality none. The tiny test model's add-ons are built in code in a
    moment, so they come in either mode. [] when the family cannot be told yet (a repo id not
    downloaded) or has no add-ons."""
    family = model_family(model)
    if family is None or (family != "tiny" and (mode or config.default_mode()) != "fast"):
        return []
    names = [fast_lora(family, "lcm"), tiny_autoencoder(family)]
    return [get_spec(n, "fast") for n in names if n]


def fast_supported(model: str) -> bool:
    """Whether fast mode has a few-step LoRA and a tiny autoencoder for `model`'s family. False
    for SD 2.x and architectures Backdrop cannot tell (also a repo id not downloaded yet)."""
    family = model_family(model)
    return fast_lora(family, "lcm") is not None and tiny_autoencoder(family) is not None


def run_needs(model: str, mode: str, lora: Optional[str] = None,
              scheduler: Optional[str] = None) -> list["ModelSpec"]:
    """Every model file an AI-background run with `model` in `mode` reads, present or not: the
    inpainting model and, in fast mode, its few-step LoRA (`lora`, else the family's own for
    `scheduler`) and tiny autoencoder. Raises InvalidOptionError for a name it does not know."""
    needed = [spec_for(model, "inpaint")]
    if mode != "fast":
        return needed
    family = model_family(model)
    for name in (lora or fast_lora(family, scheduler or "lcm"), tiny_autoencoder(family)):
        if name and (("fast", name) in REGISTRY):
            needed.append(get_spec(name, "fast"))
    return needed


def download_plan(name: str, task: str, addons_for: Optional[bool] = None,
                  mode: Optional[str] = None) -> list["ModelSpec"]:
    """What `models download NAME` fetches for `task`: the model, then (inpainting models) the
    add-ons its default mode needs on this machine (`addons`). `addons_for` False: the model
    alone; True: the fast add-ons whatever the default mode."""
    spec = spec_for(name, task)
    plan = [spec]
    if task == "inpaint" and addons_for is not False:
        plan += addons(name, "fast" if addons_for else mode)
    return plan


def starter_set(segmenter: Optional[str] = None, model: Optional[str] = None,
                mode: Optional[str] = None) -> list["ModelSpec"]:
    """What the app needs on this machine for an AI run: the segmenter (BACKDROP_SEGMENTER unless
    given; none for the built-in GrabCut), the inpainting model (BACKDROP_INPAINT_MODEL unless
    given) and the add-ons of `mode` (default: this machine's, see `addons`)."""
    seg = get_spec(segmenter or config.default_segmenter(), "segment")
    model = model or config.default_inpaint_model()
    chosen = ([] if seg.kind == "builtin" else [seg]) + [spec_for(model, "inpaint")]
    return chosen + addons(model, mode)


def specs(task: Optional[str] = None) -> list[ModelSpec]:
    return [s for (t, _), s in REGISTRY.items() if task in (None, t)]


def get_spec(name: str, task: str) -> ModelSpec:
    """The spec of `name` for `task` ("segment", "inpaint", "matte", "fast"); InvalidOptionError if unknown."""
    try:
        return REGISTRY[(task, name)]
    except KeyError:
        known = ", ".join(s.name for s in specs(task))
        raise InvalidOptionError(f"unknown {task} model {name!r}; known: {known}") from None


def spec_for(model: str, task: str) -> ModelSpec:
    """A spec for anything a user may name as a model: a registry name, an existing local diffusers
    folder (inpaint), or a Hugging Face repo id "owner/name" (inpaint; stored under
    weights/owner--name). InvalidOptionError otherwise."""
    if (task, model) in REGISTRY:
        return REGISTRY[(task, model)]
    if task == "inpaint":
        p = Path(model).expanduser()
        if p.is_dir():
            return ModelSpec(str(p), "local", task, f"local diffusers folder {p}", path=str(p.resolve()))
        if _REPO_ID.match(model):
            return ModelSpec(model, "diffusers", task, f"Hugging Face repo {model}",
                             repo_id=model, revision="main")
    return get_spec(model, task)  # raises the "unknown model; known: ..." error


def local_path(spec: ModelSpec) -> Path:
    """Where the model's file (or folder) lives under the weights dir."""
    if spec.kind == "sam":
        return config.weights_dir() / spec.filename
    if spec.kind == "tiny-sam":
        return config.weights_dir() / "sam_tiny.pth"
    if spec.kind == "tiny-diffusers":
        return config.weights_dir() / "tiny-inpainting"
    if spec.kind == "tiny-lora":
        return config.weights_dir() / "tiny-lcm-lora"
    if spec.kind == "tiny-vitmatte":
        return config.weights_dir() / "tiny-vitmatte"
    if spec.kind == "tiny-sam-hq":
        return config.weights_dir() / "tiny-sam-hq"
    if spec.kind == "tiny-birefnet":
        return config.weights_dir() / "tiny-birefnet"
    if spec.kind == "local":
        return Path(spec.path)
    if "/" in spec.name:  # an ad-hoc Hugging Face repo id
        return config.weights_dir() / spec.name.replace("/", "--")
    return config.weights_dir() / spec.name


def is_present(spec: ModelSpec) -> bool:
    """True when the model can be loaded from disk without any network access."""
    if spec.kind == "builtin":
        return True
    path = local_path(spec)
    if spec.kind in ("sam", "tiny-sam"):
        return path.is_file() and path.stat().st_size > 0
    if spec.kind in ("diffusers", "tiny-diffusers", "local"):
        return (path / "model_index.json").is_file()
    if spec.kind == "sam2":
        return (path / "config.json").is_file()
    if spec.kind in TRANSFORMERS_KINDS:
        return (path / "config.json").is_file() and any((path / f).is_file() for f in TRANSFORMERS_WEIGHTS)
    if spec.kind in ("lora", "tiny-lora", "birefnet", "tiny-birefnet"):
        return lora_file(spec).is_file() and lora_file(spec).stat().st_size > 0
    if spec.kind in ("taesd", "tiny-taesd"):
        return all((path / f).is_file() for f in TAESD_FILES)
    return path.exists()


def lora_file(spec: ModelSpec) -> Path:
    """The .safetensors file of a LoRA entry (kind "lora" / "tiny-lora")."""
    return local_path(spec) / (spec.filename or "pytorch_lora_weights.safetensors")


def _size_text(n: int) -> str:
    if not n:
        return "size unknown"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def missing_message(spec: ModelSpec) -> str:
    if spec.kind == "local":
        return f"model folder {local_path(spec)} has no model_index.json: not a diffusers pipeline folder"
    size = "built in code, no network" if spec.kind.startswith("tiny") else _size_text(spec.size_bytes)
    return (f"model {spec.name!r} is not downloaded: expected {local_path(spec)} "
            f"({size}); fetch it with `python -m core models download {spec.name}`")


def resolve(name: str, task: str) -> Path:
    """Path of a present model's file/folder, else MissingWeightsError naming file, size and fix.
    `name` may be anything `spec_for` accepts."""
    spec = spec_for(name, task)
    if not is_present(spec):
        raise MissingWeightsError(missing_message(spec))
    return local_path(spec)


# ---------------------------------------------------------------------------------------------
# models list


@dataclass(frozen=True)
class ModelInfo:
    """One row of `python -m core models list`."""
    name: str
    task: str
    kind: str
    description: str
    size_bytes: int
    present: bool
    path: Optional[Path]            # None for built-in models

    @property
    def size_text(self) -> str:
        return "-" if self.kind == "builtin" else (
            "built in code" if self.kind.startswith("tiny") else _size_text(self.size_bytes))


def list_models(task: Optional[str] = None) -> list[ModelInfo]:
    return [ModelInfo(s.name, s.task, s.kind, s.description, s.size_bytes, is_present(s),
                      None if s.kind == "builtin" else local_path(s)) for s in specs(task)]


# ---------------------------------------------------------------------------------------------
# downloads

OFFLINE = "can't reach the model host — offline?"


class HostUnreachableError(DownloadError):
    """The model host could not be reached (no network, DNS failure, connection refused, offline
    mode). str() is OFFLINE, then how to put the files in place by hand."""


def manual_install(spec: ModelSpec) -> str:
    """Where a model's files go when they are installed by hand, and where they come from."""
    path = local_path(spec)
    if spec.kind == "sam":
        return f"save {_sam_url(spec)} as {path}"
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


def _unreachable(e: BaseException) -> bool:
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


def _plain_reason(e: BaseException) -> str:
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



def _sam_url(spec: ModelSpec) -> str:
    """The SAM checkpoint URL; BACKDROP_SAM_URL_BASE replaces the official base (mirrors, tests)."""
    base = settings().sam_url_base
    if base:
        return base.rstrip("/") + "/" + spec.filename
    return spec.url


def _cancelled(cancel: Optional[CancelFn]) -> bool:
    if cancel is None:
        return False
    is_set = getattr(cancel, "is_set", None)
    return bool(is_set() if is_set is not None else cancel())


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def partial_path(dst: str | os.PathLike) -> Path:
    """Where download_file keeps the bytes of an unfinished download of `dst`: a hidden file beside
    dst's target (symlinks followed), `.<name>.backdrop.part`. Only download_file writes it."""
    target = resolve_target(dst)
    return target.with_name(f".{target.name}.backdrop.part")


def _open_partial(part: Path, what: str) -> BinaryIO:
    """Our partial file, opened read/write (created empty if absent) and locked against a second
    download of the same file. Refuses anything at that name that is not a regular file."""
    refuse = DownloadError(f"cannot download {what}: {short(part)} exists and is not a regular file; "
                           "move it away and try again")
    try:
        st = part.lstat()
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        raise refuse
    flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(part, flags, 0o666)
    except OSError as e:
        raise DownloadError(f"cannot download {what}: cannot open {short(part)}: {e.strerror}") from None
    f = os.fdopen(fd, "r+b")
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise refuse
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise DownloadError(f"{what} is already being downloaded (another session or "
                                    "process); wait for it to finish") from None
        if (os.stat(part).st_ino, os.stat(part).st_dev) != (os.fstat(fd).st_ino, os.fstat(fd).st_dev):
            raise DownloadError(f"another download of {what} finished meanwhile; try again")
    except BaseException:
        f.close()
        raise
    return f


def _content_range(value: Optional[str]) -> tuple[Optional[int], int]:
    """(first byte, full length) of a `Content-Range: bytes a-b/n` header; length 0 if `*`."""
    m = re.fullmatch(r"\s*bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)\s*", value or "")
    if m is None:
        return None, 0
    first = int(m.group(1)) if m.group(1) is not None else None
    return first, int(m.group(2)) if m.group(2) != "*" else 0


def _fetch(url: str, f: BinaryIO, h, have: int, *, progress, cancel, timeout: float, chunk: int,
           name: str):
    """Append the bytes after the first `have` of `url` to `f` (positioned at its end), updating
    `h`. Returns (have, total, h): total is the full length (0 when unknown); h is new when the
    server sent the whole file again."""
    headers = {"User-Agent": "backdrop"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:          # nothing after byte `have`: the partial is complete
            _, total = _content_range(e.headers.get("Content-Range"))
            e.close()
            return have, total, h
        raise
    with resp:
        length = int(resp.headers.get("Content-Length") or 0)
        if have and resp.status == 206:
            first, total = _content_range(resp.headers.get("Content-Range"))
            if first != have:
                raise DownloadError(f"the server resumed {name} at byte {first}, not {have}")
            total = total or (have + length if length else 0)
        else:                               # 200: the whole file (no partial, or no range support)
            if have:
                f.seek(0)
                f.truncate()
                h, have = hashlib.sha256(), 0
            total = length
        if progress:
            progress(have, total)
        while True:
            if _cancelled(cancel):
                raise CancelledError(f"download of {name} cancelled; {_mb(have)} kept to resume"
                                     if have else f"download of {name} cancelled")
            buf = resp.read1(chunk)
            if not buf:
                break
            f.write(buf)
            h.update(buf)
            have += len(buf)
            if progress:
                progress(have, total)
    return have, total, h


def download_file(url: str, dst: str | os.PathLike, *, sha256: Optional[str] = None,
                  size: Optional[int] = None, progress: Optional[ProgressFn] = None,
                  cancel: Optional[CancelFn] = None, timeout: float = 30.0,
                  chunk: int = 1 << 20) -> Path:
    """Stream `url` into `dst`, resumably and atomically.

    The bytes go to our partial file beside dst's target (`partial_path`). If one is there from an
    earlier try, it is resumed with `Range: bytes=N-`: a 206 is appended, a 200 (no range support)
    starts over, a 416 means nothing is missing. With every byte in, the whole file's length
    (Content-Length/Content-Range, and `size`) and SHA-256 (`sha256`) are checked, then it is
    fsynced and renamed over dst. An interrupted download keeps the partial for the next call; a
    checksum or size mismatch deletes it. `cancel` (threading.Event or callable returning bool) is
    checked between chunks and raises CancelledError; anything else raises DownloadError (one line).
    Nothing appears at dst until the file is complete and verified."""
    target = resolve_target(dst)       # a folder/device at dst: InvalidOptionError
    dst = Path(dst)
    what = f"{dst.name} ({_size_text(size or 0)}) from {url}"
    part = partial_path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _open_partial(part, what) as f:
        keep = True
        try:
            h = hashlib.sha256()
            while True:                # the bytes already there are part of the checksum
                if _cancelled(cancel):
                    raise CancelledError(f"download of {dst.name} cancelled")
                buf = f.read(chunk)
                if not buf:
                    break
                h.update(buf)
            have, total = f.tell(), 0
            if not (size and have >= size):
                try:
                    have, total, h = _fetch(url, f, h, have, progress=progress, cancel=cancel,
                                            timeout=timeout, chunk=chunk, name=dst.name)
                except urllib.error.HTTPError as e:
                    raise DownloadError(f"could not download {what}: HTTP {e.code} {e.reason}"
                                        + _kept(f.tell())) from None
                except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as e:
                    if _unreachable(e):
                        raise HostUnreachableError(f"{OFFLINE} {what}: to install it by hand, save "
                                                   f"it as {dst}" + _kept(f.tell())) from None
                    reason = getattr(e, "reason", None) or e
                    reason = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
                    raise DownloadError(f"could not download {what}: {short(reason, 120)} (to "
                                        f"install it by hand, save it as {dst})" + _kept(f.tell())) from None
            if size and total and total != size:
                keep = False
                raise DownloadError(f"the server's {dst.name} has {total} bytes, expected {size}: "
                                    "not the file asked for; the partial download was deleted")
            expected = size or total
            if expected and have < expected:
                raise DownloadError(f"download of {what} was interrupted: got {have} of {expected} "
                                    f"bytes" + _kept(have))
            if expected and have > expected:
                keep = False
                raise DownloadError(f"download of {what} has the wrong size: {have} bytes, expected "
                                    f"{expected}; the partial download was deleted")
            if sha256 and h.hexdigest() != sha256.lower():
                keep = False
                raise DownloadError(f"checksum mismatch for {what}: got sha256 {h.hexdigest()[:12]}…, "
                                    f"expected {sha256[:12]}…; the partial download was deleted")
            f.flush()
            os.fsync(f.fileno())
            existing = resolve_target(target)   # still not a folder/device that appeared meanwhile
            if existing.exists():               # replacing a file keeps its mode
                os.fchmod(f.fileno(), stat.S_IMODE(existing.stat().st_mode))
            os.replace(part, target)
        except BaseException:
            with contextlib.suppress(OSError):
                if not keep or os.fstat(f.fileno()).st_size == 0:
                    part.unlink()
            raise
    return dst


def _kept(n: int) -> str:
    return f"; {_mb(n)} kept, run again to resume" if n else ""


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
            if _cancelled(cancel):
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


def _download_repo(spec: ModelSpec, progress: Optional[ProgressFn],
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
        what = f"{spec.name} ({_size_text(spec.size_bytes)})"
        if _unreachable(e):
            log.info("download of %s: host unreachable: %s", spec.repo_id, e)
            raise HostUnreachableError(f"{OFFLINE} {what}: to install it by hand, "
                                       f"{manual_install(spec)}") from None
        log.warning("download of %s failed", spec.repo_id, exc_info=True)
        raise DownloadError(f"could not download {what} from {spec.repo_id}: {_plain_reason(e)} "
                            f"(to install it by hand, {manual_install(spec)})") from None
    # snapshot_download keeps its resume metadata in .cache/; the final folder doesn't need it
    shutil.rmtree(partial / ".cache", ignore_errors=True)
    blocker = in_the_way(spec, final)       # something appeared there during the download
    if blocker:
        raise DownloadError(blocker + " (the download is kept and used on the next try)")
    os.replace(partial, final)
    return final


def in_the_way(spec: ModelSpec, path: Path) -> Optional[str]:
    """One line when something that is not this model already sits where it goes (a file where
    a folder goes, a folder holding other files, a link): it may be the user's, so it is never
    deleted or overwritten; None when the place is free (or an empty folder, or the model's own
    single file, which a download checks and replaces)."""
    single = spec.kind in ("sam", "tiny-sam")
    if not os.path.lexists(path):
        return None
    if path.is_symlink():
        what = "a link"
    elif single:
        if path.is_file():
            return None
        what = "a folder" if path.is_dir() else "something that is not a file"
    elif not path.is_dir():
        what = "a file" if path.is_file() else "something that is not a folder"
    elif not any(path.iterdir()):
        return None
    else:
        what = "a folder that is not a complete copy of the model"
    return (f"cannot install {spec.name}: {path} is {what}; nothing was changed there — move it "
            "away (or finish installing the model there by hand) and try again")


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
    if spec.kind == "tiny-diffusers":
        return tiny.build_tiny_inpaint(path)
    if spec.kind == "tiny-sam":
        return tiny.build_tiny_sam(path)
    if spec.kind == "tiny-lora":
        return tiny.build_tiny_lora(path)
    if spec.kind == "tiny-taesd":
        return tiny.build_tiny_taesd(path)
    if spec.kind == "tiny-vitmatte":
        return tiny.build_tiny_vitmatte(path)
    if spec.kind == "tiny-sam-hq":
        return tiny.build_tiny_sam_hq(path)
    if spec.kind == "tiny-birefnet":
        from core.salient.tiny import build_tiny_birefnet
        return build_tiny_birefnet(path)
    if spec.kind == "sam":
        return download_file(url or _sam_url(spec), path, sha256=spec.sha256,
                             size=None if url else spec.size_bytes, progress=progress, cancel=cancel)
    if spec.kind in ("sam2", "sam-hq", "diffusers", "vitmatte", "lora", "taesd", "birefnet"):
        return _download_repo(spec, progress, cancel)
    raise InvalidOptionError(f"don't know how to download model {spec.name!r} (kind {spec.kind})")

