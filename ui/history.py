"""History page helpers: queries from the filter widgets, the compare table, export, and loading a
past run back into the Editor. The store itself is core.history (via ui.resources.store()).

In client mode (BACKDROP_SERVER_URL set: core.engine.remote) runs are made and recorded by the service,
and this page still reads the history database directly: it assumes the team setup, where the app
servers and the service share one history (the same BACKDROP_DATABASE_URL and BACKDROP_BLOB_URL
everywhere). An app with a database of its own does not list the service's runs (GET /v1/runs does)."""
from __future__ import annotations

import io
import logging
import re
import tempfile
from collections.abc import MutableMapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from core import config
from core.errors import BackdropError, HistoryError
from ui import state as S

log = logging.getLogger(__name__)

ALL = "All"
ALL_RUNS = ""          # the Batch filter's "All runs" (no batch is named ""; any name may be "All")
KIND_LABELS = {"sd": "AI scene", "color": "Colour", "blur": "Blur", "image": "Image",
               "transparent": "Transparent"}
# Row labels of the parameter tables; a spec key not listed here ("mask.min_area") is labelled
# from its name ("Mask · min area"), so a new spec field shows up without an edit here.
PARAM_LABELS = {
    "source": "Photo", "subject.segmenter": "Segmentation model",
    "subject.clicks": "Clicks", "subject.box": "Box", "subject.candidate": "Mask candidate",
    "background": "Background", "generation.prompt": "Prompt",
    "generation.negative": "Negative prompt", "generation.model": "Inpainting model",
    "device": "Device", "status": "Status", "output_seeds": "Output seeds",
}
STATUS_LABELS = {"succeeded": "Done", "failed": "Failed", "cancelled": "Cancelled", "running": "Running"}
# A photo uploaded as a background before it was stored under its own name (ui/job.py) is named
# by its content hash: such a name says nothing to a person.
_HASH_NAME = re.compile(r"^[0-9a-f]{32,64}$")


def param_label(key: str) -> str:
    if key in PARAM_LABELS:
        return PARAM_LABELS[key]
    part, _, name = key.rpartition(".")
    name = name.replace("_", " ")
    return f"{part.capitalize()} · {name}" if part == "mask" else name.capitalize()


def params_table(run) -> dict[str, str]:
    """{label: text} of everything that made the run, for the detail view: human values (no
    hashes, no server paths, no JSON)."""
    params = {param_label(k): human_value(k, v, run) for k, v in run.params().items()}
    params["Timings"] = " · ".join(f"{k} {v:.2f} s" for k, v in (run.timings or {}).items()) or "—"
    return params


def image_name(path: Optional[str]) -> str:
    """The file name of a background photo, never its folder (a server path); a photo stored
    under its content hash is "uploaded photo"."""
    name = Path(str(path or "")).name
    if not name or _HASH_NAME.match(Path(name).stem):
        return "uploaded photo"
    return name


def background_text(bg) -> str:
    """A background (core.spec.Background or its text) for a person: "Colour #00ff00",
    "Blur 25 px", "Image · beach.png", "Transparent", "AI scene"."""
    from core.spec import Background
    try:
        bg = Background.parse(bg)
    except Exception:              # a value this version cannot read: shown without its path
        return image_name(str(bg)) if "/" in str(bg) else str(bg)
    kind = KIND_LABELS.get(bg.kind, bg.kind)
    if bg.kind == "color":
        return f"{kind} " + "#%02x%02x%02x" % tuple(int(v) for v in bg.color)
    if bg.kind == "blur":
        return f"{kind} {bg.radius:g} px"
    if bg.kind == "image":
        return f"{kind} · {image_name(bg.path)}"
    return kind


def _num(v: Any) -> str:
    return f"{v:g}" if isinstance(v, float) else str(v)


def human_value(key: str, value: Any, run=None) -> str:
    """One parameter's value as a person reads it (plain text: shown in a dataframe)."""
    if key == "source":
        if run is None:
            return "—"
        name = run.source_name or "photo"
        return f"{name} ({run.source.width}×{run.source.height})"
    if key == "background":
        return background_text(value)
    if key == "status":
        return STATUS_LABELS.get(value, str(value))
    if value is None:
        return "—"
    if key == "subject.clicks":
        marks = [(c.get("x"), c.get("y"), c.get("label")) if isinstance(c, dict) else tuple(c)
                 for c in value]
        if not marks:
            return "—"
        adds = sum(1 for m in marks if len(m) < 3 or m[2] == 1)
        head = f"{adds} add, {len(marks) - adds} remove"
        return head + ": " + ", ".join(f"({round(m[0])}, {round(m[1])}) {'+' if len(m) < 3 or m[2] == 1 else '−'}"
                                       for m in marks[:6]) + (" …" if len(marks) > 6 else "")
    if key == "subject.box":
        x1, y1, x2, y2 = (round(v) for v in value)
        return f"({x1}, {y1}) – ({x2}, {y2})"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (list, tuple)):
        return ", ".join("—" if v is None else _num(v) for v in value) or "—"
    if isinstance(value, dict):
        return ", ".join(f"{k} {_num(v)}" for k, v in value.items()) or "—"
    if isinstance(value, str) and (value.startswith(("/", "~")) or re.match(r"^[A-Za-z]:[\\/]", value)):
        return Path(value).name or value          # a local path (a model folder): its name only
    return _num(value)


def query(state: MutableMapping):
    """The RunQuery for the filter widgets."""
    from core.history import RunQuery

    model = state.get("hist_model")
    kind = state.get("hist_kind")
    return RunQuery(text=str(state.get("hist_search") or "").strip(),
                    favorites=bool(state.get("hist_favourites")),
                    model=None if model in (None, ALL) else model,
                    background_kind=None if kind in (None, ALL) else kind,
                    batch=state.get("hist_batch") or None)


def batch_choices(batches) -> tuple[list[str], Any]:
    """The Batch filter's options (ALL_RUNS first, then each batch name, the most recent batch
    first) and the function that labels them: "All runs", "shots · 12 runs" (plain text: a select
    box never renders Markdown). `batches`: store.batches(), [(name, number of runs)]."""
    counts = dict(batches)

    def label(name: str) -> str:
        if name == ALL_RUNS:
            return "All runs"
        n = counts.get(name, 0)
        return f"{name} · {n} run{'' if n == 1 else 's'}"

    return [ALL_RUNS, *counts], label


def filters_label(state: MutableMapping) -> str:
    """The label of the folded filters, saying which are on so a person sees them without
    unfolding: "Search and filters · “beach” · ★ favourites only · model tiny" (Markdown-safe)."""
    from ui.widgets import escape_md

    on = []
    text = " ".join(str(state.get("hist_search") or "").split())
    if text:
        on.append("“" + (text if len(text) <= 30 else text[:29] + "…") + "”")
    if state.get("hist_favourites"):
        on.append("★ favourites only")
    if state.get("hist_model") not in (None, ALL):
        on.append(f"model {state['hist_model']}")
    if state.get("hist_kind") not in (None, ALL):
        on.append(KIND_LABELS.get(state["hist_kind"], str(state["hist_kind"])))
    if state.get("hist_batch"):
        batch = str(state["hist_batch"])
        on.append("batch " + (batch if len(batch) <= 30 else batch[:29] + "…"))
    return "Search and filters" + (" · " + escape_md(" · ".join(on)) if on else "")


def filters_key(state: MutableMapping) -> tuple:
    return (state.get("hist_search"), state.get("hist_favourites"), state.get("hist_model"),
            state.get("hist_kind"), state.get("hist_batch"), state.get("hist_page_size"))


def page_of_runs(store, state: MutableMapping):
    """(runs on this page, total matching, number of pages); paging is done in SQL."""
    if state.get("hist_filters") != filters_key(state):     # new filters: back to page 1
        state["hist_filters"] = filters_key(state)
        state["hist_page"] = 0
    q = query(state)
    size = int(state.get("hist_page_size") or 12)
    total = store.count_runs(q)
    pages = max(1, -(-total // size))
    page = min(max(int(state.get("hist_page") or 0), 0), pages - 1)
    state["hist_page"] = page
    runs = store.list_runs(q, limit=size, offset=page * size).runs
    return runs, total, pages


def local_time(dt: Optional[datetime], tz_name: Optional[str] = None) -> str:
    if dt is None:
        return "—"
    if tz_name:
        try:
            from zoneinfo import ZoneInfo
            return dt.astimezone(ZoneInfo(tz_name)).strftime("%Y-%m-%d %H:%M")
        except (KeyError, ValueError) as e:    # unknown zone name from the browser
            log.debug("time zone %r not usable: %s", tz_name, e)
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_title(run) -> str:
    """One line describing what the run made (plain text: callers show it with st.text/caption):
    the prompt, or the background ("Colour #00ff00", "Image · beach.png")."""
    bg = run.spec.background
    if bg.kind == "sd":
        return run.prompt or "(no prompt)"
    return background_text(bg)


def status_badge(run) -> Optional[tuple[str, str, str]]:
    """(text, colour, icon) of the badge a card gets when its run did not succeed, else None."""
    return {"failed": ("Failed", "red", ":material/error:"),
            "cancelled": ("Cancelled", "gray", ":material/block:"),
            "running": ("Running", "orange", ":material/hourglass_top:")}.get(run.status)


def card_caption(run) -> Optional[str]:
    """The caption of a card's picture when it is the source photo (the run has no output yet)."""
    if run.outputs:
        return None
    return "The photo — result on its way" if run.status == "running" else "The photo — no result"


def error_line(run, limit: int = 160) -> str:
    """The first line of a failed run's error, cut to `limit` characters (plain text)."""
    line = str(run.error or "").strip().splitlines()[0] if run.error and str(run.error).strip() else ""
    return line if len(line) <= limit else line[:limit - 1] + "…"


def thumbnails(store, runs: Sequence[Any]) -> dict[int, bytes]:
    """{run id: WebP bytes} of each run's card picture: its first output's thumbnail, else the
    source's. Read through the store (a folder or S3; concurrently on S3), so nothing here opens a
    path; a run whose files are all missing is left out."""
    runs = list(runs)
    first = store.read_files([r.outputs[0].thumb_path if r.outputs else None for r in runs])
    pics = {r.id: b for r, b in zip(runs, first) if b is not None}
    rest = [r for r in runs if r.id not in pics]
    if rest:
        # an output thumbnail missing (rare): the other outputs, then the source
        for r in rest:
            for b in store.read_files([o.thumb_path for o in r.outputs[1:]] + [r.source.thumb_path]):
                if b is not None:
                    pics[r.id] = b
                    break
    return pics


def card_pictures(store, runs: Sequence[Any]) -> dict[int, bytes]:
    """`thumbnails` ready to show: transparency over a checkerboard (ui.widgets.shown_bytes)."""
    from ui.widgets import shown_bytes
    return {rid: shown_bytes(b) for rid, b in thumbnails(store, runs).items()}


def thumbnail(store, run) -> Optional[bytes]:
    """The card picture of one run (see thumbnails), None if none of its files is there."""
    return thumbnails(store, [run]).get(run.id)


def stored_image(store, *paths) -> Optional[bytes]:
    """The bytes of the first of `paths` (record paths: thumbnail first, full image as fallback)
    that the store has; None if it has none."""
    for path in paths:                  # one at a time: the full image is read only if needed
        data = store.read_files([path])[0]
        if data is not None:
            return data
    return None


def shown_image(store, *paths) -> Optional[bytes]:
    """`stored_image`, ready to show: transparency over a checkerboard."""
    from ui.widgets import shown_bytes
    return shown_bytes(stored_image(store, *paths))


def toggle_selected(state: MutableMapping, run_id: int) -> None:
    sel = list(state.get("hist_selected") or [])
    state["hist_selected"] = [i for i in sel if i != run_id] if run_id in sel else [*sel, run_id]


def params_frame(params: dict[str, str]):
    import pandas as pd
    return pd.DataFrame({"Value": list(params.values())}, index=pd.Index(list(params), name="Parameter"))


def clicks_frame(clicks):
    """A table of a spec's clicks (x, y rounded; add/remove)."""
    import pandas as pd
    return pd.DataFrame([{"x": round(c.x), "y": round(c.y), "click": "add" if c.label == 1 else "remove"}
                         for c in clicks], index=pd.RangeIndex(1, len(clicks) + 1, name="#"))


def mask_preview(data: bytes, side: int = 512) -> bytes:
    """A small PNG of a (possibly 12 MP) mask (its PNG bytes, as read through the store)."""
    from PIL import Image
    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as im:
        im.thumbnail((side, side))
        im.save(buf, format="PNG")
    return buf.getvalue()


def comparison_table(store, ids: Sequence[int]):
    """(pandas DataFrame of parameters with one column per run, list of differing row labels).
    Values as people read them (human_value): the photo by its file name, clicks counted, no
    hashes or server paths; which rows differ is decided on the stored values."""
    import pandas as pd

    cmp = store.compare(list(ids))
    runs = {r.id: r for r in store.get_runs(list(cmp.ids))}
    rows = {param_label(k): [human_value(k, v, runs.get(rid)) for rid, v in zip(cmp.ids, vals)]
            for k, vals in cmp.params.items()}
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[f"Run #{i}" for i in cmp.ids])
    differing = [param_label(k) for k in cmp.differing]
    return df, differing


def styled_comparison(df, differing: Sequence[str]):
    """Rows whose values differ between the runs are highlighted (a Styler; text stays text)."""
    diff = set(differing)

    def highlight(row):
        style = "background-color: #FFF3C4; font-weight: 700" if row.name in diff else ""
        return [style] * len(row)

    return df.style.apply(highlight, axis=1)


def export_bytes(store, run_ids: Optional[Sequence[int]] = None, *, favorites: bool = False) -> bytes:
    """A zip (outputs as PNG with parameters, masks, manifest.json/.csv) of the chosen runs."""
    from core.export import export_runs

    with tempfile.TemporaryDirectory(prefix="backdrop-export-") as tmp:
        out = Path(tmp) / "backdrop-export.zip"
        export_runs(out, list(run_ids) if run_ids else None, favorites=favorites, store=store)
        return out.read_bytes()


def load_into_editor(state: MutableMapping, run, store=None) -> None:
    """Put a past run back in the Editor: its photo, clicks, mask options and background settings.
    The photo is read through `store` (default: the app's history store), a folder or S3."""
    from core.images import load_image
    from ui import photo

    if store is None:
        from ui import resources
        store = resources.store()
    try:
        data = store.read_file(run.source.path)
    except HistoryError as e:
        if "missing" not in str(e):
            raise
        raise HistoryError(f"the source photo of run #{run.id} is missing from the history files") from e
    # a batch's photo comes back under its file name: what is made from it in the Editor is a run
    # of its own, not one of the batch's (core.batch names its runs "<batch>/<file>")
    name = (run.source_name.rpartition("/")[2] if run.batch else run.source_name) or f"run-{run.id}.png"
    image = load_image(data, name=name)
    photo.load_photo(state, image, name)
    state["upload_id"] = state.get("upload_id")   # keep: the uploader's file stays "seen"
    S.spec_to_state(state, run.spec)
    bg = run.spec.background
    if bg.kind == "image" and bg.path and Path(bg.path).is_file():
        from ui.widgets import display_image
        try:
            state["bg_image"] = display_image(load_image(bg.path).rgb, 320)
        except BackdropError as e:   # the run loads; the page asks for a new background photo
            log.info("background photo of run %s not usable: %s", run.id, e)
            state["bg_image_path"] = None
    elif bg.kind == "image":
        state["bg_image_path"] = None
    state["notice"] = ("success", f"Loaded run #{run.id}: the photo, its clicks and settings are back. "
                       "Change anything, then Generate.")


# ----------------------------------------------------------------------------- a running run
RUNNING_REFRESH_S = 1.0


def running_progress(run_id: int) -> None:
    """On a running run's card: its progress bar and Cancel, redrawn every second, when this
    server process runs it (started from the Editor); the page is redrawn once when it ends. A run
    from elsewhere (the command line, another server) says so."""
    import streamlit as st

    from ui import job, tasks

    task = tasks.find_run(run_id, config.database_url())
    if task is None:
        st.caption("Running in another process (the command line or another server): refresh the "
                   "page to see how it ended.")
        return
    was_running = not task.done

    @st.fragment(run_every=RUNNING_REFRESH_S if was_running else None)
    def progress() -> None:
        if task.done:
            if was_running:
                st.rerun()          # the whole page: the card shows how the run ended
            st.caption("Finishing…")
            return
        st.progress(task.fraction, text=job.progress_text(task))
        if not getattr(task, "remote", False):
            st.button("Cancel", key=f"cancel-run-{run_id}", on_click=task.cancel.set,
                      disabled=task.cancel.is_set(), help="Stops after the current step.")

    progress()
