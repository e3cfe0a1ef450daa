"""The editor, the CLI and the API start from the run spec's defaults, and a run made on the command
line (a real subprocess) with values at the spec's limits opens in the editor ("Edit from here") and
re-runs to the same spec (the widget side: tests/unit/test_spec_widgets.py)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import button, no_exception, wait_until  # noqa: E402
from cli_kit import assert_one_line_error, cli  # noqa: E402

from core import spec as core_spec  # noqa: E402
from core.spec import Background, Generation, MaskOptions, RunSpec  # noqa: E402
from ui import state as S  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
RUN_TIMEOUT = 120


@pytest.fixture(autouse=True)
def grabcut(monkeypatch):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")


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
