"""Models page helpers: the table of known models, the compute device, downloads in the background."""
from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any

import streamlit as st

from core import config, weights
from ui import resources, tasks
from ui.widgets import size_text

log = logging.getLogger(__name__)

TASK_TITLES = {"segment": "Segmentation (finds the subject)", "inpaint": "Inpainting (paints the background)",
               "fast": "Fast mode add-ons (few-step LoRAs and tiny autoencoders for the inpainting models)",
               "matte": "Matting (the Editor's Soft edge: ViTMatte; Guided and Closed-form need no download)"}
TASKS = tuple(t for t in TASK_TITLES if t in weights.TASKS)


def visible_specs(task: str, state: MutableMapping) -> list:
    """Registry models for a task; the `tiny` test models (and the tiny fast add-ons) only when the
    tiny model is the current choice."""
    current = state.get("segmenter" if task == "segment" else "inpaint_model")
    env = config.default_segmenter() if task == "segment" else config.default_inpaint_model()
    tiny = "tiny" in (current, env)
    return [s for s in weights.specs(task) if not s.kind.startswith("tiny") or tiny]


def downloadable(spec) -> bool:
    """Whether the Models page offers a Download button (not built in, not built in code)."""
    return spec.kind != "builtin" and not spec.kind.startswith("tiny")


def model_rows(task: str, state: MutableMapping) -> list[dict[str, Any]]:
    rows = []
    for spec in visible_specs(task, state):
        builtin = spec.kind == "builtin"
        present = resources.is_present(spec)
        rows.append({
            "Model": spec.name,
            "What it is": spec.description,
            "Download size": "none" if builtin else ("built in code" if spec.kind.startswith("tiny")
                                                     else size_text(spec.size_bytes)),
            "On this machine": "✓ ready" if present else "not downloaded",
            "Local path": "—" if builtin else str(weights.local_path(spec)),
        })
    return rows


def inpaint_label(name: str) -> str:
    """Select-box label of an inpainting model: registry name + description, or the folder/repo id."""
    from ui.widgets import model_label
    try:
        spec = weights.spec_for(name, "inpaint")
    except Exception:  # not a model name (or a path that cannot be looked at): show it as it is
        log.warning("no model label for %r", name, exc_info=True)
        return name
    return model_label(spec, resources.is_present(spec))


def inpaint_missing_note(name: str):
    """One line when the inpainting model's files are not on disk (with how to get them), else None."""
    try:
        spec = weights.spec_for(name, "inpaint")
    except Exception as e:  # unknown name: the job will say so too
        log.warning("inpainting model %r: %s", name, e, exc_info=True)
        return str(e)
    if resources.is_present(spec):
        return None
    return (weights.missing_message(spec) + ". Or choose Colour, Blur, Image or Transparent, "
            "which need no download.")


@st.cache_resource(show_spinner=False)
def device_info() -> dict[str, Any]:
    """What the models run on (core.devices.pick: CUDA, Apple MPS or CPU, or BACKDROP_DEVICE)."""
    from core import devices
    from core.errors import BackdropError

    try:
        device = devices.pick()
    except BackdropError as e:         # a BACKDROP_DEVICE this machine does not have
        log.warning("device choice: %s", e)
        return {"device": "CPU", "detail": str(e), "fp16": False}
    if device.startswith("cuda"):
        import torch
        mem = torch.cuda.get_device_properties(device).total_memory
        return {"device": "GPU", "detail": f"{devices.name(device)}, {mem / 2**30:.0f} GiB", "fp16": True}
    if device == "mps":
        return {"device": "GPU", "detail": "Apple silicon (MPS); models run in fp32", "fp16": False}
    import torch
    return {"device": "CPU", "detail": f"{torch.get_num_threads()} threads; no GPU found", "fp16": False}


def start_download(name: str, task_kind: str) -> tasks.Task:
    """Fetch a model in the background; the task's fraction follows the bytes received, and the
    task's cancel event stops the download between chunks (what it got is kept to resume)."""

    def work(progress, cancel):
        def on_bytes(done: int, total: int) -> None:
            if total:
                progress("download", done / total)

        return weights.download(name, task_kind, progress=on_bytes, cancel=cancel)

    task = tasks.start("download", work, label=f"downloading {name}")
    task.model = (task_kind, name)
    return task
