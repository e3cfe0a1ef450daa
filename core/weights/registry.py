"""The registry table: every model Backdrop knows (ModelSpec rows), where each one lives under the
weights dir, whether it is present, and the lookups built on the table (families, fast-mode
add-ons, what a run needs, `models list`). See core/weights/__init__.py."""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from core import config
from core.errors import InvalidOptionError, MissingWeightsError

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
# where the models built in code live under the weights dir, by kind (tiny-taesd: its name)
TINY_PLACES = {"tiny-sam": "sam_tiny.pth", "tiny-diffusers": "tiny-inpainting",
               "tiny-lora": "tiny-lcm-lora", "tiny-vitmatte": "tiny-vitmatte",
               "tiny-sam-hq": "tiny-sam-hq", "tiny-birefnet": "tiny-birefnet"}

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
    if spec.kind in TINY_PLACES:
        return config.weights_dir() / TINY_PLACES[spec.kind]
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


def size_text(n: int) -> str:
    if not n:
        return "size unknown"
    return f"{n / 1e9:.2f} GB" if n >= 1e9 else f"{n / 1e6:.1f} MB"


def missing_message(spec: ModelSpec) -> str:
    if spec.kind == "local":
        return f"model folder {local_path(spec)} has no model_index.json: not a diffusers pipeline folder"
    size = "built in code, no network" if spec.kind.startswith("tiny") else size_text(spec.size_bytes)
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
            "built in code" if self.kind.startswith("tiny") else size_text(self.size_bytes))


def list_models(task: Optional[str] = None) -> list[ModelInfo]:
    return [ModelInfo(s.name, s.task, s.kind, s.description, s.size_bytes, is_present(s),
                      None if s.kind == "builtin" else local_path(s)) for s in specs(task)]


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
