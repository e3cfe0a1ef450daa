"""The run: the background photo upload, the job request built from the editor's state, starting
it in the background (Generate, or "Re-run" from History), its progress, and collecting its outputs
(ui.result shows them in the photo area, with the downloads).

`job_request` is the one place that turns session state into a core.jobs.JobRequest.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import MutableMapping
from pathlib import Path
from typing import Any, Optional

import streamlit as st

from core import config
from core.errors import BackdropError
from ui import prompts, tasks
from ui import state as S
from ui.widgets import display_image, escape_md, one_line

log = logging.getLogger(__name__)

BG_PREVIEW_SIDE = 320        # the background photo's thumbnail kept in session state
LIVE_REFRESH_S = 0.5         # how often the progress bar and the live picture are redrawn
LIVE_WIDTH = 320
STAGE_TEXT = {"starting": "Starting", "mask": "Cutting out the subject", "edge": "Refining the edge",
              "load model": "Loading the model",
              "diffusion": "Painting the background", "compose": "Putting the subject back",
              "done": "Saving"}


# ----------------------------------------------------------------------------- background photo
def store_background_image(state: MutableMapping, data: bytes, name: Optional[str] = None) -> None:
    """Read an uploaded background photo through core.images.load_image (format allow-list, pixel
    cap, colour conversion to RGB) and keep the decoded RGB as a PNG under the data dir, in a
    folder named by its content hash and under its own file name (History titles the run with
    it; ui.background.background_path), for the job. Raises ImageError (one line) and stores
    nothing when refused."""
    from core.images import load_image, save_image
    from ui.background import background_path

    image = load_image(data, name=name)
    path = background_path(config.data_dir() / "backgrounds", image.hash, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        save_image(image.rgb, path)
    state["bg_image"] = display_image(image.rgb, BG_PREVIEW_SIDE)    # only the small preview is kept
    state["bg_image_path"] = str(path)


def take_background_upload(state: MutableMapping, uploaded: Any) -> Optional[str]:
    """Store what sits in the background uploader (a Streamlit UploadedFile or None), once per
    file. Returns the one-line error to show when the file just read could not be used."""
    if uploaded is None or uploaded.file_id == state.get("bg_upload_id"):
        return None
    state["bg_upload_id"] = uploaded.file_id
    try:
        store_background_image(state, uploaded.getvalue(), uploaded.name)
    except BackdropError as e:
        log.info("background photo %r not used: %s", uploaded.name, e)
        return one_line(e, "reading the background photo")
    except Exception as e:
        log.exception("reading the background photo %r failed", uploaded.name)
        return one_line(e, "reading the background photo")
    return None


# ----------------------------------------------------------------------------- request
def job_request(state: MutableMapping, segmenter_name: str):
    """The core.jobs.JobRequest for the current photo, prompts, mask options and background and
    generation widgets; `segmenter_name` is the segmenter in use (the app may have fallen back to
    GrabCut). Raises InvalidOptionError (one line) when something is missing or out of range."""
    from core.errors import InvalidOptionError
    from core.jobs import JobRequest

    if state.get("photo") is None:
        raise InvalidOptionError("load a photo first (upload one or pick a sample)")
    if not prompts.has_subject(state):
        raise InvalidOptionError("click on the subject first so Backdrop knows what to keep")
    return JobRequest(image=state["photo"], spec=S.spec_from_state(state, segmenter_name),
                      source_name=state.get("photo_name", ""))


# ----------------------------------------------------------------------------- ViTMatte fallback
VITMATTE_FALLBACK = ("ViTMatte weights are not installed — used the fast Guided matting; get them on the "
                     "Models page.")


def vitmatte_available() -> bool:
    """Whether ViTMatte's weights are on disk (core.vitmatte.available; no download, no load).
    False when that module cannot be imported (transformers missing) or cannot tell."""
    try:
        from core import vitmatte
    except ImportError:
        return False
    try:
        return bool(vitmatte.available())
    except Exception:  # a broken install must not stop the editor: it falls back
        log.warning("could not tell whether the ViTMatte weights are present", exc_info=True)
        return False


def with_available_edge(spec) -> tuple[Any, Optional[str]]:
    """The spec to run and the one-line notice to show: a ViTMatte edge without its weights runs
    with the Guided method (and is recorded so); anything else runs as asked."""
    from core.spec import MaskOptions

    if spec.mask.edge_method != "vitmatte" or vitmatte_available():
        return spec, None
    mask = MaskOptions(**{**spec.mask.model_dump(), "edge": "matte:guided"})
    return spec.model_copy(update={"mask": mask}), VITMATTE_FALLBACK


# ----------------------------------------------------------------------------- start, collect
def start_generation(state: MutableMapping, segmenter_name: str) -> tasks.Task:
    """Validate the widgets, then run the job in the background (raises BackdropError on bad input).

    The worker also makes the browser-sized previews of the outputs, so later reruns only send
    cached bytes. The task is kept under the page's session id (ui.saved): a reload of the page
    gets its progress and Cancel back, and History finds it by its run id.
    """
    from core.engine import CAN_CANCEL, CAN_LOCAL_MODELS, get_engine
    from core.images import encode_jpeg

    engine = get_engine()
    request = job_request(state, segmenter_name)
    notice = None
    if engine.can(CAN_LOCAL_MODELS):     # (the service applies its own model and edge fallbacks)
        from ui.models import check_run_ready
        check_run_ready(request.spec)    # models missing: say so, start nothing (History stays clean)
        spec, notice = with_available_edge(request.spec)
        if notice:
            request = dataclasses.replace(request, spec=spec)
    state["run_notice"] = notice
    live: dict[str, bytes] = {}          # the latest picture of the painting, for the page

    def show(rgb) -> None:               # worker thread: keep JPEG bytes only, never call Streamlit
        live["jpeg"] = encode_jpeg(rgb, quality=80)

    task = tasks.Task(kind="generate", label=engine.label)
    task.run_history = engine.history_id
    task.remote = not engine.can(CAN_CANCEL)     # one request: no steps to count, no Cancel
    original = engine.kept_upload(state, request.image.hash)    # the file as uploaded, if kept

    def started(run_id: int) -> None:    # worker thread: History finds the run's progress by this
        task.run_id = run_id

    def work(progress, cancel):
        job = engine.run(request, progress=progress, cancel=cancel, preview=show, started=started,
                         original=original)
        return {"job": job, "original": display_image(request.image.rgb),
                "previews": [display_image(o) for o in job.outputs]}

    task.request = request
    task.live = live
    tasks.submit(task, work)
    state["job"] = task
    return _kept(state, task)


def _kept(state: MutableMapping, task: tasks.Task) -> tasks.Task:
    from ui import saved

    session = state.get(saved.ID_KEY)
    if session:
        tasks.keep(session, task)
    return task


def start_if_asked(state: MutableMapping, clicked: bool, segmenter_name: str) -> Optional[str]:
    """Start a generation when Generate was clicked or History asked for a re-run (state
    "autorun", honoured once, unless a job is already running). Returns the one-line error to
    show when it could not start."""
    if state.get("autorun"):
        state["autorun"] = False
        clicked = not tasks.running(state.get("job"))
    if not clicked:
        return None
    state["job_notice"] = None
    state["run_notice"] = None
    try:
        start_generation(state, segmenter_name)
    except BackdropError as e:
        log.info("run not started: %s", e)
        return one_line(e, "starting the run")
    except Exception as e:
        log.exception("starting the run failed")
        return one_line(e, "starting the run")
    return None


def collect_result(state: MutableMapping) -> Optional[tasks.Task]:
    """When the job has finished: move its outputs into state["result"]; return the finished task."""
    task = state.get("job")
    if task is None or not task.done:
        return None
    state["job"] = None
    if task.result is not None:
        r = task.result["job"]
        state["result"] = {"run_id": r.run_id, "outputs": r.outputs, "seeds": r.seeds,
                           "timings": r.timings, "original": task.result["original"],
                           "previews": task.result["previews"],
                           "name": Path(task.request.source_name or "photo").stem,
                           "background": str(task.request.spec.background),
                           "remote": bool(getattr(task, "remote", False)),
                           "photo": task.request.image.hash}      # shown on this photo only (ui.result)
        if r.record_error:   # the outputs are fine and downloadable; only the history failed
            state["job_notice"] = ("warning", f"Done in {task.elapsed:.1f} s, but the run is not in "
                                   f"History: {r.record_error}. Download it next to the photo.")
        else:
            state["job_notice"] = ("success", f"Done in {task.elapsed:.1f} s"
                                   + (f" — saved to History as run #{r.run_id}." if r.run_id else "."))
    elif task.cancelled:
        state["job_notice"] = ("warning", "Cancelled: " + (task.error or "the run was stopped."))
    else:
        state["job_notice"] = ("error", task.error or "The run failed.")
    return task


def progress_text(task: tasks.Task) -> str:
    if getattr(task, "remote", False):    # one request: no steps to count
        return f"Working on the server… {task.elapsed:.0f} s"
    stage = STAGE_TEXT.get(task.stage) or task.stage[:1].upper() + task.stage[1:]   # keeps "CPU"
    return f"{stage}… {int(task.fraction * 100)}% · {task.elapsed:.0f} s"


# ----------------------------------------------------------------------------- panels
def job_panel(state: MutableMapping) -> None:
    """While a job runs: its progress bar, the picture forming and Cancel, redrawn twice a second;
    when it ends, its one-line outcome (kept until the next run)."""

    @st.fragment(run_every=LIVE_REFRESH_S if tasks.running(state["job"]) else None)
    def progress() -> None:
        task = state.get("job")
        if task is None:
            return
        if task.done:
            collect_result(state)
            st.rerun()
        if getattr(task, "remote", False):
            st.info(progress_text(task), icon=":material/cloud_sync:")
            return      # a run on the service cannot be stopped from here: no Cancel
        st.progress(task.fraction, text=progress_text(task))
        picture = getattr(task, "live", {}).get("jpeg")
        if picture is not None:     # the background forming, as the model paints it
            st.image(picture, caption="Painting…", width=LIVE_WIDTH)
        st.button("Cancel", key="cancel", on_click=task.cancel.set, disabled=task.cancel.is_set(),
                  help="Stops after the current step.")

    progress()
    if state.get("run_notice"):
        st.info(escape_md(state["run_notice"]))
    if state.get("job_notice") and not tasks.running(state["job"]):
        level, text = state["job_notice"]
        {"error": st.error, "warning": st.warning}.get(level, st.success)(escape_md(text))

