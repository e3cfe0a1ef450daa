"""Models & settings: the starter set for this machine, then every model (on disk or not, with
downloads), the device, and the session's defaults."""
from __future__ import annotations

import streamlit as st

from core import config
from ui import models as um
from ui import layout, resources, tasks
from ui import state as S
from ui.widgets import escape_md, show_notice, state_selectbox

state = st.session_state
layout.setup_page()       # wide, also on the page's own URL (no router then)
# a session can start on this page without the router (a bookmark or reload of its URL makes
# Streamlit run pages/ files directly): fill in what the router would have (idempotent)
S.init_session(state)

st.title("Models & settings")
show_notice(state)
busy = tasks.running(state.get("download"))

# ------------------------------------------------------------------ the starter set
starter = um.starter_specs(state)
with st.container(border=True):
    st.subheader("Get started on this machine")
    st.caption(escape_md(f"What the Editor needs for AI backgrounds here ({S.MODE_LABELS.get(state.get('mode') or config.default_mode(), '')} "
                         "mode). Colour, blur, image and transparent backgrounds need no download."))
    st.markdown("  \n".join(um.set_lines(starter)))
    to_get = [s for s in starter if not resources.is_present(s)]
    if to_get:
        size = um.download_size(starter)
        if st.button(f"Download the starter set ({size})", key="dl-starter", type="primary",
                     icon=":material/download:", disabled=busy, width="stretch"):
            state["download"] = um.start_set_download(starter, "the starter set", "starter")
            state["download_outcome"] = None
            st.rerun()
        st.caption("A stopped or failed download goes on where it left off when you press again.")
    else:
        st.success("Everything the Editor needs is on this machine.")
        st.page_link("pages/editor.py", label="Open the Editor", icon=":material/photo_camera:")
    um.download_status(state, "starter", ("editor",))     # one started in the Editor shows here

dev = um.device_info()
c1, c2, c3 = st.columns(3)
c1.metric("Device", dev["device"])
c2.metric("Precision", "fp16" if dev["fp16"] else "fp32")
c3.caption(dev["detail"])

# ------------------------------------------------------------------ defaults used by the Editor
st.subheader("Defaults for this session")
st.caption("Used by the Editor from now on (this browser session only). Server-wide defaults come "
           "from BACKDROP_SEGMENTER and BACKDROP_INPAINT_MODEL.")
d1, d2 = st.columns(2)
# names only (they fit a phone), what each is below; a label never changes as a download lands
state_selectbox(d1, "Segmentation model", [s.name for s in um.visible_specs("segment", state)], state,
                "segmenter", "default_segmenter", format_func=um.short_label)
d1.caption(um.about(state["segmenter"], "segment"))
state_selectbox(d2, "Inpainting model (AI scene backgrounds)",
                [s.name for s in um.visible_specs("inpaint", state)], state, "inpaint_model",
                "default_inpaint_model", format_func=um.short_label)
d2.caption(um.about(state["inpaint_model"], "inpaint"))
st.caption("What is not on disk yet is listed in the starter set above.")

# ------------------------------------------------------------------ the registry
st.header("All models")
st.caption(escape_md(f"Model files are kept in {config.weights_dir()} (BACKDROP_WEIGHTS_DIR)."))
for task_kind in um.TASKS:
    st.subheader(um.TASK_TITLES[task_kind])
    st.dataframe(um.model_rows(task_kind, state), hide_index=True, width="stretch",
                 column_config=um.TABLE_COLUMNS)
    if task_kind == "subject":
        for line in um.subject_lines():
            st.markdown(line)
        st.code(um.SUBJECT_DOWNLOAD, language="bash")
    missing = [s for s in um.visible_specs(task_kind, state)
               if um.downloadable(s) and not resources.is_present(s)]
    if missing:
        buttons = st.container(horizontal=True)     # a row that wraps: two a line on a phone
        for spec in missing:
            if buttons.button(f"Download {spec.name}", key=f"dl-{task_kind}-{spec.name}", disabled=busy):
                state["download"] = um.start_download(spec.name, task_kind)
                state["download_outcome"] = None
                st.rerun()
    um.download_status(state, task_kind)
