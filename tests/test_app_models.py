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
from apptest_kit import no_exception  # noqa: E402

APP = str(Path(__file__).resolve().parents[1] / "streamlit_app.py")


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
    end = time.monotonic() + timeout
    while not until() and time.monotonic() < end:
        time.sleep(0.1)
        at.run()
    no_exception(at)
    assert until()


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
    assert [i.value for i in at.info] == [escape_md(f"Download of sam-vit-b stopped: {task.error}")]
    assert re.fullmatch(r"download of sam_vit_b_01ec64\.pth cancelled; [\d.]+ MB kept to resume", task.error)
    kept = weights.partial_path(slow_sam).stat().st_size
    assert 0 < kept < len(PAYLOAD) and not slow_sam.exists()

    at.run()
    next(b for b in at.button if b.label == "Download sam-vit-b").click().run()
    wait_for_download(at, lambda: at.session_state["download"] is None)
    assert [s.value for s in at.success] == [escape_md(f"sam-vit-b downloaded to {slow_sam}.")]
    assert RANGES == [None, f"bytes={kept}-"] and slow_sam.read_bytes() == PAYLOAD
    assert not weights.partial_path(slow_sam).exists()
