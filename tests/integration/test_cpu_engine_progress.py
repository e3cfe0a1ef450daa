"""The one-off preparation of the CPU engine (core/cpu_engine.py, docs/cpu.md) as a user sees it:
the editor's progress area says "Preparing the CPU engine, once (~N s): UNet, 1 of 4" while the
first run converts the tiny model, the CLI prints one line per component on stderr, and the next
run (engine cached) shows nothing of it."""
from __future__ import annotations

import shutil
import threading
from pathlib import Path

import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

ov = pytest.importorskip("openvino", reason="openvino not installed (pip install -r requirements.txt)")

import waiting  # noqa: E402
from apptest_kit import button, no_exception, sample_clicked, wait_until  # noqa: E402
from cli_kit import cli  # noqa: E402
from ui import state as S  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
# the CLI's preparation lines (after "preparing the CPU engine, once (~N s): "), in order
PARTS = ["UNet, 1 of 4", "text encoder, 2 of 4", "image encoder, 3 of 4", "image decoder, 4 of 4"]
pytestmark = pytest.mark.usefixtures("one_torch_thread")     # tests/integration/conftest.py


@pytest.fixture
def fresh_weights(tmp_path, tiny_inpaint, monkeypatch):
    """The tiny models in a weights folder of their own (no CPU engine cached for them yet), with
    BACKDROP_CPU_BACKEND=openvino."""
    weights = tmp_path / "weights"
    shutil.copytree(tiny_inpaint, weights / Path(tiny_inpaint).name)
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", "openvino")
    return weights


def _progress_texts(at) -> list[str]:
    return [p.proto.text for p in at.get("progress")]


def test_editor_shows_the_preparation_then_paints(monkeypatch, fresh_weights):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")        # no image encoder to convert
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    gate, converted = threading.Event(), []
    convert = ov.convert_model

    def held(*args, **kw):          # the real conversion, held until the page has been looked at
        converted.append(1)
        gate.wait(120)
        return convert(*args, **kw)

    monkeypatch.setattr(ov, "convert_model", held)
    at = sample_clicked()
    assert at.session_state["bg_kind"] == S.BG_SD                # the AI scene: the default
    at.text_area(key="prompt").input("a quiet harbour").run()
    try:
        button(at, "Generate").click().run()
        no_exception(at)
        task = at.session_state["job"]
        assert task is not None, [e.value for e in at.error]
        waiting.wait_until(lambda: task.stage.startswith("preparing"), 120, "the preparation stage",
                           poll=0.05)
        at.run()
        [text] = _progress_texts(at)
        assert text.startswith("Preparing the CPU engine, once (~") and ": UNet, 1 of 4…" in text, text
    finally:
        gate.set()
    wait_until(at, lambda a: a.session_state["result"] is not None, 180, "the run's result")
    assert not at.error and at.session_state["result"]["outputs"]
    assert len(converted) == 4                       # UNet, text encoder, VAE encoder and decoder
    converted.clear()
    button(at, "Generate").click().run()
    wait_until(at, lambda a: a.session_state["job"] is None and a.session_state["result"] is not None,
               180, "the second run's result")
    assert converted == [] and not at.error          # read back from the cache: nothing to prepare


def test_cli_prints_the_preparation_once(fresh_weights, tmp_path, chelsea):
    photo = tmp_path / "cat.png"
    Image.fromarray(chelsea).save(photo)
    run = ["replace", photo, "--point", "220,150", "--segmenter", "grabcut", "--background", "sd",
           "--prompt", "a quiet harbour", "--model", "tiny", "--mode", "quality", "--steps", "2"]
    first = cli(*run, "--out", tmp_path / "a.png")
    lines = first.stderr.splitlines()
    assert [line.split(": ", 1)[1] for line in lines] == PARTS, lines
    assert all(line.startswith("preparing the CPU engine, once (~") for line in lines)
    assert first.stdout.startswith("wrote ")
    again = cli(*run, "--out", tmp_path / "b.png")
    assert again.stderr == "" and again.stdout.startswith("wrote ")


def test_editor_says_when_the_click_models_engine_was_prepared(monkeypatch, tmp_path):
    """The first page with the click model under BACKDROP_CPU_BACKEND=openvino converts its image
    encoder once and says so (a toast: ready, prepared once); the next page, cached, says nothing."""
    from core import tiny
    from core.segment import clear_segmenters
    weights = tmp_path / "weights"
    tiny.build_tiny_sam(weights / "sam_tiny.pth")
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(weights))
    monkeypatch.setenv("BACKDROP_CPU_BACKEND", "openvino")
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    toasts = []
    try:
        for _ in range(2):
            clear_segmenters()
            at = AppTest.from_file(APP, default_timeout=180).run()
            no_exception(at)
            toasts.append([t.value for t in at.toast])
    finally:
        clear_segmenters()          # later tests count the segmenters loaded in this process
    assert len(toasts[0]) == 1 and toasts[0][0].startswith("The CPU engine is ready (prepared once in ")
    assert toasts[1] == []
    assert list((weights / "cpu-engine").glob("sam-encoder-*/model.xml"))


def test_batch_prints_the_preparation_once(fresh_weights, tmp_path, chelsea):
    """`batch` with an AI background on two workers: the four preparation lines once on stderr, the
    photos done; run again on new photos (engine cached): no preparation line."""
    for folder in ("in1", "in2"):
        for k in range(2):
            (tmp_path / folder).mkdir(exist_ok=True)
            Image.fromarray(chelsea).save(tmp_path / folder / f"cat{k}.png")
    run = ["--rel-point", "0.5,0.5", "--segmenter", "grabcut", "--background", "sd", "--prompt",
           "a quiet harbour", "--model", "tiny", "--mode", "quality", "--steps", "2", "--workers", "2"]
    first = cli("batch", tmp_path / "in1", "--out", tmp_path / "out1", *run)
    lines = [line for line in first.stderr.splitlines() if line.startswith("preparing the CPU engine")]
    assert [line.split(": ", 1)[1] for line in lines] == PARTS, first.stderr
    assert "2 done" in first.stdout
    again = cli("batch", tmp_path / "in2", "--out", tmp_path / "out2", *run)
    assert "preparing" not in again.stderr and "2 done" in again.stdout
