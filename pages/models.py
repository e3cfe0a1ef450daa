"""Models & settings: which models exist, which are on disk, downloads, device, and defaults."""
from __future__ import annotations

import streamlit as st

from core import weights
from ui import models as um
from ui import resources, tasks
from ui.widgets import model_label, show_notice, state_selectbox

state = st.session_state

st.title("Models & settings")
show_notice(state)

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
state_selectbox(d1, "Segmentation model", [s.name for s in um.visible_specs("segment", state)], state,
                "segmenter", "default_segmenter",
                format_func=lambda n: model_label(weights.get_spec(n, "segment"),
                                                  resources.is_present(weights.get_spec(n, "segment"))))
state_selectbox(d2, "Inpainting model (AI scene backgrounds)",
                [s.name for s in um.visible_specs("inpaint", state)], state, "inpaint_model",
                "default_inpaint_model", format_func=um.inpaint_label)
_, note = resources.choose_segmenter(state["segmenter"])
if note:
    st.warning(note)

# ------------------------------------------------------------------ the registry
job = state.get("download")


@st.fragment(run_every=1.0 if tasks.running(job) else None)
def download_panel() -> None:
    task = state.get("download")
    if task is None:
        return
    _, name = task.model
    if task.done:
        state["download"] = None
        if task.cancelled:
            state["notice"] = ("info", f"Download of {name} stopped: {task.error}")
        elif task.error:
            state["notice"] = ("error", f"Download of {name} failed: {task.error}")
        else:
            state["notice"] = ("success", f"{name} downloaded to {task.result}.")
        st.rerun()
    st.progress(task.fraction, text=f"Downloading {name}… {int(task.fraction * 100)}% · {task.elapsed:.0f} s")
    st.button("Cancel download", on_click=task.cancel.set, disabled=task.cancel.is_set())


download_panel()

for task_kind in um.TASKS:
    st.subheader(um.TASK_TITLES[task_kind])
    st.dataframe(um.model_rows(task_kind, state), hide_index=True, width="stretch")
    missing = [s for s in um.visible_specs(task_kind, state)
               if um.downloadable(s) and not resources.is_present(s)]
    if missing:
        cols = st.columns(min(len(missing), 4))
        for i, spec in enumerate(missing):
            if cols[i % len(cols)].button(f"Download {spec.name}", key=f"dl-{task_kind}-{spec.name}",
                                          disabled=tasks.running(state.get("download")),
                                          width="stretch"):
                state["download"] = um.start_download(spec.name, task_kind)
                st.rerun()
