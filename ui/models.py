"""Models page helpers: the starter set for this machine, the table of known models, the compute
device, downloads in the background (one model or a set, with progress shown where it was asked
for), and the Editor's check that everything an AI run needs is on disk before Generate."""
from __future__ import annotations

import logging
from pathlib import Path
from collections.abc import MutableMapping
from typing import Any, Optional

import streamlit as st

from core import config, weights
from core.errors import BackdropError, InvalidOptionError, MissingWeightsError
from ui import resources, tasks
from ui import state as S
from ui.widgets import escape_md, size_text

log = logging.getLogger(__name__)

TASK_TITLES = {"segment": "Segmentation (finds the subject from your clicks)",
               "subject": "Find the subject (no clicks)",
               "inpaint": "Inpainting (paints the background)",
               "fast": "Fast mode add-ons (few-step LoRAs and tiny autoencoders for the inpainting models)",
               "matte": "Matting (the Editor's Soft edge: ViTMatte; Guided and Closed-form need no download)"}
TASKS = tuple(t for t in TASK_TITLES if t in weights.TASKS)


def visible_specs(task: str, state: MutableMapping) -> list:
    """Registry models for a task; the `tiny` test models (and the tiny fast add-ons) only when the
    tiny model is the current choice."""
    by_segmenter = task in ("segment", "subject")
    current = state.get("segmenter" if by_segmenter else "inpaint_model")
    env = config.default_segmenter() if by_segmenter else config.default_inpaint_model()
    tiny = "tiny" in (current, env)
    return [s for s in weights.specs(task) if not s.kind.startswith("tiny") or tiny]


def downloadable(spec) -> bool:
    """Whether the Models page offers a Download button (not built in, not built in code)."""
    return spec.kind != "builtin" and not spec.kind.startswith("tiny")


# "Find the subject" without downloaded weights: core.auto's studio method, in the subject table
# like GrabCut in the segmentation one (it is no registry model: nothing to download)
STUDIO_ROW = {"Model": "studio", "What it is": "No weights: products on a plain or gradient backdrop",
              "Download size": "none", "On this machine": "✓ ready", "File": "—"}


def model_rows(task: str, state: MutableMapping) -> list[dict[str, Any]]:
    rows = [dict(STUDIO_ROW)] if task == "subject" else []
    for spec in visible_specs(task, state):
        builtin = spec.kind == "builtin"
        present = resources.is_present(spec)
        rows.append({
            "Model": spec.name,
            "What it is": spec.description,
            "Download size": "none" if builtin else ("built in code" if spec.kind.startswith("tiny")
                                                     else size_text(spec.size_bytes)),
            "On this machine": "✓ ready" if present else "not downloaded",
            "File": "—" if builtin else file_name(weights.local_path(spec)),
        })
    return rows


def subject_lines() -> list[str]:
    """Under the subject table (Markdown): which method "Find the subject" (core.catalogue.
    auto_subject) uses on this machine now, and the licence; SUBJECT_DOWNLOAD follows."""
    from core import salient
    try:
        name = salient.available()
    except BackdropError as e:           # e.g. a BACKDROP_DEVICE this machine does not have
        log.warning("cannot tell which subject model is used: %s", e)
        name = None
    if name:
        used = (f"**Find the subject uses {name}** here (the Editor's button and batch --auto; "
                f"downloaded, on the {'GPU' if name == 'birefnet' else 'CPU'}).")
        if name == "birefnet-lite" and resources.is_present(weights.get_spec("birefnet", "subject")):
            used += " birefnet is downloaded too, but it is used only on a GPU."
    else:
        used = ("**Find the subject uses the studio method** here (the Editor's button and batch "
                "--auto): no BiRefNet model is downloaded. It is made for product shots on a plain or "
                "gradient backdrop; download birefnet-lite for any other photo (it is used as soon as "
                "it is on disk).")
    return [used,
            "Both BiRefNet models are MIT-licensed; Backdrop loads their weights into its own code "
            "(nothing from the model hub is run). From the command line:"]


SUBJECT_DOWNLOAD = "python -m core models download birefnet-lite"


def file_name(path) -> str:
    """A model's file or folder as the table shows it: its path inside the weights folder (the
    page names the folder once), so the column stays narrow; a path elsewhere in full."""
    try:
        return str(path.relative_to(config.weights_dir()))
    except ValueError:
        return str(path)


# Widths that fit the five columns side by side on a laptop; on a phone the table scrolls sideways
# with the model's name pinned at the left.
TABLE_COLUMNS = {
    "Model": st.column_config.TextColumn(width=110, pinned=True),
    "What it is": st.column_config.TextColumn(width="large"),
    "Download size": st.column_config.TextColumn(width=100),
    "On this machine": st.column_config.TextColumn(width=120),
    "File": st.column_config.TextColumn(width="medium"),
}


def inpaint_label(name: str, present: Optional[bool] = None) -> str:
    """Select-box label of an inpainting model, short enough for a phone: its name (a local
    folder's own name, a repo id as it is) and "(not downloaded)" when absent, unless `present`
    says what to show. What the model is goes under the box (`about`)."""
    try:
        spec = weights.spec_for(name, "inpaint")
    except Exception:  # not a model name (or a path that cannot be looked at): show it as it is
        log.warning("no model label for %r", name, exc_info=True)
        return name
    shown = Path(spec.name).name if spec.kind == "local" else spec.name
    ready = resources.is_present(spec) if present is None else present
    return shown + ("" if ready else " (not downloaded)")


def short_label(name: str) -> str:
    """A model as a select box shows it: its name only, so the box fits the sidebar and a phone
    (what the model is goes under the box: `about`)."""
    return "GrabCut" if name == "grabcut" else name


def about(name: str, task: str, present: Optional[bool] = None) -> str:
    """The line under a model's select box: what the model is and, when it is not on disk, that
    it needs a download (Markdown-safe); "" for a name Backdrop knows no model for."""
    try:
        spec = weights.spec_for(name, task)
    except BackdropError as e:
        log.info("no description for model %r: %s", name, e)
        return ""
    ready = resources.is_present(spec) if present is None else present
    return escape_md(spec.description + ("" if ready else " · not downloaded yet"))


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


def start_download(name: str, task_kind: str, where: str = "") -> tasks.Task:
    """Fetch one model in the background (see start_set_download)."""
    return start_set_download([weights.spec_for(name, task_kind)], name, where or task_kind)


def start_set_download(chosen: list, title: str, where: str) -> tasks.Task:
    """Fetch models one after the other in the background (weights.download_many: present ones
    skipped, each resumable); the task's fraction follows the bytes over the whole set, its stage
    names the model being fetched, and its cancel event stops between chunks (what was fetched is
    kept, the next try goes on from there). `where` says which panel shows its progress/outcome."""
    names = [s.name for s in chosen]

    def work(progress, cancel):
        current = {"name": names[0] if names else "", "fraction": 0.0}

        def on_item(i, spec):
            current["name"] = spec.name
            progress(spec.name, current["fraction"])

        def on_bytes(done: int, total: int) -> None:
            if total:
                current["fraction"] = done / total
            progress(current["name"], current["fraction"])

        return weights.download_many(chosen, progress=on_bytes, cancel=cancel, on_item=on_item)

    task = tasks.start("download", work, label=f"downloading {title}")
    task.specs, task.title, task.where = list(chosen), title, where
    task.model = (chosen[0].task, chosen[0].name) if len(chosen) == 1 else ("set", title)
    return task


# ----------------------------------------------------------------------------- starter set
def starter_specs(state: MutableMapping) -> list:
    """The starter set for this machine and session: the segmenter, the inpainting model and the
    add-ons of the session's mode (weights.starter_set)."""
    seg = state.get("segmenter") or config.default_segmenter()
    try:
        weights.get_spec(seg, "segment")
    except BackdropError:
        seg = None
    return weights.starter_set(seg, state.get("inpaint_model"), state.get("mode"))


NBSP = "\u00a0"           # keeps "4.3 GB" and "to download" on one line on a phone
ROLE = {"segment": "finds the subject", "subject": "finds the subject without clicks",
        "inpaint": "paints AI backgrounds",
        "fast": "Fast mode add-on", "matte": "soft edges"}


def set_lines(chosen: list) -> list[str]:
    """One Markdown line per model of a set (names escaped): whether it is on disk, its name, what
    it does here and its size. Lines, not a table, so nothing is cut on a phone."""
    lines = []
    for s in chosen:
        ready = resources.is_present(s)
        size = "built in code" if s.kind.startswith("tiny") else size_text(s.size_bytes)
        lines.append(f"{'✅' if ready else '⬇️'} **{escape_md(s.name)}** · {ROLE.get(s.task, s.task)} · "
                     f"{size.replace(' ', NBSP)} · {'ready' if ready else 'to' + NBSP + 'download'}")
    return lines


def download_size(chosen: list) -> str:
    """What fetching the models of `chosen` not on disk costs, in words: "4.6 GB", "built in code,
    quick" (only tiny test models), or "size unknown" (a repo id Backdrop has no size for)."""
    todo = [s for s in chosen if not resources.is_present(s)]
    real = [s for s in todo if not s.kind.startswith("tiny")]
    if not real:
        return "built in code, quick"
    total = sum(s.size_bytes for s in real)
    if not total:
        return "size unknown"
    return size_text(total) + ("" if all(s.size_bytes for s in real) else " and more")


# ----------------------------------------------------------------------------- download status
def _outcome(task: tasks.Task) -> dict[str, Any]:
    """What a finished download leaves on screen: level, one line, and (when the host could not
    be reached) where each missing model's files go by hand."""
    exc = task.future.exception() if task.done else None
    if exc is None:
        return {"where": task.where, "level": "success", "manual": [],
                "text": f"Downloaded {task.title}: ready."}
    manual = [(s.name, weights.manual_install(s)) for s in task.specs if not weights.is_present(s)]
    if task.cancelled:
        return {"where": task.where, "level": "info", "manual": [],
                "text": f"Download of {task.title} stopped. What was fetched is kept: download again "
                        "to go on from there."}
    if isinstance(exc, weights.HostUnreachableError):
        return {"where": task.where, "level": "error", "manual": manual,
                "text": weights.OFFLINE[0].upper() + weights.OFFLINE[1:]}
    why = str(exc) if isinstance(exc, BackdropError) else "something went wrong; see the server log"
    return {"where": task.where, "level": "error", "manual": manual,
            "text": f"Download of {task.title} failed: {why}"}


def download_status(state: MutableMapping, where: str, also: tuple = ()) -> None:
    """The progress of this session's download (with Cancel) and, once it ends, its outcome, drawn
    in the panel that started it (`where`, or one of `also`: a download started on the other
    page shows here too): redrawn every second while it runs, and the whole page
    once when it ends (so the ready marks and buttons follow)."""
    task = state.get("download")
    outcome = state.get("download_outcome")
    places = (where, *also)
    if getattr(task, "where", None) not in places and not (task is None and outcome and outcome["where"] in places):
        return

    @st.fragment(run_every=1.0 if tasks.running(task) else None)
    def panel() -> None:
        task = state.get("download")
        if task is not None and getattr(task, "where", where) in places:
            if task.done:
                state["download"] = None
                state["download_outcome"] = _outcome(task)
                st.rerun()
            n = len(task.specs)
            i = next((k for k, s in enumerate(task.specs) if s.name == task.stage), 0)
            which = f"{task.stage} ({i + 1} of {n})" if n > 1 and task.stage != "starting" else task.title
            st.progress(task.fraction, text=escape_md(f"Downloading {which}… {int(task.fraction * 100)}% · "
                                                      f"{task.elapsed:.0f} s"))
            st.button("Cancel download", key=f"cancel-dl-{where}", on_click=task.cancel.set,
                      disabled=task.cancel.is_set())
        outcome = state.get("download_outcome")
        if task is None and outcome and outcome["where"] in places:
            {"error": st.error, "info": st.info}.get(outcome["level"], st.success)(escape_md(outcome["text"]))
            if outcome["level"] == "success":
                state["download_outcome"] = None          # said once; errors stay while it matters
            if outcome["manual"]:
                with st.expander("Install the files by hand", expanded=outcome["text"].startswith("Can't")):
                    st.caption("Copy each model's files from a machine that is online into the folder "
                               "below (the README's Models section explains each one), then reload.")
                    for name, how in outcome["manual"]:
                        st.text(f"{name}: {how}")

    panel()


# ----------------------------------------------------------------------------- the Editor's check
def run_missing(state: MutableMapping) -> list:
    """The model files the Editor's AI run (model, mode, LoRA, sampler from session state) needs
    that are not on disk; [] when everything is there (or the model name is unknown: the run says)."""
    try:
        needed = weights.run_needs(state["inpaint_model"], state.get("mode") or "quality",
                                   state.get("lora"), state.get("scheduler"))
    except BackdropError as e:
        log.info("cannot tell what the run needs: %s", e)
        return []
    return [s for s in needed if not resources.is_present(s)]


def check_run_ready(spec) -> None:
    """Raise MissingWeightsError (one plain line) when an AI-background run of `spec` needs model
    files that are not on disk, so nothing starts (and nothing failed lands in History)."""
    gen = getattr(spec, "generation", None)
    if spec.background.kind != "sd" or gen is None:
        return
    try:
        missing = [s for s in weights.run_needs(gen.model, gen.mode, gen.lora, gen.scheduler)
                   if not resources.is_present(s)]
    except BackdropError:
        return                     # the run reports an unknown model itself
    if missing:
        raise MissingWeightsError(f"this run needs {_names(missing)}, not downloaded yet: get them "
                                  "in the Editor or on the Models page, or run in Quality")
    if gen.mode == "fast" and gen.lora is None and not weights.fast_supported(gen.model):
        raise InvalidOptionError(f"fast mode has no add-ons for {gen.model}: run it in Quality")


def _names(chosen: list) -> str:
    names = [s.name for s in chosen]
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def _what(missing: list, state: MutableMapping) -> str:
    """"sd15-inpainting (paints the background) and lcm-sd15 and taesd (Fast mode's add-ons)"."""
    model = [s for s in missing if s.task == "inpaint"]
    extra = [s for s in missing if s.task != "inpaint"]
    mode = S.MODE_LABELS.get(state.get("mode"), "this")
    parts = ([f"{model[0].name} (paints the background)"] if model else []) + (
        [f"{_names(extra)} ({mode} mode's add-on{'s' if len(extra) > 1 else ''})"] if extra else [])
    return " and ".join(parts)


def fast_fits(state: MutableMapping) -> bool:
    """False when the session asks for fast mode (with no LoRA of its own) on a model whose
    family has no fast add-ons (SD 2.x, an architecture Backdrop cannot tell)."""
    if state.get("mode") != "fast" or state.get("lora"):
        return True
    try:
        return weights.fast_supported(state["inpaint_model"])
    except BackdropError:
        return True                # an unknown model: the run says so itself


OTHER_PLACES = ("starter", *TASKS)     # the Models page's panels


def needs_panel(state: MutableMapping) -> bool:
    """Before Generate: whether everything the AI run needs is on disk. When not, say what is
    missing (size) and offer the fix in place: download the parts (progress here), or run in
    Quality when that needs nothing more. Returns True when the run can start."""
    running_here = state.get("download") is not None    # any download (this page's or the Models page's)
    missing = run_missing(state)
    if not missing and not fast_fits(state):
        st.warning(escape_md(f"Fast mode has no add-ons for {state['inpaint_model']}: run it in Quality."))
        st.button("Run in Quality instead", key="run-quality", width="stretch",
                  on_click=S.apply_mode, args=(state, "quality"))
        return False
    if missing or running_here:
        with st.container(border=True):
            if missing and getattr(state.get("download"), "where", "") != "editor":   # not already getting them
                local = [s for s in missing if s.kind == "local"]
                if local:
                    st.warning(escape_md(weights.missing_message(local[0])))
                else:
                    size = download_size(missing)
                    st.warning(escape_md(f"Before you generate, get {_what(missing, state)}: {size}."))
                    # stacked, full width: the Editor's control column is narrow on a laptop too
                    if st.button(f"Download {'it' if len(missing) == 1 else 'them'} ({size})",
                                 key="get-run-needs", type="primary", width="stretch",
                                 disabled=tasks.running(state.get("download"))):
                        state["download"] = start_set_download(missing, _names(missing), "editor")
                        state["download_outcome"] = None
                        st.rerun()
                    quality_ok = state.get("mode") == "fast" and all(
                        resources.is_present(s) for s in weights.run_needs(state["inpaint_model"], "quality"))
                    if quality_ok:
                        st.button("Run in Quality instead", key="run-quality", width="stretch",
                                  on_click=S.apply_mode, args=(state, "quality"),
                                  help="The full model, 30 steps: no add-ons needed, slower on a CPU.")
                    st.caption("Or pick Colour, Blur, Image or Transparent: they need no download.")
            download_status(state, "editor", OTHER_PLACES)
    else:
        outcome = state.get("download_outcome")
        if outcome and outcome["where"] in ("editor", *OTHER_PLACES):
            download_status(state, "editor", OTHER_PLACES)
    return not missing
