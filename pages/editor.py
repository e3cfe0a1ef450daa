"""Editor: load a photo, click the subject, choose a background, generate, download."""
from __future__ import annotations

import streamlit as st

from core import spec
from core.engine import CAN_IMAGE_BACKGROUND, CAN_LOCAL_MODELS, IMAGE_BACKGROUND_NOTE, get_engine
from ui import auto, background, canvas, catalogue, fields, job, photo, prompts, resources, tasks
from ui import result as result_view
from ui import state as S
from ui.clicker import clicker
from ui import models as um
from ui import layout
from ui.widgets import escape_md, guarded, show_notice, state_selectbox

state = st.session_state
layout.setup_page()       # wide, also on the page's own URL (no router then)
# a session can start on this page without the router (a bookmark or reload of its URL makes
# Streamlit run pages/ files directly): fill in what the router would have (idempotent)
S.init_session(state)

# ------------------------------------------------------------------ sidebar: segmentation model
engine = get_engine()        # in this process, or the Backdrop service (BACKDROP_SERVER_URL)
local_models = engine.can(CAN_LOCAL_MODELS)     # else the weights are on the service, not here
with st.sidebar:
    state_selectbox(st, "Segmentation model", [s.name for s in um.visible_specs("segment", state)],
                    state, "segmenter", "seg_pick",
                    format_func=um.short_label,      # a name fits the sidebar; what it is below
                    help="Which model finds the subject from your clicks. Manage downloads on the "
                         "Models page.")
    st.caption(um.about(state["segmenter"], "segment", None if local_models else True))
    seg_name, seg_note = (resources.choose_segmenter(state["segmenter"]) if local_models
                          else (state["segmenter"], None))
    if engine.where:
        st.caption(f"Working with the Backdrop service at {escape_md(engine.where)}.")

seg_name, segmenter, seg_errors = prompts.load_segmenter(engine, state, seg_name)
for error in seg_errors:
    st.error(escape_md(error))

st.title("Replace a photo's background")
st.caption("1 · Load a photo  →  2 · Click on the subject to keep  →  3 · Pick a new background and Generate")
show_notice(state)
if seg_note:              # here, not in the sidebar: a phone keeps the sidebar closed
    st.warning(seg_note)

# ------------------------------------------------------------------ 1. photo
with st.container(border=True):
    up_col, sample_col = st.columns([3, 2])
    with up_col:
        uploaded = st.file_uploader("1 · Upload a photo", type=photo.UPLOAD_TYPES, key="upload",
                                    help="JPEG, PNG, WebP, TIFF, BMP, GIF or HEIC, up to 200 MB.")
        st.toggle("Find the subject on upload", key="auto_on_upload", persist_state="session",
                  help="Each new photo starts with its subject selected, as with the Find the subject "
                       "button above the photo (a product on a plain backdrop works best).")
    with sample_col:
        st.markdown("**…or try a sample photo**")
        for label in photo.SAMPLES:
            st.button(label, key=f"sample-{label}", on_click=photo.load_sample, args=(state, label),
                      width="stretch")
upload_error = photo.take_upload(state, uploaded)
if upload_error:
    st.error(f"Could not use that file: {escape_md(upload_error)}")

image = state["photo"]
if image is None:
    st.info("Upload a photo or pick a sample above to start.")
    st.stop()

# Start computing the embedding at once, so the first click does not wait from zero.
prep = photo.ensure_prepared(state, segmenter, seg_name)
auto.on_upload(state)      # "Find the subject on upload": once per new photo


# ------------------------------------------------------------------ 2. subject
pic_col, ctl_col = st.columns([3, 2], gap="medium")

with ctl_col:
    st.subheader("2 · Select the subject")
    st.toggle("Draw a box instead (drag over the subject)", key="box_mode", persist_state="session",
              help="With a mouse a drag draws a box in either mode; turn this on to drag one with a "
                   "finger (the photo then does not scroll the page).")
    b1, b2 = st.columns(2)
    b1.button("Undo", icon=":material/undo:", on_click=prompts.undo, args=(state,), disabled=not prompts.has_subject(state),
              width="stretch")
    b2.button("Clear", icon=":material/close:", on_click=prompts.clear, args=(state,), disabled=not prompts.has_subject(state),
              width="stretch")
    with st.expander("Edge: hard or soft (matting), grow, feather, invert", expanded=False):
        st.segmented_control("Edge", S.EDGES, key="edge", persist_state="session", required=True,
                             format_func=S.EDGE_LABELS.get,
                             help="Hard: the mask's own edge. Soft (matting): an alpha matte at the "
                                  "border — hair and fur blend into the new background, with the old "
                                  "background's colour taken out of them.")
        matted = state["edge"] == S.EDGE_MATTE
        if matted:
            m1, m2 = st.columns(2)
            m1.selectbox("Matting method", spec.EDGE_METHODS, key="edge_method", persist_state="session",
                         format_func=S.EDGE_METHOD_LABELS.get,
                         help="Guided: fast, no download. Closed-form: finer on hair, slower. "
                              "ViTMatte: a learned model, best on hair; needs its weights (Models page).")
            m2.select_slider("Band width", S.band_stops(state["edge_band"]), key="edge_band",
                             persist_state="session", format_func=S.band_label,
                             help="How far each side of the mask's edge the matte works, in pixels of "
                                  "the full-resolution photo. Auto: about 0.6 % of the photo's long side.")
            if state["edge_method"] == "vitmatte" and local_models and not job.vitmatte_available():
                st.caption("ViTMatte's weights are not installed: runs use Guided matting until you get "
                           "them on the Models page.")
            elif state["edge_method"] != "guided":
                st.caption("The overlay previews the soft edge with Guided matting (fast, for clicks); "
                           "the result uses the method chosen.")
        fields.draw(st, "mask", "grow", state)
        fields.draw(st, "mask", "feather", state, disabled=matted,
                    **({"help": "Soft (matting) replaces feathering: the matte makes the edge soft."}
                       if matted else {}))
        fields.draw(st, "mask", "invert", state)

# What the rest of the page was drawn with: the clickable photo below reruns alone on a click, and
# asks for a whole-page run only when this changes (Undo/Clear and Generate enable on the first
# click). Everything else reads the clicks from session state when it runs (Generate, the job).
state["subject_drawn"] = prompts.has_subject(state)


def subject_canvas() -> None:
    """Add/Remove above the clickable photo (a phone, where the columns stack, shows it first),
    then the photo with its mask and the mask candidates."""
    if segmenter is not None:     # outside the fragment: a click's rerun stays as small as it was
        mode_col, find_col = st.columns([3, 2], vertical_alignment="bottom")
        mode_col.segmented_control("Each click will", S.CLICK_MODES, key="click_mode", persist_state="session",
                                   required=True, help="Add: click on what to keep. Remove: click on what "
                                                       "is not part of it. Shift-click or right-click removes too.")
        find_col.button("Find the subject", icon=":material/center_focus_strong:", on_click=auto.find,
                        args=(state,), width="stretch",
                        help="Select the subject without clicks (a product on a plain backdrop works "
                             "best); then click to add or remove parts.")
        if state.get("auto_note") and state.get("auto_done") == image.hash:
            st.warning(escape_md(state["auto_note"]))
    subject_photo()


@st.fragment
def subject_photo() -> None:
    """The clickable photo with its mask, and the mask candidates: a click or a candidate pick
    reruns only this (segment at preview size from the cached embedding, overlay, JPEG)."""
    canvas_key = f"canvas-{image.hash[:12]}"
    result = None
    if segmenter is not None and prompts.has_subject(state):
        if tasks.running(state.get("prepare")):
            with st.spinner("Preparing the photo for clicks…"):
                state["prepare"].wait()
        result = guarded("finding the subject", prompts.segment_preview, state, segmenter, seg_name)
    pick_key = None if result is None else prompts.candidate_key(state, seg_name)
    if pick_key in state:     # the candidate picker (drawn below the photo) was just changed
        prompts.pick_candidate(state, result, state[pick_key])

    def _on_canvas() -> None:
        canvas.apply_canvas_value(state, state.get(canvas_key))

    if segmenter is not None:
        value = clicker(canvas.canvas_image(state, seg_name, result).data, key=canvas_key,
                        label=0 if state["click_mode"] == S.REMOVE else 1, box_mode=bool(state["box_mode"]),
                        seen=state.get("canvas_event"), on_change=_on_canvas)
        if canvas.apply_canvas_value(state, value):   # when the callback did not run (first event)
            st.rerun()
    info = escape_md(f"{state['photo_name'] or 'photo'} · {image.width}×{image.height} px · "
                     f"segmentation: {seg_name}")
    if result is not None:
        i = prompts.chosen(state, result)
        st.caption(f"Mask ready: candidate {i + 1} of {len(result.masks)}, score "
                   f"{float(result.scores[i]):.2f} ({prompts.prompt_summary(state)}) · {info}")
    elif state["box_mode"]:
        st.caption(f"Drag a box around the subject. · {info}")
    else:
        st.caption("Click on the subject to select it: green dots add, red dots remove (or shift-click, "
                   f"right-click); drag for a box; Ctrl+Z undoes. · {info}")

    if result is not None and len(result.masks) > 1:
        thumbs = canvas.candidate_thumbnails(state, result, seg_name)
        picks = list(range(len(result.masks)))
        for i, col in enumerate(st.columns(len(picks) + 1)[:len(picks)]):
            col.image(thumbs[i], caption=f"{i + 1} · score {float(result.scores[i]):.2f}")
        st.radio("Mask candidate", picks, index=prompts.chosen(state, result), key=pick_key, horizontal=True,
                 format_func=lambda i: f"{i + 1}" + (" (best)" if i == int(result.best) else ""),
                 help="The model offers several guesses; pick the one that fits the subject.")

    if prompts.has_subject(state) != state.get("subject_drawn"):
        st.rerun()   # the whole page, once: the controls that need a subject follow


with pic_col:
    result_view.photo_area(state, subject_canvas)   # after a run: the result, before/after, download
    photo.prepare_status(state)


# ------------------------------------------------------------------ 3. background
with ctl_col:
    st.subheader("3 · New background")
    st.segmented_control("Background", S.BG_KINDS, key="bg_kind", persist_state="session", required=True,
                         label_visibility="collapsed", wrap=True)   # wraps, never cut
    kind = state["bg_kind"]
    if kind == S.BG_SD:
        fields.draw(st, "generation", "prompt", state, height=80,
                    placeholder="a sunny beach at golden hour, soft light")
        st.segmented_control("Mode", S.MODES, key="mode", persist_state="session", required=True,
                             format_func=S.MODE_LABELS.get, on_change=S.apply_mode, args=(state,),
                             help="Fast: 4 steps with a distilled LoRA and the tiny autoencoder "
                                  "(seconds on a CPU). Quality: the full model, 30 steps.")
        with st.expander("Stable Diffusion settings"):
            fields.draw(st, "generation", "negative", state)
            state_selectbox(st, "Model", [s.name for s in um.visible_specs("inpaint", state)], state,
                            "inpaint_model", "inpaint_pick", format_func=um.inpaint_label)
            c1, c2 = st.columns(2)
            for col, name in zip((c1, c2, c1, c2), ("seed", "variants", "steps", "guidance")):
                fields.draw(col, "generation", name, state)
        run_ready = not local_models or um.needs_panel(state)   # what the run needs, and the fix, here
    elif kind == S.BG_COLOR:
        background.color_controls(state)
    elif kind == S.BG_BLUR:
        fields.draw(st, "background", "radius", state)
    elif kind == S.BG_IMAGE and not engine.can(CAN_IMAGE_BACKGROUND):
        st.warning(IMAGE_BACKGROUND_NOTE)
    elif kind == S.BG_IMAGE:
        bg_up = st.file_uploader("Background photo", type=photo.UPLOAD_TYPES, key="bg_upload")
        bg_error = job.take_background_upload(state, bg_up)
        if bg_error:
            st.error(escape_md(bg_error))
        if state["bg_image"] is not None:
            st.image(state["bg_image"], width=160)
    else:
        st.caption("The result is a PNG with a transparent background.")

    background.view_control(state)      # colour, blur, image, transparent: live on the photo

    with st.expander("Advanced"):        # the spec's fields marked advanced (core/spec.py)
        for name in fields.advanced("mask"):
            fields.draw(st, "mask", name, state)
        if kind == S.BG_SD:
            for name in fields.advanced("generation"):
                fields.draw(st, "generation", name, state, **fields.choices(name, state))

    found = None
    if segmenter is not None and prompts.has_subject(state):
        try:            # the mask under the photo: a failure is already shown there, once
            found = prompts.segment_preview(state, segmenter, seg_name)
        except Exception:   # noqa: BLE001  (the panel then previews without a subject)
            found = None
    catalogue.panel(st, state, None if found is None else canvas.subject_mask(state, found))

    has_subject = prompts.has_subject(state)
    image_refused = kind == S.BG_IMAGE and not engine.can(CAN_IMAGE_BACKGROUND)
    models_missing = kind == S.BG_SD and not run_ready
    clicked = st.button("Generate", type="primary",
                        disabled=tasks.running(state["job"]) or not has_subject or image_refused
                        or models_missing, width="stretch",
                        help="Click on the subject first." if not has_subject else
                        "Get the models above first, or run in Quality." if models_missing else None)
    start_error = job.start_if_asked(state, clicked, seg_name)   # also History's "Re-run"
    if start_error:
        st.error(escape_md(start_error))
    job.job_panel(state)

