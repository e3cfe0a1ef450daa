"""History: past runs in a grid, search and filters, details, compare, favourite, delete, export,
and "edit from here" back into the Editor."""
from __future__ import annotations

import logging
from functools import partial

import streamlit as st

from core.errors import BackdropError
from ui import history as uh
from ui import layout, resources
from ui import state as S
from ui.widgets import escape_md, guarded, one_line, show_notice

log = logging.getLogger(__name__)
state = st.session_state
layout.setup_page()       # wide, also on the page's own URL (no router then)
S.init_session(state)

st.title("History")
st.caption("Every run is kept here with its photo, mask, clicks and settings. Tick runs to compare "
           "or export them; open one to see everything or to edit from there.")
show_notice(state)

store = guarded("opening the history", resources.store)
if store is None:
    st.stop()
# Runs left "running" by a process that has since died (a killed CLI run, a crashed server) are
# marked failed now, not only when some process next opens the store.
guarded("checking for runs whose process stopped", store.recover_runs)
tz = getattr(st.context, "timezone", None)


def _action(what: str, fn, *args) -> bool:
    try:
        fn(*args)
        return True
    except BackdropError as e:
        log.info("%s: %s", what, e)
        st.error(escape_md(one_line(e, what)))
    except Exception as e:
        log.exception("unexpected error while %s", what)
        st.error(escape_md(one_line(e, what)))
    return False


def _set_favourite(output_ids: list[int], key: str) -> None:
    """Callback of a favourite toggle: mark (or unmark) the outputs; one line on failure."""
    try:
        for oid in output_ids:
            store.set_favorite(oid, bool(state[key]))
    except Exception as e:
        log.warning("saving the favourite failed", exc_info=not isinstance(e, BackdropError))
        state["notice"] = ("error", one_line(e, "saving the favourite"))


def _edit_from_here(run_id: int, autorun: bool) -> None:
    run = store.get_run(run_id)
    uh.load_into_editor(state, run, store)
    state["autorun"] = autorun
    state["hist_open"] = None
    st.switch_page("pages/editor.py")


def _dismissed() -> None:
    """A dialog closed with its ✕, Esc or a click beside it: it stays closed."""
    state["hist_open"] = None
    state["hist_confirm_delete"] = None
    state["hist_compare"] = False


def _open(run_id: int) -> None:
    state["hist_open"] = run_id
    state["hist_confirm_delete"] = None


# ------------------------------------------------------------------ one run, in full (a dialog:
# it opens where the person is, not at the top of a long page)
@st.dialog("Run details", width="large", on_dismiss=_dismissed)
def run_details(run_id: int) -> None:
    run = guarded("reading the run", store.get_run, run_id)
    if run is None:
        state["hist_open"] = None
        return
    with st.container():
        head, close = st.columns([6, 1])
        head.subheader(f"Run #{run.id} · {uh.local_time(run.created, tz)} · {run.status}")
        if close.button("Close", key="detail-close", width="stretch"):
            state["hist_open"] = None
            st.rerun()
        badge = uh.status_badge(run)
        if badge:
            st.badge(badge[0], color=badge[1], icon=badge[2])
        if run.error:
            st.error(escape_md(run.error))
        cols = st.columns(2 + max(len(run.outputs), 1))
        # every picture is read through the store (a folder or S3), never opened by path here
        source_pic = guarded("reading the source photo", uh.shown_image, store,
                             run.source.thumb_path, run.source.path)
        if source_pic is not None:
            cols[0].image(source_pic, caption="Source", width="stretch")
        mask_png = guarded("reading the mask", uh.stored_image, store, run.mask.path) \
            if run.mask is not None else None
        if mask_png is not None:
            cols[1].image(uh.mask_preview(mask_png), caption="Mask (white = subject)", width="stretch")
        for col, out in zip(cols[2:], run.outputs):
            pic = guarded("reading an output", uh.shown_image, store, out.thumb_path, out.path)
            if pic is not None:
                col.image(pic, width="stretch",
                          caption=f"Variant {out.index + 1}" + (f" · seed {out.seed}" if out.seed is not None else ""))
            col.toggle("★ Favourite", value=out.favorite, key=f"fav-out-{out.id}",
                       on_change=_set_favourite, args=([out.id], f"fav-out-{out.id}"))
            if guarded("looking for the output file", store.has_file, out.path):
                col.download_button("Download PNG", data=partial(store.read_file, out.path),
                                    file_name=f"backdrop-run{run.id}-{out.index + 1}.png",
                                    mime="image/png", key=f"dl-out-{out.id}", on_click="ignore")
        st.markdown("**What made it**")
        st.text(f"Source file: {run.source_name or '—'} ({run.source.width}×{run.source.height})")
        st.text(f"Background: {uh.run_title(run)}")
        params = uh.params_table(run)
        p_col, c_col = st.columns([3, 1])
        # st.dataframe, not st.table: st.table renders Markdown in cells, and prompts are user text
        p_col.dataframe(uh.params_frame(params), width="stretch", height=len(params) * 35 + 40)
        clicks = run.spec.subject.clicks
        if clicks:
            c_col.dataframe(uh.clicks_frame(clicks), width="stretch",
                            height=min(len(clicks) * 35 + 40, len(params) * 35 + 40))
        a1, a2, a3 = st.columns(3)
        if a1.button("Edit from here", icon=":material/edit:", key="detail-edit", type="primary", width="stretch",
                     help="Open this photo with these clicks and settings in the Editor."):
            _action("loading the run", _edit_from_here, run.id, False)
        if a2.button("Re-run", icon=":material/replay:", key="detail-rerun", width="stretch",
                     help="Run it again with the same settings (a new seed if it was random)."):
            _action("loading the run", _edit_from_here, run.id, True)
        if a3.button("Delete", icon=":material/delete:", key="detail-delete", width="stretch"):
            state["hist_confirm_delete"] = run.id
        if state.get("hist_confirm_delete") == run.id:
            st.warning(f"Delete run #{run.id} and its images? This cannot be undone.")
            y, n, _ = st.columns([1, 1, 4])
            if y.button("Yes, delete", key="confirm-delete", type="primary"):
                if _action("deleting the run", store.delete_run, run.id):
                    state["hist_confirm_delete"] = None
                    state["hist_open"] = None
                    state["hist_selected"] = [i for i in state["hist_selected"] if i != run.id]
                    state["notice"] = ("success", f"Deleted run #{run.id}.")
                    st.rerun()
            if n.button("Keep it", key="cancel-delete"):
                state["hist_confirm_delete"] = None
                st.rerun()


# ------------------------------------------------------------------ several runs side by side
@st.dialog("Compare runs", width="large", on_dismiss=_dismissed)
def compare_view(ids: list[int]) -> None:
    with st.container():
        head, close = st.columns([6, 1])
        head.subheader("Compare " + ", ".join(f"#{i}" for i in ids))
        if close.button("Close", key="compare-close", width="stretch"):
            state["hist_compare"] = False
            st.rerun()
        runs = guarded("reading the runs", store.get_runs, ids)
        table = guarded("comparing the runs", uh.comparison_table, store, ids)
        if runs is None or table is None:
            return
        cols = st.columns(len(runs))
        pics = guarded("reading the thumbnails", uh.card_pictures, store, runs) or {}
        for col, run in zip(cols, runs):
            if run.id in pics:
                col.image(pics[run.id], caption=f"Run #{run.id}")
            col.text(uh.run_title(run))
        df, differing = table
        if differing:
            st.caption("Highlighted rows differ between the runs: " + escape_md(", ".join(differing)))
        else:
            st.caption("These runs have identical parameters.")
        st.dataframe(uh.styled_comparison(df, differing), width="stretch",
                     height=len(df) * 35 + 40)


if state.get("hist_open") is not None:            # one dialog at a time
    run_details(int(state["hist_open"]))
elif state.get("hist_compare") and len(state["hist_selected"]) >= 2:
    compare_view(list(state["hist_selected"]))

# ------------------------------------------------------------------ filters: folded, so a phone
# shows the runs first; the fold's label says which filters are on
facets = guarded("reading the filters", store.facets) or {}
models = [uh.ALL, *facets.get("model", [])]
if state["hist_model"] not in models:
    state["hist_model"] = uh.ALL
kinds = [uh.ALL, *facets.get("background_kind", [])]
if state["hist_kind"] not in kinds:
    state["hist_kind"] = uh.ALL
# the batches of `python -m core batch` (each photo's run: "<batch>/<file>"), with their counts
batch_names, batch_label = uh.batch_choices(guarded("reading the batches", store.batches) or [])
if state.get("hist_batch") not in batch_names:     # a first visit, or the batch's runs are gone
    state["hist_batch"] = uh.ALL_RUNS
with st.expander(uh.filters_label(state), icon=":material/filter_list:", key="hist_filter_fold"):
    st.text_input("Search prompts", key="hist_search", persist_state="session",
                  placeholder="words from the prompt or negative prompt")
    st.toggle("★ Favourites", key="hist_favourites", help="Show only runs with a favourite output",
              persist_state="session")
    if len(batch_names) > 1:
        st.selectbox("Batch", batch_names, key="hist_batch", persist_state="session",
                     format_func=batch_label,
                     help="Only the runs of one batch (python -m core batch FOLDER: named after the "
                          "folder, or --name)")
    f1, f2, f3 = st.columns([2, 2, 1])
    f1.selectbox("Model", models, key="hist_model", persist_state="session")
    f2.selectbox("Background", kinds, key="hist_kind", persist_state="session",
                 format_func=lambda k: uh.KIND_LABELS.get(k, k))
    f3.selectbox("Per page", [6, 12, 24, 48], key="hist_page_size", persist_state="session")

listing = guarded("listing the runs", uh.page_of_runs, store, state)
if listing is None:
    st.stop()
runs, total, pages = listing

# ------------------------------------------------------------------ toolbar: compare / export
selected = list(state["hist_selected"])
# one row that wraps: on a phone the buttons share lines instead of taking one each
toolbar = st.container(horizontal=True, vertical_alignment="center")
toolbar.markdown(f"**{total}** run{'s' if total != 1 else ''} · **{len(selected)}** selected", width="content")
if toolbar.button(f"Compare selected ({len(selected)})", disabled=len(selected) < 2,
                  help="Tick two or more runs below."):
    state["hist_compare"] = True
    state["hist_open"] = None
    st.rerun()
toolbar.download_button(f"Export selected ({len(selected)}) as zip", disabled=not selected,
                   data=lambda: uh.export_bytes(store, selected), file_name="backdrop-selected.zip",
                   mime="application/zip", key="export-selected", on_click="ignore")
from core.history import RunQuery  # noqa: E402 - only for the favourites count
n_fav = guarded("counting favourites", store.count_runs, RunQuery(favorites=True)) or 0
toolbar.download_button(f"Export favourites ({n_fav}) as zip", disabled=n_fav == 0,
                   data=lambda: uh.export_bytes(store, favorites=True), file_name="backdrop-favourites.zip",
                   mime="application/zip", key="export-favourites", on_click="ignore")

# ------------------------------------------------------------------ the grid
if not runs:
    st.info("No runs match." if total == 0 and (state["hist_search"] or state["hist_favourites"]
                                                or state["hist_model"] != uh.ALL or state["hist_kind"] != uh.ALL
                                                or state["hist_batch"])
            else "No runs yet: generate something in the Editor and it will appear here.")
pics = guarded("reading the thumbnails", uh.card_pictures, store, runs) or {}
# cards in a row that wraps: as many per row as fit, two on a phone (widths: ui/layout.py)
with st.container(horizontal=True, key="hist_grid"):
    for run in runs:
        with st.container(border=True, key=f"hist_card_{run.id}"):
            badge = uh.status_badge(run)
            if run.id in pics:         # a run with no output shows its source photo: say so
                st.image(pics[run.id], width="stretch", caption=uh.card_caption(run))
            if badge:
                st.badge(badge[0], color=badge[1], icon=badge[2])
            if run.status == "running":     # its progress and Cancel when this server runs it
                uh.running_progress(run.id)
            st.text(uh.run_title(run)[:120])
            if run.status == "failed" and uh.error_line(run):
                st.caption(f":red[{escape_md(uh.error_line(run))}]")     # escaped: no markup
            meta = f"#{run.id} · {uh.local_time(run.created, tz)} · {run.spec.generation.model if run.spec.generation else run.spec.subject.segmenter or ''}"
            photo_name = run.source_name.rpartition("/")[2]     # a batch's photos tell apart by it
            st.caption(escape_md(f"{photo_name} · {meta}" if photo_name else meta))
            ticks = st.container(horizontal=True, gap="xsmall")   # side by side when they fit
            ticks.checkbox("Select", value=run.id in selected, key=f"pick-{run.id}",
                           on_change=uh.toggle_selected, args=(state, run.id),
                           help="Tick runs to compare or export them")
            ticks.toggle("★ Favourite", value=run.favorite, key=f"fav-{run.id}",
                         disabled=not run.outputs, on_change=_set_favourite,
                         args=([o.id for o in run.outputs], f"fav-{run.id}"))
            st.button("Open", key=f"open-{run.id}", width="stretch", on_click=_open, args=(run.id,),
                      help="See everything about this run; edit, re-run or delete it.")

# ------------------------------------------------------------------ pager
if pages > 1:
    p1, p2, p3 = st.columns([1, 2, 1])
    if p1.button("← Newer", disabled=state["hist_page"] == 0, width="stretch"):
        state["hist_page"] -= 1
        st.rerun()
    p2.caption(f"Page {state['hist_page'] + 1} of {pages}", text_alignment="center")
    if p3.button("Older →", disabled=state["hist_page"] >= pages - 1, width="stretch"):
        state["hist_page"] += 1
        st.rerun()
