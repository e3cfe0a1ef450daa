"""Fast mode from the user's side: the Editor's Fast/Quality choice, the live picture while the
background is painted, a fast run recorded with its mode, LoRA and sampler and reproduced on
re-run, and a fast run that cannot start recorded as failed with one line."""
from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from core import inpaint
from core.history import open_store
from core.images import LoadedImage
from core.jobs import JobRequest, run_job
from core.spec import Generation, RunSpec
from ui import state as S
from apptest_kit import sample_clicked, wait_until


def ellipse(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    return np.where(((xx - w / 2) / (w / 3)) ** 2 + ((yy - h / 2) / (h / 3)) ** 2 <= 1, 255, 0).astype(np.uint8)


def fast_spec(**gen) -> RunSpec:
    return RunSpec(background="sd", generation=Generation.for_mode(
        "fast", prompt="a beach", model="tiny", seed=5, **gen))


def test_fast_run_records_mode_lora_and_sampler_and_rerun_reproduces_it(chelsea, tiny_fast):
    cat = LoadedImage(rgb=chelsea, format="PNG")
    mask = ellipse(*chelsea.shape[:2])
    first = run_job(JobRequest(image=cat, spec=fast_spec(), mask=mask))
    run = open_store().get_run(first.run_id)
    gen = run.spec.generation
    assert (gen.mode, gen.lora, gen.scheduler, gen.steps, gen.guidance) == ("fast", "tiny-lcm", "lcm", 4, 1.0)
    again = run_job(JobRequest(image=cat, spec=run.spec, mask=mask))     # re-run from history
    assert open_store().get_run(again.run_id).spec == run.spec
    assert np.array_equal(again.outputs[0], first.outputs[0])


def test_fast_run_without_its_lora_is_recorded_failed_with_one_line(chelsea, tiny_inpaint, tmp_path,
                                                                     monkeypatch):
    only_model = tmp_path / "weights"                  # the tiny model, but no LoRA / TAESD
    shutil.copytree(tiny_inpaint, only_model / Path(tiny_inpaint).name)
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(only_model))
    cat = LoadedImage(rgb=chelsea, format="PNG")
    with pytest.raises(Exception) as err:
        run_job(JobRequest(image=cat, spec=fast_spec(), mask=ellipse(*chelsea.shape[:2])))
    message = str(err.value)
    assert "\n" not in message and "tiny-lcm" in message and "models download" in message
    [run] = open_store().list_runs().runs
    assert run.status == "failed" and run.error == message and run.outputs == ()


def test_editor_fast_choice_sets_the_sampler_and_shows_the_painting_forming(monkeypatch, tiny_sam,
                                                                           tiny_fast):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    monkeypatch.setattr(inpaint.preview, "PREVIEW_INTERVAL", 0.0)     # every step, so 4 steps show some
    at = sample_clicked()
    assert at.session_state["mode"] == "quality"               # BACKDROP_MODE=quality in tests
    at.segmented_control(key="mode").set_value("fast").run()
    ss = at.session_state
    assert (ss["steps"], ss["guidance"], ss["scheduler"]) == (4, 1.0, "lcm")   # follow the mode
    at.slider(key="steps").set_value(3).run()                  # the advanced settings still win
    at.text_area(key="prompt").input("a beach at dusk").run()
    [generate] = [b for b in at.button if b.label == "Generate"]
    generate.click().run()
    task = at.session_state["job"]
    wait_until(at, lambda a: a.session_state["result"] is not None, 120, "the fast run's result", poll=0.2)
    assert not at.exception and at.session_state["result"] is not None, at.session_state["job_notice"]
    assert task.live.get("jpeg", b"").startswith(b"\xff\xd8")  # a JPEG of the painting arrived
    run = open_store().get_run(at.session_state["result"]["run_id"])
    assert (run.spec.generation.mode, run.spec.generation.steps) == ("fast", 3)
    assert S.MODE_LABELS[run.spec.generation.mode] == "Fast"
