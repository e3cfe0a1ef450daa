"""Editor: load a photo, click the subject, choose a background, generate, download."""
from __future__ import annotations

import streamlit as st
from streamlit_image_coordinates import streamlit_image_coordinates

from core import weights
from core.errors import BackdropError
from core.images import encode_png
from ui import editor as ed
from ui import resources, tasks
from ui import state as S
from ui import models as um
from ui.widgets import escape_md, guarded, model_label, one_line, show_notice, state_selectbox

state = st.session_state

# ------------------------------------------------------------------ sidebar: segmentation model
with st.sidebar:
    state_selectbox(st, "Segmentation model", [s.name for s in um.visible_specs("segment", state)],
                    state, "segmenter", "seg_pick",
                    format_func=lambda n: model_label(weights.get_spec(n, "segment"),
                                                      resources.is_present(weights.get_spec(n, "segment"))),
                    help="Which model finds the subject from your clicks. Manage downloads on the "
                         "Models page.")
    seg_name, seg_note = resources.choose_segmenter(state["segmenter"])
    if seg_note:
        st.warning(seg_note)

segmenter = guarded("loading the segmentation model", resources.segmenter, seg_name)
if segmenter is None and seg_name != resources.GRABCUT:
    seg_name = resources.GRABCUT
    segmenter = guarded("loading GrabCut", resources.segmenter, seg_name)

st.title("Replace a photo's background")
st.caption("1 · Load a photo  →  2 · Click on the subject to keep  →  3 · Pick a new background and Generate")
show_notice(state)

# ------------------------------------------------------------------ 1. photo
with st.container(border=True):
    up_col, sample_col = st.columns([3, 2])
    with up_col:
        uploaded = st.file_uploader("1 · Upload a photo", type=ed.UPLOAD_TYPES, key="upload",
                                    help="JPEG, PNG, WebP, TIFF, BMP, GIF or HEIC, up to 200 MB.")
    with sample_col:
        st.markdown("**…or try a sample photo**")
        for label in ed.SAMPLES:
            st.button(label, key=f"sample-{label}", on_click=ed.load_sample, args=(state, label),
                      width="stretch")
if uploaded is not None and uploaded.file_id != state["upload_id"]:
    state["upload_id"] = uploaded.file_id
    try:
        ed.load_upload(state, uploaded.getvalue(), uploaded.name)
    except BackdropError as e:
        state["upload_error"] = (uploaded.file_id, one_line(e, "reading the photo"))
    except Exception as e:
        state["upload_error"] = (uploaded.file_id, one_line(e, "reading the photo"))
upload_error = state.get("upload_error")
if upload_error and uploaded is not None and upload_error[0] == uploaded.file_id:
    st.error(f"Could not use that file: {escape_md(upload_error[1])}")

photo = state["photo"]
if photo is None:
    st.info("Upload a photo or pick a sample above to start.")
    st.stop()

# Start computing the embedding at once, so the first click does not wait from zero.
prep = state["prepare"]
if segmenter is not None and (prep is None or getattr(prep, "segmenter", None) != seg_name):
    prep = ed.start_prepare(state, segmenter)


# ------------------------------------------------------------------ 2. subject
pic_col, ctl_col = st.columns([3, 2], gap="medium")

with ctl_col:
    st.subheader("2 · Select the subject")
    st.segmented_control("Each click will", S.CLICK_MODES, key="click_mode", persist_state="session", required=True,
                         help="Add: click on what to keep. Remove: click on what is not part of it.")
    st.toggle("Draw a box instead (drag over the subject)", key="box_mode", persist_state="session")
    b1, b2 = st.columns(2)
    b1.button("Undo", icon=":material/undo:", on_click=ed.undo, args=(state,), disabled=not ed.has_subject(state),
              width="stretch")
    b2.button("Clear", icon=":material/close:", on_click=ed.clear, args=(state,), disabled=not ed.has_subject(state),
              width="stretch")

# Segment at preview size (cheap; the embedding is cached). Wait for a running preparation first.
result = None
if segmenter is not None and ed.has_subject(state):
    if tasks.running(prep):
        with st.spinner("Preparing the photo for clicks…"):
            prep.wait()
    result = guarded("finding the subject", ed.segment_preview, state, segmenter, seg_name)

with ctl_col:
    if result is not None and len(result.masks) > 1:
        thumbs = ed.candidate_thumbnails(state, result, seg_name)
        picks = list(range(len(result.masks)))
        cols = st.columns(len(picks))
        for i, col in enumerate(cols):
            col.image(thumbs[i], caption=f"{i + 1} · score {float(result.scores[i]):.2f}")
        pick = st.radio("Mask candidate", picks, index=ed.chosen(state, result),
                        key=ed.candidate_key(state, seg_name), horizontal=True,
                        format_func=lambda i: f"{i + 1}" + (" (best)" if i == int(result.best) else ""),
                        help="The model offers several guesses; pick the one that fits the subject.")
        state["candidate"] = None if pick == int(result.best) else int(pick)
    with st.expander("Edge: grow, feather, invert", expanded=False):
        st.slider("Grow (+) / shrink (−) the mask, px", -50, 50, key="grow", persist_state="session",
                  help="In pixels of the full-resolution photo.")
        st.slider("Feather (soft edge), px", 0, 50, key="feather", persist_state="session")
        st.toggle("Invert (keep the background, replace the subject)", key="invert", persist_state="session")

with pic_col:
    canvas_key = f"canvas-{photo.hash[:12]}"

    def _on_canvas() -> None:
        ed.apply_canvas_value(state, state.get(canvas_key))

    if segmenter is not None:
        value = streamlit_image_coordinates(
            ed.canvas_image(state, seg_name, result), key=canvas_key, use_column_width="always",
            click_and_drag=bool(state["box_mode"]), image_format="JPEG", on_click=_on_canvas,
            cursor="crosshair")
        if ed.apply_canvas_value(state, value):   # when the callback did not run (first event)
            st.rerun()
    info = escape_md(f"{state['photo_name'] or 'photo'} · {photo.width}×{photo.height} px · "
                     f"segmentation: {seg_name}")
    if result is not None:
        i = ed.chosen(state, result)
        st.caption(f"Mask ready: candidate {i + 1} of {len(result.masks)}, score "
                   f"{float(result.scores[i]):.2f} ({ed.prompt_summary(state)}) · {info}")
    elif state["box_mode"]:
        st.caption(f"Drag a box around the subject. · {info}")
    else:
        st.caption(f"Click on the subject to select it: green dots add, red dots remove. · {info}")


polling = tasks.running(prep)


@st.fragment(run_every=1.0 if polling else None)
def prepare_status() -> None:
    task = state.get("prepare")
    if task is None:
        return
    if not task.done:
        st.info(f"Preparing the photo for clicks… ({task.elapsed:.0f} s) — you can click already; "
                "the mask appears as soon as it is ready.", icon=":material/hourglass_top:")
    elif task.error:
        st.warning(f"Could not prepare the photo: {escape_md(task.error)}")
    elif polling:
        st.rerun()


with pic_col:
    prepare_status()


# ------------------------------------------------------------------ 3. background
with ctl_col:
    st.subheader("3 · New background")
    st.segmented_control("Background", S.BG_KINDS, key="bg_kind", persist_state="session", required=True,
                         label_visibility="collapsed")
    kind = state["bg_kind"]
    if kind == S.BG_SD:
        st.text_area("Prompt: describe the new scene", key="prompt", persist_state="session", height=80,
                     placeholder="a sunny beach at golden hour, soft light")
        with st.expander("Stable Diffusion settings"):
            st.text_input("Negative prompt (what to avoid)", key="negative", persist_state="session")
            state_selectbox(st, "Model", [s.name for s in um.visible_specs("inpaint", state)], state,
                            "inpaint_model", "inpaint_pick", format_func=um.inpaint_label)
            c1, c2 = st.columns(2)
            c1.number_input("Seed (−1 = random)", min_value=-1, max_value=2**31 - 1, step=1, key="seed", persist_state="session")
            c2.number_input("Variants", min_value=1, max_value=4, step=1, key="variants", persist_state="session")
            c1.slider("Steps", 1, 100, key="steps", persist_state="session", help="More steps: finer detail, slower.")
            c2.slider("Guidance", 1.0, 20.0, step=0.5, key="guidance", persist_state="session",
                      help="How closely to follow the prompt.")
        missing = um.inpaint_missing_note(state["inpaint_model"])
        if missing:
            st.warning(missing)
    elif kind == S.BG_COLOR:
        st.color_picker("Colour", key="bg_color", persist_state="session")
    elif kind == S.BG_BLUR:
        st.slider("Blur radius, px", 1, 150, key="blur_radius", persist_state="session")
    elif kind == S.BG_IMAGE:
        bg_up = st.file_uploader("Background photo", type=ed.UPLOAD_TYPES, key="bg_upload")
        if bg_up is not None and bg_up.file_id != state.get("bg_upload_id"):
            state["bg_upload_id"] = bg_up.file_id
            guarded("reading the background photo", ed.store_background_image, state, bg_up.getvalue())
        if state["bg_image"] is not None:
            st.image(state["bg_image"], width=160)
    else:
        st.caption("The result is a PNG with a transparent background.")

    start_now = st.button("Generate", type="primary", disabled=tasks.running(state["job"]) or not ed.has_subject(state),
                 width="stretch", help=None if ed.has_subject(state) else "Click on the subject first.")
    if state.get("autorun"):              # "Re-run" from History
        state["autorun"] = False
        start_now = not tasks.running(state["job"])
    if start_now:
        try:
            state["job_notice"] = None
            ed.start_generation(state, seg_name)
        except BackdropError as e:
            st.error(escape_md(one_line(e, "starting the run")))
        except Exception as e:
            st.error(escape_md(one_line(e, "starting the run")))

    @st.fragment(run_every=1.0 if tasks.running(state["job"]) else None)
    def job_panel() -> None:
        task = state.get("job")
        if task is None:
            return
        if task.done:
            ed.collect_result(state)
            st.rerun()
        st.progress(task.fraction, text=ed.progress_text(task))
        st.button("Cancel", key="cancel", on_click=task.cancel.set, disabled=task.cancel.is_set(),
                  help="Stops after the current step.")

    job_panel()
    if state.get("job_notice") and not tasks.running(state["job"]):
        level, text = state["job_notice"]
        {"error": st.error, "warning": st.warning}.get(level, st.success)(escape_md(text))


# ------------------------------------------------------------------ results
res = state["result"]
if res is not None:
    st.divider()
    st.subheader("Result")
    outputs = res["outputs"]
    cols = st.columns(1 + len(outputs))
    cols[0].image(res["original"], caption="Original")
    for i, (col, out) in enumerate(zip(cols[1:], outputs)):
        seed = res["seeds"][i]
        col.image(res["previews"][i],
                  caption=f"Variant {i + 1}" + (f" · seed {seed}" if seed is not None else ""))
        col.download_button(f"Download PNG ({out.shape[1]}×{out.shape[0]})",
                            data=lambda out=out: encode_png(out),
                            file_name=f"{res['name']}-backdrop-{res['run_id'] or 'x'}-{i + 1}.png",
                            mime="image/png", key=f"dl-{res['run_id']}-{i}", on_click="ignore",
                            width="stretch")
