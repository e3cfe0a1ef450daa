"""The run spec drives the editor's widgets (issue 19 point 9): every field of core/spec.py has a
widget in the editor or is declared hidden; a widget's label, range, step and help are its field's;
the editor, the CLI and the API start from the same defaults; and a run made on the command line
with values at the spec's limits opens in the editor ("Edit from here") and re-runs to the same
spec (those with the CLI in a real subprocess: tests/integration/test_spec_cli.py). Streamlit's
AppTest drives the real app."""
from __future__ import annotations

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import no_exception, sample_clicked  # noqa: E402

from core import spec as core_spec  # noqa: E402
from ui import canvas, fields, prompts  # noqa: E402
from ui import state as S  # noqa: E402

WIDGET_KINDS = ("slider", "number_input", "text_input", "text_area", "toggle", "selectbox",
                "select_slider", "segmented_control", "color_picker", "radio", "checkbox",
                "file_uploader")


@pytest.fixture(autouse=True)
def grabcut(monkeypatch):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")



def widget_keys(at: AppTest) -> set[str]:
    return {w.key for kind in WIDGET_KINDS for w in at.get(kind) if getattr(w, "key", None)}


def cup_clicked() -> AppTest:
    return sample_clicked("Coffee cup", 300, 200)


def every_field():
    for part, model in fields.PARTS.items():
        for name in model.model_fields:
            yield part, name


# ---------------------------------------------------------------------------------------------
def test_every_spec_field_has_a_widget_in_the_editor_or_is_declared_hidden():
    at = cup_clicked()
    seen = widget_keys(at)
    at.segmented_control(key="edge").set_value(S.EDGE_MATTE).run()       # the matte's own widgets
    seen |= widget_keys(at)
    for kind in S.BG_KINDS:                                               # each background's widgets
        at.segmented_control(key="bg_kind").set_value(kind).run()
        no_exception(at)
        seen |= widget_keys(at)
    missing = [f"{part}.{name}" for part, name in every_field()
               if not fields.hidden(part, name) and fields.state_key(part, name) not in seen]
    assert not missing, f"spec fields without a widget in the editor (or ui(hidden=...)): {missing}"
    assert fields.advanced("mask") == ("fill_holes", "min_area")
    assert fields.advanced("generation") == ("strength", "scheduler", "lora")


def test_widget_label_range_step_and_help_are_the_fields():
    at = cup_clicked()
    feather, grow = at.slider(key="feather"), at.number_input(key="grow")
    assert (feather.label, feather.min, feather.max) == ("Feather (soft edge), px", 0, core_spec.MAX_FEATHER)
    assert (grow.min, grow.max, grow.step) == (-core_spec.MAX_EDGE_PX, core_spec.MAX_EDGE_PX, 1)
    assert grow.help == fields.meta("mask", "grow")["help"]
    assert at.number_input(key="min_area").max == core_spec.MAX_AREA     # Advanced
    assert at.toggle(key="fill_holes").label == "Fill holes inside the subject"
    at.number_input(key="variants").set_value(core_spec.MAX_VARIANTS).run()
    at.slider(key="strength").set_value(0.5).run()
    at.selectbox(key="scheduler").set_value("ddim").run()
    at.text_input(key="seed").input(str(core_spec.MAX_SEED)).run()
    no_exception(at)
    assert at.slider(key="steps").max == core_spec.MAX_STEPS
    assert at.slider(key="guidance").step == 0.5 and at.slider(key="strength").step == 0.05
    assert at.selectbox(key="lora").disabled                              # Quality mode: no LoRA
    at.text_area(key="prompt").input("a beach").run()
    gen = S.spec_from_state(at.session_state, "grabcut").generation
    assert (gen.variants, gen.strength, gen.scheduler, gen.seed) == (
        core_spec.MAX_VARIANTS, 0.5, "ddim", core_spec.MAX_SEED)

    at.segmented_control(key="bg_kind").set_value(S.BG_BLUR).run()
    blur = at.slider(key="blur_radius")
    assert (blur.min, blur.max, blur.value) == (0.5, core_spec.MAX_BLUR, core_spec.DEFAULT_BLUR)
    at.slider(key="blur_radius").set_value(core_spec.MAX_BLUR).run()
    at.toggle(key="fill_holes").set_value(True).run()
    at.number_input(key="min_area").set_value(40).run()
    no_exception(at)
    made = S.spec_from_state(at.session_state, "grabcut")
    assert (made.background.radius, made.mask.fill_holes, made.mask.min_area) == (core_spec.MAX_BLUR, True, 40)


def test_the_preview_honours_fill_holes_and_min_area():
    import numpy as np

    at = cup_clicked()
    [result] = at.session_state["seg_cache"].values()
    shown = canvas.subject_mask(at.session_state, result)
    assert shown.any()
    before = at.session_state["canvas_cache"][1]
    at.number_input(key="min_area").set_value(10**9).run()              # larger than the cup: dropped
    no_exception(at)
    assert not canvas.subject_mask(at.session_state, result).any()
    assert at.session_state["canvas_cache"][1] != before                 # the overlay follows
    at.number_input(key="min_area").set_value(0).run()
    import cv2
    ys, xs = np.nonzero(cv2.erode(shown, np.ones((9, 9), np.uint8)))     # a pixel deep inside the cup
    y, x = int(ys[len(ys) // 2]), int(xs[len(xs) // 2])
    holed = shown > 0
    holed[y - 1:y + 2, x - 1:x + 2] = False                              # a hole in the subject
    result.masks[prompts.chosen(at.session_state, result)] = holed
    assert canvas.subject_mask(at.session_state, result)[y, x] == 0
    at.toggle(key="fill_holes").set_value(True).run()
    no_exception(at)
    assert canvas.subject_mask(at.session_state, result)[y, x] == 255    # the preview fills it


def test_the_seed_box_takes_a_whole_number_or_nothing():
    state = S.spec_defaults() | {"prompts": [{"kind": "point", "x": 1, "y": 1, "label": 1}],
                                 "prompt": "x", "bg_kind": S.BG_SD}
    assert state["seed"] == "" and S.spec_from_state(state).generation.seed is None      # random
    state["seed"] = " 42 "
    assert S.spec_from_state(state).generation.seed == 42
    state["seed"] = "abc"
    with pytest.raises(Exception, match="seed must be a whole number"):
        S.spec_from_state(state)
