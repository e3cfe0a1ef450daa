"""The run spec drives the editor's widgets (issue 19 point 9): every field of core/spec.py has a
widget in the editor or is declared hidden; a widget's label, range, step and help are its field's;
the editor, the CLI and the API start from the same defaults; and a run made on the command line
with values at the spec's limits opens in the editor ("Edit from here") and re-runs to the same
spec. Streamlit's AppTest drives the real app; the CLI runs in a real subprocess."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import button, no_exception, wait_until  # noqa: E402
from test_cli import cli  # noqa: E402

from core import spec as core_spec  # noqa: E402
from core.spec import Background, Generation, MaskOptions, RunSpec  # noqa: E402
from ui import canvas, fields, prompts  # noqa: E402
from ui import state as S  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")
RUN_TIMEOUT = 120
WIDGET_KINDS = ("slider", "number_input", "text_input", "text_area", "toggle", "selectbox",
                "select_slider", "segmented_control", "color_picker", "radio", "checkbox",
                "file_uploader")


@pytest.fixture(autouse=True)
def grabcut(monkeypatch):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")



def widget_keys(at: AppTest) -> set[str]:
    return {w.key for kind in WIDGET_KINDS for w in at.get(kind) if getattr(w, "key", None)}


def cup_clicked() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    at.button(key="sample-Coffee cup").click().run()
    canvas.apply_canvas_value(at.session_state, {"x": 300, "y": 200, "width": 600, "height": 400,
                                                 "unix_time": 1})
    at.run()
    no_exception(at)
    return at


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


def test_editor_cli_and_api_start_from_the_specs_defaults(tmp_path, coffee):
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    ss = at.session_state
    for part, model in S.SPEC_PARTS.items():
        for name, f in model.model_fields.items():
            if name in ("prompt", "mode", "steps", "guidance", "scheduler"):   # required / by mode
                continue
            want = S._to_state(name, f.get_default(call_default_factory=True))
            assert ss[S._key(part, name)] == want, name
    assert ss["negative"] == "" and ss["feather"] == 0
    assert ss["blur_radius"] == core_spec.DEFAULT_BLUR == Background.parse("blur").radius

    photo = tmp_path / "cup.png"
    Image.fromarray(coffee[::4, ::4]).save(photo)
    cli("replace", photo, "--out", tmp_path / "o.png", "--point", "75,50", "--segmenter", "grabcut",
        "--background", "blur")
    [row] = json.loads(cli("history", "list", "--json").stdout)
    made = RunSpec.from_json(row["spec"])
    assert made.mask == MaskOptions()                                     # feather 0, as the editor
    assert made.background.radius == core_spec.DEFAULT_BLUR
    assert Generation(prompt="x").negative == ""                         # what the API fills in


def test_fast_mode_beyond_its_samplers_steps_is_one_line_not_an_internal_error(tmp_path, coffee):
    from test_cli import assert_one_line_error

    photo = tmp_path / "cup.png"
    Image.fromarray(coffee[::4, ::4]).save(photo)
    proc = cli("replace", photo, "--out", tmp_path / "o.png", "--point", "75,50", "--segmenter", "grabcut",
               "--background", "sd", "--prompt", "x", "--model", "tiny", "--mode", "fast",
               "--steps", str(core_spec.FAST_MAX_STEPS + 1), check=False)
    assert_one_line_error(proc, f"fast mode takes at most {core_spec.FAST_MAX_STEPS} steps")
    assert Generation.for_mode("fast", prompt="x", steps=core_spec.FAST_MAX_STEPS).steps == core_spec.FAST_MAX_STEPS


def _history_open(at: AppTest, run_id: int, action: str) -> None:
    at.switch_page("pages/history.py").run()
    at.button(key=f"open-{run_id}").click().run()
    button(at, action).click().run()
    no_exception(at)


def test_a_cli_run_at_the_specs_limits_opens_in_the_editor_and_reruns_to_the_same_spec(
        tmp_path, coffee, tiny_fast):
    from core.history import open_store

    photo = tmp_path / "cup.png"
    Image.fromarray(coffee[::2, ::2]).save(photo)                        # 300x200
    point = ["--point", "150,100", "--point", "5,5,0", "--segmenter", "grabcut"]
    cli("replace", photo, "--out", tmp_path / "a.png", *point,
        "--background", f"blur:{core_spec.MAX_BLUR:g}", "--feather", str(core_spec.MAX_FEATHER),
        "--grow", str(core_spec.MAX_EDGE_PX), "--fill-holes", "--min-area", "40")
    cli("replace", photo, "--out", tmp_path / "b.png", *point, "--background", "sd",
        "--prompt", "a beach", "--negative", "fog", "--model", "tiny", "--mode", "fast",
        "--scheduler", "tcd", "--lora", "tiny-lcm", "--steps", str(core_spec.FAST_MAX_STEPS),
        "--strength", "0.02", "--guidance", str(core_spec.MAX_GUIDANCE), "--seed", str(core_spec.MAX_SEED),
        "--variants", str(core_spec.MAX_VARIANTS), "--edge", "matte", "--edge-band",
        str(core_spec.MAX_EDGE_BAND), "--invert", "--grow", "-5")
    store = open_store()
    b, a = store.list_runs(limit=2).runs
    assert a.spec.mask.feather == core_spec.MAX_FEATHER and b.spec.generation.strength == 0.02

    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    _history_open(at, a.id, "Edit from here")                            # the editor opens it
    assert at.title[0].value == "Replace a photo's background"
    assert at.slider(key="feather").value == core_spec.MAX_FEATHER
    assert at.number_input(key="grow").value == core_spec.MAX_EDGE_PX
    assert at.slider(key="blur_radius").value == core_spec.MAX_BLUR
    assert at.toggle(key="fill_holes").value and at.number_input(key="min_area").value == 40
    assert S.spec_from_state(at.session_state, "grabcut") == a.spec

    _history_open(at, b.id, "Edit from here")
    assert at.slider(key="strength").value == 0.02                       # below the slider's usual 0.05
    assert (at.selectbox(key="scheduler").value, at.selectbox(key="lora").value) == ("tcd", "tiny-lcm")
    assert at.text_input(key="seed").value == str(core_spec.MAX_SEED)
    assert at.number_input(key="variants").value == core_spec.MAX_VARIANTS
    assert S.spec_from_state(at.session_state, "grabcut") == b.spec
    at.switch_page("pages/editor.py").run()                              # (AppTest stays on History)
    assert S.spec_from_state(at.session_state, "grabcut") == b.spec
    button(at, "Generate").click().run()                                 # re-run from the editor
    no_exception(at)
    wait_until(at, lambda x: x.session_state["job"] is None, what="the re-run to finish")
    assert not at.error, [e.value for e in at.error]

    _history_open(at, a.id, "Re-run")                                    # History's Re-run
    at.switch_page("pages/editor.py")
    wait_until(at, lambda x: x.session_state["job"] is None and store.count_runs() == 4,
               what="the second re-run to finish")
    assert not at.error, [e.value for e in at.error]
    runs = store.list_runs(limit=4).runs
    assert all(r.status == "succeeded" for r in runs), [(r.id, r.status, r.error) for r in runs]
    assert runs[1].spec == b.spec and runs[0].spec == a.spec             # the same specs again
