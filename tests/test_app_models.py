"""Models & settings page through AppTest: the registry table, presence, device, downloads (with
the one-line error offline) and the session defaults the Editor then uses."""
from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


def no_exception(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def models_app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page("pages/models.py").run()
    no_exception(at)
    return at


@pytest.fixture
def tiny_env(monkeypatch, tiny_sam, tiny_inpaint):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")


def test_lists_every_model_with_presence_and_path(tiny_env, weights_dir):
    from core import weights

    at = models_app()
    assert at.title[0].value == "Models & settings"
    seg, inp = at.dataframe[0].value, at.dataframe[1].value
    assert set(seg["Model"]) == {s.name for s in weights.specs("segment")}
    assert set(inp["Model"]) == {s.name for s in weights.specs("inpaint")}
    row = seg.set_index("Model")
    assert row.loc["tiny", "On this machine"] == "✓ ready"
    assert row.loc["grabcut", "On this machine"] == "✓ ready"
    assert row.loc["sam-vit-b", "On this machine"] == "not downloaded"
    assert row.loc["sam-vit-b", "Download size"] == "375.0 MB"
    assert row.loc["sam-vit-b", "Local path"] == str(weights_dir / "sam_vit_b_01ec64.pth")
    assert inp.set_index("Model").loc["tiny", "On this machine"] == "✓ ready"
    assert at.metric[0].value in ("CPU", "GPU")
    labels = [b.label for b in at.button]
    assert "Download sam-vit-b" in labels and "Download tiny" not in labels
    assert "Download grabcut" not in labels


def test_download_failure_is_one_line_and_page_keeps_working(tiny_env, monkeypatch):
    from core import weights
    from core.errors import DownloadError

    def offline(name, task, progress=None, **_):
        progress and progress(10, 100)
        time.sleep(0.2)
        raise DownloadError(f"cannot download {name}: network unreachable (offline?)")

    monkeypatch.setattr(weights, "download", offline)
    at = models_app()
    next(b for b in at.button if b.label == "Download sam-vit-b").click().run()
    no_exception(at)
    end = time.monotonic() + 30
    while at.session_state["download"] is not None and time.monotonic() < end:
        time.sleep(0.2)
        at.run()
    errors = [e.value for e in at.error]
    assert errors == ["Download of sam-vit-b failed: cannot download sam-vit-b: network unreachable (offline?)"]
    at.run()
    no_exception(at)
    assert not at.error                      # shown once, the page goes on


def test_defaults_chosen_here_are_used_by_the_editor(tiny_env):
    at = models_app()
    at.selectbox(key="default_segmenter").set_value("grabcut").run()
    no_exception(at)
    assert at.session_state["segmenter"] == "grabcut"
    at.switch_page("pages/editor.py").run()
    no_exception(at)
    assert at.sidebar.selectbox(key="seg_pick").value == "grabcut"
    at.button(key="sample-Cat").click().run()
    no_exception(at)
    assert "segmentation: grabcut" in "\n".join(c.value for c in at.caption)
