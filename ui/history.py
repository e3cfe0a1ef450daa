"""History page helpers: queries from the filter widgets, the compare table, export, and loading a
past run back into the Editor. The store itself is core.history (via ui.resources.store())."""
from __future__ import annotations

import io
import json
import tempfile
from collections.abc import MutableMapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional, Sequence

from core.errors import HistoryError
from ui import state as S

ALL = "All"
KIND_LABELS = {"sd": "AI scene", "color": "Colour", "blur": "Blur", "image": "Image",
               "transparent": "Transparent"}
PARAM_LABELS = {
    "source": "Source photo (hash)", "segmenter": "Segmentation model", "clicks": "Clicks (x, y, label)",
    "box": "Box", "mask_options": "Mask options", "background": "Background", "prompt": "Prompt",
    "negative": "Negative prompt", "seed": "Seed", "steps": "Steps", "guidance": "Guidance",
    "strength": "Strength", "scheduler": "Scheduler", "model": "Inpainting model",
    "variants": "Variants", "device": "Device", "status": "Status", "output_seeds": "Output seeds",
}


def query(state: MutableMapping):
    """The RunQuery for the filter widgets."""
    from core.history import RunQuery

    model = state.get("hist_model")
    kind = state.get("hist_kind")
    return RunQuery(text=str(state.get("hist_search") or "").strip(),
                    favorites=bool(state.get("hist_favourites")),
                    model=None if model in (None, ALL) else model,
                    background_kind=None if kind in (None, ALL) else kind)


def filters_key(state: MutableMapping) -> tuple:
    return (state.get("hist_search"), state.get("hist_favourites"), state.get("hist_model"),
            state.get("hist_kind"), state.get("hist_page_size"))


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
        except Exception:
            pass
    return dt.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")


def run_title(run) -> str:
    """One line describing what the run made (plain text: callers show it with st.text/caption)."""
    if run.background_kind == "sd":
        return run.prompt or "(no prompt)"
    kind = KIND_LABELS.get(run.background_kind, run.background_kind)
    detail = run.background.partition(":")[2]
    if run.background_kind == "image":
        detail = Path(detail).name
    return f"{kind} {detail}".strip()


def thumb_path(run) -> Optional[Path]:
    for o in run.outputs:
        if o.thumb_path.exists():
            return o.thumb_path
    return run.source.thumb_path if run.source.thumb_path.exists() else None


def toggle_selected(state: MutableMapping, run_id: int) -> None:
    sel = list(state.get("hist_selected") or [])
    state["hist_selected"] = [i for i in sel if i != run_id] if run_id in sel else [*sel, run_id]


def _cell(value: Any) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple, dict)):
        return json.dumps(value, sort_keys=True, ensure_ascii=False)
    return str(value)


def params_frame(params: dict[str, str]):
    import pandas as pd
    return pd.DataFrame({"Value": list(params.values())}, index=pd.Index(list(params), name="Parameter"))


def clicks_frame(clicks):
    import pandas as pd
    return pd.DataFrame([{"x": round(x), "y": round(y), "click": "add" if label == 1 else "remove"}
                         for x, y, label in clicks], index=pd.RangeIndex(1, len(clicks) + 1, name="#"))


def mask_preview(path: Path, side: int = 512) -> bytes:
    """A small PNG of a (possibly 12 MP) mask for display."""
    from PIL import Image
    buf = io.BytesIO()
    with Image.open(path) as im:
        im.thumbnail((side, side))
        im.save(buf, format="PNG")
    return buf.getvalue()


def comparison_table(store, ids: Sequence[int]):
    """(pandas DataFrame of parameters with one column per run, list of differing row labels)."""
    import pandas as pd

    cmp = store.compare(list(ids))
    rows = {PARAM_LABELS.get(k, k): [_cell(v) for v in vals] for k, vals in cmp.params.items()}
    df = pd.DataFrame.from_dict(rows, orient="index", columns=[f"Run #{i}" for i in cmp.ids])
    differing = [PARAM_LABELS.get(k, k) for k in cmp.differing]
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
    import core.export as export

    with tempfile.TemporaryDirectory(prefix="backdrop-export-") as tmp:
        out = Path(tmp) / "backdrop-export.zip"
        ids = list(run_ids) if run_ids else None
        if hasattr(export, "export_runs"):
            export.export_runs(out, ids, favorites=favorites, store=store)
        else:
            export.export_zip(store, out, run_ids=ids, favorites=favorites)
        return out.read_bytes()


def load_into_editor(state: MutableMapping, run) -> None:
    """Put a past run back in the Editor: its photo, clicks, mask options and background settings."""
    from core.images import load_image
    from ui import editor as ed

    if not run.source.path.exists():
        raise HistoryError(f"the source photo of run #{run.id} is missing from the history files")
    image = load_image(run.source.path)
    ed.load_photo(state, image, run.source_name or f"run-{run.id}.png")
    state["upload_id"] = state.get("upload_id")   # keep: the uploader's file stays "seen"
    prompts = [{"kind": "point", "x": float(x), "y": float(y), "label": int(label)}
               for x, y, label in run.clicks]
    if run.box:
        prompts.append({"kind": "box", "box": tuple(float(v) for v in run.box)})
    state["prompts"] = prompts
    opts = run.mask_options or {}
    state["candidate"] = opts.get("candidate")
    state["grow"] = int(opts.get("grow") or 0)
    state["feather"] = int(opts.get("feather") or 0)
    state["invert"] = bool(opts.get("invert") or False)
    if run.segmenter:
        state["segmenter"] = run.segmenter
    kind, _, detail = run.background.partition(":")
    if kind == "sd":
        state["bg_kind"] = S.BG_SD
        state["prompt"] = run.prompt or ""
        state["negative"] = run.negative or ""
        state["seed"] = int(run.seed) if run.seed is not None else -1
        if run.steps:
            state["steps"] = int(run.steps)
        if run.guidance:
            state["guidance"] = float(run.guidance)
        state["variants"] = max(1, min(4, int(run.variants or 1)))
        if run.model:
            state["inpaint_model"] = run.model
    elif kind == "color":
        state["bg_kind"] = S.BG_COLOR
        state["bg_color"] = detail if detail.startswith("#") else f"#{detail}"
    elif kind == "blur":
        state["bg_kind"] = S.BG_BLUR
        state["blur_radius"] = int(float(detail or 25))
    elif kind == "image":
        state["bg_kind"] = S.BG_IMAGE
        if detail and Path(detail).exists():
            from core.images import load_image as _load
            from ui.widgets import display_image
            state["bg_image_path"] = detail
            state["bg_image"] = display_image(_load(detail).rgb, 320)
    else:
        state["bg_kind"] = S.BG_TRANSPARENT
    state["notice"] = ("success", f"Loaded run #{run.id}: the photo, its clicks and settings are back. "
                       "Change anything, then Generate.")
