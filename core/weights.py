"""The one registry of model files: what each model is, where it lives locally, how to get it.

Local layout under `config.weights_dir()` (BACKDROP_WEIGHTS_DIR, default ./weights):
  single-file checkpoints (SAM)        -> weights/<filename>
  repositories (diffusers, SAM 2.1)    -> weights/<name>/   (a snapshot folder)
  `tiny` test models                   -> built in code, random-initialised, never downloaded
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from core import config
from core.errors import InvalidOptionError, MissingWeightsError


@dataclass(frozen=True)
class ModelSpec:
    name: str                       # registry key used on the command line and in the app
    kind: str                       # "sam" | "sam2" | "diffusers" | "tiny-sam" | "tiny-diffusers"
    task: str                       # "segment" | "inpaint"
    description: str
    size_bytes: int = 0             # approximate download size
    filename: Optional[str] = None  # single-file checkpoint name (kind "sam")
    url: Optional[str] = None       # direct download URL (kind "sam")
    sha256: Optional[str] = None    # of the single file
    repo_id: Optional[str] = None   # Hugging Face repo (kinds "sam2", "diffusers")
    revision: Optional[str] = None  # pinned revision for repos ("main" if unknown)
    sam_type: Optional[str] = None  # key in segment_anything.sam_model_registry


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
        ModelSpec("grabcut", "builtin", "segment", "OpenCV GrabCut: quick fallback, no weights needed"),
        ModelSpec("tiny", "tiny-sam", "segment", "Random-initialised small SAM for tests (built in code)"),
        ModelSpec("sd15-inpainting", "diffusers", "inpaint", "Stable Diffusion 1.5 inpainting",
                  4_270_000_000, repo_id="stable-diffusion-v1-5/stable-diffusion-inpainting",
                  revision="main"),
        ModelSpec("sdxl-inpainting", "diffusers", "inpaint", "Stable Diffusion XL 1.0 inpainting",
                  13_900_000_000, repo_id="diffusers/stable-diffusion-xl-1.0-inpainting-0.1",
                  revision="main"),
        ModelSpec("tiny", "tiny-diffusers", "inpaint",
                  "Random-initialised tiny SD inpainting for tests (built in code)"),
    ]
}


def specs(task: Optional[str] = None) -> list[ModelSpec]:
    return [s for (t, _), s in REGISTRY.items() if task in (None, t)]


def get_spec(name: str, task: str) -> ModelSpec:
    """The spec of `name` for `task` ("segment" or "inpaint"); InvalidOptionError if unknown."""
    try:
        return REGISTRY[(task, name)]
    except KeyError:
        known = ", ".join(s.name for s in specs(task))
        raise InvalidOptionError(f"unknown {task} model {name!r}; known: {known}") from None


def local_path(spec: ModelSpec) -> Path:
    """Where the model's file (or folder) lives under the weights dir."""
    if spec.kind == "sam":
        return config.weights_dir() / spec.filename
    if spec.kind == "tiny-sam":
        return config.weights_dir() / "sam_tiny.pth"
    if spec.kind == "tiny-diffusers":
        return config.weights_dir() / "tiny-inpainting"
    return config.weights_dir() / spec.name


def missing_message(spec: ModelSpec) -> str:
    size = f"{spec.size_bytes / 1e9:.2f} GB" if spec.size_bytes else "size unknown"
    return (f"model {spec.name!r} is not downloaded: expected {local_path(spec)} ({size}); "
            f"fetch it with `python -m core models download {spec.name}`")


def resolve(name: str, task: str) -> Path:
    """Path of a present model's file/folder, else MissingWeightsError naming file, size and fix."""
    spec = get_spec(name, task)
    path = local_path(spec)
    if not path.exists():
        raise MissingWeightsError(missing_message(spec))
    return path
