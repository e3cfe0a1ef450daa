"""Models & settings page through AppTest: the registry table, presence, device, downloads (with
the one-line error offline; a real one from a local server cancelled, then resumed) and the session
defaults the Editor then uses."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import re
import threading
import time
from pathlib import Path

import pytest

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import open_page, no_exception, sample_clicked, wait_until  # noqa: E402
from ui.widgets import escape_md  # noqa: E402

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def models_app() -> AppTest:
    return open_page("pages/models.py")


@pytest.fixture
def tiny_env(monkeypatch, tiny_sam, tiny_inpaint):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")


def test_lists_every_model_with_presence_and_path(tiny_env, weights_dir):
    from core import weights

    at = models_app()
    assert at.title[0].value == "Models & settings"
    from ui import models as um
    seg, inp = at.dataframe[um.TASKS.index("segment")].value, at.dataframe[um.TASKS.index("inpaint")].value
    assert set(seg["Model"]) == {s.name for s in weights.specs("segment")}
    assert set(inp["Model"]) == {s.name for s in weights.specs("inpaint")}
    row = seg.set_index("Model")
    assert row.loc["tiny", "On this machine"] == "✓ ready"
    assert row.loc["grabcut", "On this machine"] == "✓ ready"
    assert row.loc["sam-vit-b", "On this machine"] == "not downloaded"
    assert row.loc["sam-vit-b", "Download size"] == "375.0 MB"
    assert row.loc["sam-vit-b", "File"] == "sam_vit_b_01ec64.pth"       # the folder is said once:
    assert any(str(weights_dir) in c.value.replace("\\", "") for c in at.caption)   # a narrow column
    assert inp.set_index("Model").loc["tiny", "On this machine"] == "✓ ready"
    assert at.metric[0].value in ("CPU", "GPU")
    labels = [b.label for b in at.button]
    assert "Download sam-vit-b" in labels and "Download tiny" not in labels
    assert "Download grabcut" not in labels


@pytest.fixture
def empty_weights(monkeypatch, tmp_path):
    """A new user's machine: an empty weights folder."""
    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv("BACKDROP_WEIGHTS_DIR", str(folder))
    return folder


def starter_lines(at: AppTest) -> list[str]:
    """The starter set's lines: [(name, status)]."""
    [block] = [m.value.replace("\xa0", " ") for m in at.markdown
               if "· to\xa0download" in m.value or "· ready" in m.value]
    return [(line.split("**")[1], line.rsplit("· ", 1)[1]) for line in block.split("  \n")]


def shown_text(at: AppTest) -> str:
    """Every piece of text the page shows (no widget internals)."""
    parts = [e.value for kind in ("title", "header", "subheader", "markdown", "caption", "error",
                                  "warning", "info", "success", "text") for e in getattr(at, kind)]
    return "\n".join(str(p) for p in parts) + "\n" + "\n".join(b.label for b in at.button)


def test_offline_starter_download_is_one_plain_line_with_the_folders_to_fill_by_hand(empty_weights,
                                                                                      monkeypatch):
    """HF_HUB_OFFLINE=1 (conftest): the real models cannot be fetched. The page says so in one
    plain line where the button was, with where each model's files go by hand; no class names."""
    from core import weights

    monkeypatch.setenv("BACKDROP_MODE", "fast")
    at = models_app()
    assert starter_lines(at) == [(n, "to download") for n in ("sam2-tiny", "sd15-inpainting", "lcm-sd15", "taesd")]
    at.button(key="dl-starter").click().run()
    wait_for_download(at, lambda: at.session_state["download"] is None)
    assert [e.value for e in at.error] == ["Can't reach the model host — offline?"]
    by_hand = [t.value for t in at.text]
    for name in ("sam2-tiny", "sd15-inpainting", "lcm-sd15", "taesd"):
        folder = str(weights.local_path(weights.get_spec(name, "fast" if name in ("lcm-sd15", "taesd")
                                                          else "segment" if name == "sam2-tiny" else "inpaint")))
        assert any(t.startswith(f"{name}: ") and folder in t for t in by_hand), (name, by_hand)
    text = shown_text(at)
    assert "Error" not in text and "Traceback" not in text and "`" not in text
    assert list(empty_weights.iterdir()) == []            # nothing half-made left in the folder
    at.run()
    no_exception(at)
    assert [e.value for e in at.error] == ["Can't reach the model host — offline?"]   # stays in place


def subject_table(at: AppTest):
    from ui import models as um
    titles = [h.value for h in at.subheader][-len(um.TASKS):]        # one per table, in order
    assert titles[um.TASKS.index("subject")].startswith("Find the subject")
    return at.dataframe[um.TASKS.index("subject")].value.set_index("Model")


def test_the_subject_models_are_listed_with_what_find_the_subject_uses(empty_weights):
    """A new machine: the table of "Find the subject" lists the studio method (ready, no download)
    and both BiRefNet models with their size and licence, a Download button each; the page says
    the studio method is what runs until one is downloaded, and how to get one from the shell."""
    at = models_app()
    table = subject_table(at)
    assert list(table.index) == ["studio", "birefnet-lite", "birefnet"]     # tiny: tests only
    assert table.loc["studio", "On this machine"] == "✓ ready" and table.loc["studio", "Download size"] == "none"
    assert (table.loc["birefnet-lite", "Download size"], table.loc["birefnet", "Download size"]) == (
        "178.0 MB", "885.0 MB")
    assert table.loc["birefnet-lite", "On this machine"] == "not downloaded"
    assert "MIT" in table.loc["birefnet-lite", "What it is"] and "MIT" in table.loc["birefnet", "What it is"]
    text = shown_text(at)
    assert "Find the subject uses the studio method" in text
    assert "MIT-licensed" in text
    assert [c.value for c in at.code] == ["python -m core models download birefnet-lite"]
    labels = [b.label for b in at.button]
    assert "Download birefnet-lite" in labels and "Download birefnet" in labels
    at.button(key="dl-subject-birefnet-lite").click().run()       # offline here (conftest)
    wait_for_download(at, lambda: at.session_state["download"] is None)
    at.run()
    no_exception(at)
    assert [e.value for e in at.error] == ["Can't reach the model host — offline?"]


def test_with_birefnet_lite_on_disk_find_the_subject_uses_it(empty_weights):
    from core import weights
    spec = weights.get_spec("birefnet-lite", "subject")
    weights.local_path(spec).mkdir(parents=True)
    (weights.local_path(spec) / "model.safetensors").write_bytes(b"placeholder")   # present, not loaded
    at = models_app()
    assert subject_table(at).loc["birefnet-lite", "On this machine"] == "✓ ready"
    text = shown_text(at)
    assert "Find the subject uses birefnet-lite" in text and "studio method**" not in text
    labels = [b.label for b in at.button]
    assert "Download birefnet-lite" not in labels and "Download birefnet" in labels


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


# -- a real download from a local (slow) HTTP server: cancel keeps the partial, the next one resumes

PAYLOAD = bytes(range(256)) * 8192                    # 2 MB, sent in 64 KiB chunks 40 ms apart
RANGES: list = []


class _SlowRangeHandler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError):   # the app cancelled: the client went away
            pass

    def do_GET(self):
        rng = self.headers.get("Range")
        RANGES.append(rng)
        start = int(rng[len("bytes="):-1]) if rng else 0
        body = PAYLOAD[start:]
        self.send_response(206 if start else 200)
        if start:
            self.send_header("Content-Range", f"bytes {start}-{len(PAYLOAD) - 1}/{len(PAYLOAD)}")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        for i in range(0, len(body), 1 << 16):
            self.wfile.write(body[i:i + (1 << 16)])
            self.wfile.flush()
            time.sleep(0.04 if not start else 0)


@pytest.fixture
def slow_sam(monkeypatch, weights_dir):
    """sam-vit-b served by a slow local server that honours Range; its files removed afterwards."""
    from core import weights

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _SlowRangeHandler)
    httpd.daemon_threads = True
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    spec = dataclasses.replace(weights.get_spec("sam-vit-b", "segment"),
                               sha256=hashlib.sha256(PAYLOAD).hexdigest(), size_bytes=len(PAYLOAD))
    monkeypatch.setitem(weights.REGISTRY, ("segment", "sam-vit-b"), spec)
    monkeypatch.setenv("BACKDROP_SAM_URL_BASE", f"http://127.0.0.1:{httpd.server_address[1]}/")
    monkeypatch.setenv("BACKDROP_SEGMENTER", "grabcut")
    RANGES.clear()
    path = weights.local_path(spec)
    yield path
    httpd.shutdown()
    httpd.server_close()
    path.unlink(missing_ok=True)
    weights.partial_path(path).unlink(missing_ok=True)


def wait_for_download(at: AppTest, until, timeout: float = 30) -> None:
    if not until():
        wait_until(at, lambda _: until(), timeout, "the download's state", poll=0.1)


def test_cancel_stops_the_download_and_the_next_one_resumes(slow_sam):
    from core import weights
    from ui.widgets import escape_md

    at = models_app()
    next(b for b in at.button if b.label == "Download sam-vit-b").click().run()
    no_exception(at)
    task = at.session_state["download"]
    wait_for_download(at, lambda: task.fraction > 0.05)
    next(b for b in at.button if b.label == "Cancel download").click().run()
    wait_for_download(at, lambda: at.session_state["download"] is None)
    assert task.cancelled and task.elapsed < 10              # the whole file would take ~1.3 s more
    assert [i.value for i in at.info] == [escape_md("Download of sam-vit-b stopped. What was fetched is "
                                                    "kept: download again to go on from there.")]
    assert re.fullmatch(r"download of sam_vit_b_01ec64\.pth cancelled; [\d.]+ MB kept to resume", task.error)
    kept = weights.partial_path(slow_sam).stat().st_size
    assert 0 < kept < len(PAYLOAD) and not slow_sam.exists()

    at.run()
    next(b for b in at.button if b.label == "Download sam-vit-b").click().run()
    wait_for_download(at, lambda: at.session_state["download"] is None)
    assert [s.value for s in at.success] == [escape_md("Downloaded sam-vit-b: ready.")]
    assert RANGES == [None, f"bytes={kept}-"] and slow_sam.read_bytes() == PAYLOAD
    assert not weights.partial_path(slow_sam).exists()


# -- a new user: from the Models page to a finished AI run, with the tiny models standing in

def tiny_machine(monkeypatch, mode: str = "fast") -> None:
    """This machine's registry points at the tiny models, and Fast is the default mode."""
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    monkeypatch.setenv("BACKDROP_MODE", mode)


def generate_button(at: AppTest):
    [button] = [b for b in at.button if b.label == "Generate"]
    return button


@pytest.mark.slow
def test_starter_set_in_one_press_then_a_fast_run_in_the_editor(empty_weights, monkeypatch):
    from core.history import open_store
    from ui.widgets import escape_md

    tiny_machine(monkeypatch)
    at = models_app()
    assert [n for n, _ in starter_lines(at)] == ["tiny", "tiny", "tiny-lcm", "tiny-taesd"]
    at.button(key="dl-starter").click().run()
    wait_for_download(at, lambda: at.session_state["download"] is None, timeout=180)
    assert escape_md("Downloaded the starter set: ready.") in [s.value for s in at.success]
    at.run()
    assert {status for _, status in starter_lines(at)} == {"ready"}
    assert "dl-starter" not in [b.key for b in at.button]

    at.switch_page("pages/editor.py").run()
    no_exception(at)
    sample_clicked(at=at)
    assert at.session_state["mode"] == "fast" and not at.warning
    at.text_area(key="prompt").input("a beach").run()
    generate_button(at).click().run()
    wait_for_download(at, lambda: at.session_state["result"] is not None, timeout=180)
    run = open_store().get_run(at.session_state["result"]["run_id"])
    assert run.status == "succeeded" and run.spec.generation.mode == "fast"
    assert run.spec.generation.lora == "tiny-lcm"


@pytest.fixture
def model_without_addons(empty_weights, monkeypatch, tiny_sam, tiny_inpaint):
    """The tiny segmenter and inpainting model on disk, but not the Fast-mode add-ons."""
    import shutil
    shutil.copy(tiny_sam, empty_weights / Path(tiny_sam).name)
    shutil.copytree(tiny_inpaint, empty_weights / Path(tiny_inpaint).name)
    tiny_machine(monkeypatch)
    return empty_weights


def editor_with_subject() -> AppTest:
    at = sample_clicked()
    at.text_area(key="prompt").input("a beach").run()
    return at


def test_editor_names_the_missing_addons_before_generate_and_starts_nothing(model_without_addons):
    from core.history import open_store

    at = editor_with_subject()
    [warning] = [w.value for w in at.warning]
    assert warning == "Before you generate, get tiny-lcm and tiny-taesd (Fast mode's add-ons): built in code, quick."
    assert at.button(key="get-run-needs").label == "Download them (built in code, quick)"
    assert at.button(key="run-quality").label == "Run in Quality instead"
    assert generate_button(at).disabled
    at.session_state["autorun"] = True              # History's Re-run asks past the button
    at.run()
    no_exception(at)
    assert at.session_state["job"] is None
    assert "tiny-lcm and tiny-taesd" in " ".join(e.value for e in at.error)
    assert not open_store().list_runs().runs         # no failed run in History


def test_editor_run_in_quality_needs_no_addons(model_without_addons):
    at = editor_with_subject()
    at.button(key="run-quality").click().run()
    no_exception(at)
    assert at.session_state["mode"] == "quality" and at.session_state["steps"] == 30
    assert not at.warning and not generate_button(at).disabled


def test_editor_downloads_the_missing_addons_in_place(model_without_addons):
    from core import weights

    at = editor_with_subject()
    at.button(key="get-run-needs").click().run()
    wait_for_download(at, lambda: at.session_state["download"] is None, timeout=120)
    at.run()
    no_exception(at)
    assert weights.is_present(weights.get_spec("tiny-lcm", "fast"))
    assert weights.is_present(weights.get_spec("tiny-taesd", "fast"))
    assert not at.warning and not generate_button(at).disabled


def test_editor_offers_quality_when_fast_mode_has_no_addons_for_the_model(monkeypatch, tmp_path, tiny_sam,
                                                                          tiny_inpaint):
    """A Stable Diffusion 2.x model (cross_attention_dim 1024) has no LCM-LoRA: said before Generate."""
    import json
    import shutil
    from core.history import open_store

    folder = tmp_path / "sd2-like"
    shutil.copytree(tiny_inpaint, folder)
    cfg = folder / "unet" / "config.json"
    cfg.write_text(json.dumps({**json.loads(cfg.read_text()), "cross_attention_dim": 1024}))
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", str(folder))
    monkeypatch.setenv("BACKDROP_MODE", "fast")
    at = editor_with_subject()
    assert [w.value for w in at.warning] == [escape_md(f"Fast mode has no add-ons for {folder}: run it in Quality.")]
    assert generate_button(at).disabled and not open_store().list_runs().runs
    at.button(key="run-quality").click().run()
    no_exception(at)
    assert at.session_state["mode"] == "quality" and not at.warning and not generate_button(at).disabled


def test_a_session_that_starts_on_the_models_page_shows_it_without_an_error():
    """A bookmark or a reload of /models is a new session's first page: the Editor's widgets (the
    Fast/Quality control) never ran, and the page must not count on their keys."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    at.switch_page("pages/models.py")
    at.run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("Get started on this machine" in s.value for s in at.subheader)
