"""Client mode of the app (BACKDROP_SERVER_URL set: core.engine.remote.RemoteEngine): the Editor
through Streamlit's AppTest against the running service (tests/conftest.py `service`: one Ray
cluster per session, tiny models, a bearer token). The app's data dir is the test's own, not the service's: clicks are segmented and
runs made and recorded by the service; this process loads no model and writes no run.

Clicks go through the handler the image component's callback uses (ui.canvas.apply_canvas_value),
as in tests/test_app_editor.py."""
from __future__ import annotations

import io
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
pytest.importorskip("httpx")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import button, no_exception, wait_until  # noqa: E402

from serve_kit import TOKEN, free_port  # noqa: E402
from core.engine import get_engine  # noqa: E402
from core.engine.remote import EMBEDDINGS_KEY, RemoteEngine  # noqa: E402
from ui import canvas  # noqa: E402
from ui import state as S  # noqa: E402

pytestmark = pytest.mark.service

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")
RUN_TIMEOUT = 120


@pytest.fixture
def client_env(monkeypatch, service, tiny_sam):
    monkeypatch.setenv("BACKDROP_SERVER_URL", service["url"])
    monkeypatch.setenv("BACKDROP_API_TOKEN", TOKEN)
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    from core.segment import clear_segmenters
    clear_segmenters()          # whatever other tests loaded in this process
    return service


def png_bytes(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()



def captions(at: AppTest) -> str:
    return "\n".join(c.value for c in at.caption)


def one_line_errors(at: AppTest) -> list[str]:
    errors = [e.value for e in at.error]
    for line in errors:
        assert "\n" not in line and "Traceback" not in line, line
    return errors


def open_cat(chelsea) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=RUN_TIMEOUT).run()
    no_exception(at)
    at.file_uploader(key="upload").set_value(("cat.png", png_bytes(chelsea), "image/png")).run()
    no_exception(at)
    assert at.session_state["photo"] is not None
    return at


def click_centre(at: AppTest, t: int = 1) -> None:
    w, h = at.session_state["preview"].rgb.shape[1::-1]
    assert canvas.apply_canvas_value(at.session_state, {"x": w / 2, "y": h / 2, "width": w,
                                                        "height": h, "unix_time": t})
    at.run()
    no_exception(at)


def service_client():
    from core.service.client import ServiceClient
    return ServiceClient(get_engine().url, TOKEN, timeout=120)


# ---------------------------------------------------------------------------------------------
def test_click_is_segmented_by_the_service_from_its_embedding(client_env, chelsea):
    from core.segment import SegmentRequest, loaded_segmenters

    assert isinstance(get_engine(), RemoteEngine)
    at = open_cat(chelsea)
    image = at.session_state["photo"]
    assert any("Backdrop service" in c.value for c in at.sidebar.caption)
    # the photo was sent once, in the background, for its embedding
    task = at.session_state["prepare"]
    assert task is not None and task.wait(120) and task.error is None, task.error
    handle = at.session_state[EMBEDDINGS_KEY][(image.hash, "tiny")]
    assert handle == f"tiny:{image.hash}" and task.result == handle

    t = time.perf_counter()
    click_centre(at)
    click_s = time.perf_counter() - t
    assert not one_line_errors(at)
    assert "Mask ready" in captions(at)
    (result,) = at.session_state["seg_cache"].values()
    pw, ph = at.session_state["preview"].rgb.shape[1::-1]
    assert result.masks.shape[1:] == (ph, pw) and result.masks.dtype == bool
    assert len(result.scores) == len(result.masks) and 0 <= result.best < len(result.masks)
    assert result.masks[result.best].any()
    # the candidate thumbnails and the overlay are drawn from it as in embedded mode
    assert at.radio(key=f"cand-{next(iter(at.session_state['seg_cache']))}") is not None
    # no model in this process: the service did the work, from the embedding it holds
    assert loaded_segmenters() == []
    with service_client() as c:
        again = c.segment(SegmentRequest(clicks=((225.0, 150.0, 1),)), embedding=handle, size=(pw, ph))
    assert again["embedded"] is False
    print(f"\nclick -> mask through the service (AppTest rerun included): {click_s * 1000:.0f} ms")

    # a second click (remove) stays on the same handle and changes the request
    at.session_state["click_mode"] = S.REMOVE
    assert canvas.apply_canvas_value(at.session_state, {"x": 5, "y": 5, "width": pw, "height": ph,
                                                        "unix_time": 2})
    at.run()
    no_exception(at)
    assert not one_line_errors(at) and len(at.session_state["prompts"]) == 2
    assert "Mask ready" in captions(at) and loaded_segmenters() == []


def test_an_embedding_the_service_dropped_is_made_again(client_env, chelsea):
    at = open_cat(chelsea)
    image = at.session_state["photo"]
    assert at.session_state["prepare"].wait(120)
    # a handle the service does not hold (evicted, or its replica restarted)
    at.session_state[EMBEDDINGS_KEY][(image.hash, "tiny")] = "tiny:" + "0" * 64
    click_centre(at)
    assert not one_line_errors(at)
    assert "Mask ready" in captions(at)
    assert at.session_state[EMBEDDINGS_KEY][(image.hash, "tiny")] == f"tiny:{image.hash}"


def test_colour_run_is_made_and_recorded_by_the_service(client_env, chelsea):
    from core import config
    from core.history import open_store
    from core.segment import loaded_segmenters

    at = open_cat(chelsea)
    click_centre(at)
    at.segmented_control(key="bg_kind").set_value(S.BG_COLOR).run()
    at.color_picker(key="bg_color").pick("#00FF00").run()
    no_exception(at)
    button(at, "Generate").click().run()
    no_exception(at)
    assert not one_line_errors(at)
    assert at.session_state["job"] is None or any("Working on the server" in i.value for i in at.info)
    wait_until(at, lambda a: a.session_state["job"] is None, what="the run on the service")
    assert not one_line_errors(at)
    res = at.session_state["result"]
    assert res["remote"] and res["run_id"]
    (out,) = res["outputs"]
    assert out.shape == chelsea.shape and out.dtype == np.uint8
    assert (out == [0, 255, 0]).all(axis=2).mean() > 0.05          # a green background
    assert (out != [0, 255, 0]).any(axis=2).mean() > 0.05          # and the subject kept
    assert any(f"run #{res['run_id']}" in s.value for s in at.success)
    assert [d for d in at.get("download_button")]                   # downloadable like a local run
    assert button(at, f"Open run #{res['run_id']} in History")

    # the run is in the SERVICE's history, with the clicks as the spec's subject...
    with service_client() as c:
        run = c.run(res["run_id"])
        assert run["status"] == "succeeded" and run["source_name"] == "cat.png"
        assert run["spec"]["background"]["color"] == [0, 255, 0]
        assert run["spec"]["subject"]["segmenter"] == "tiny" and run["spec"]["subject"]["clicks"]
        assert run["source"]["hash"] == at.session_state["photo"].hash
        stored = np.asarray(Image.open(io.BytesIO(c.file(run["outputs"][0]["hash"]))))
    assert np.array_equal(stored, out)
    # ...and not in the app's own: this process wrote no run and loaded no model
    assert config.data_dir() != Path(client_env["data"])
    assert not open_store().list_runs(limit=5).runs
    assert loaded_segmenters() == []


def test_background_photo_is_refused_in_client_mode(client_env, chelsea):
    at = open_cat(chelsea)
    click_centre(at)
    at.segmented_control(key="bg_kind").set_value(S.BG_IMAGE).run()
    no_exception(at)
    assert any("background photo cannot be used" in w.value for w in at.warning)
    assert not [u for u in at.get("file_uploader") if u.proto.label == "Background photo"]
    assert button(at, "Generate").disabled


def test_service_down_is_one_line_error(monkeypatch, tiny_sam, chelsea):
    monkeypatch.setenv("BACKDROP_SERVER_URL", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("BACKDROP_API_TOKEN", TOKEN)
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")
    at = open_cat(chelsea)
    assert at.session_state["prepare"].wait(60)
    at.run()
    no_exception(at)
    assert any("cannot reach the Backdrop service" in w.value for w in at.warning)
    click_centre(at)
    errors = one_line_errors(at)
    assert len(errors) == 1 and "cannot reach the Backdrop service" in errors[0], errors
    assert at.session_state["seg_cache"] == {}
    # a run cannot start either: one line, no exception
    at.segmented_control(key="bg_kind").set_value(S.BG_COLOR).run()
    button(at, "Generate").click().run()
    no_exception(at)
    wait_until(at, lambda a: a.session_state["job"] is None, timeout=60, what="the failed run")
    # the run's outcome (and the clicks' mask, still not found): the same one line
    errors = one_line_errors(at)
    assert 1 <= len(errors) <= 2 and all("cannot reach the Backdrop service" in e for e in errors), errors
    assert at.session_state["job_notice"][0] == "error" and at.session_state["result"] is None


def test_embedded_mode_imports_no_client(tmp_path):
    """Without BACKDROP_SERVER_URL the editor runs as before: a click is segmented in-process and
    neither httpx nor Ray is imported (a fresh interpreter, so other tests' imports do not count)."""
    import os
    import subprocess
    import sys
    code = f"""
import sys
from streamlit.testing.v1 import AppTest
from core.engine import get_engine
from core.engine.local import LocalEngine
from core.engine.remote import EMBEDDINGS_KEY
from ui import canvas
assert isinstance(get_engine(), LocalEngine)
at = AppTest.from_file({APP!r}, default_timeout=120).run()
at.button(key="sample-Cat").click().run()
assert at.session_state["prepare"].wait(120)
canvas.apply_canvas_value(at.session_state, {{"x": 225, "y": 150, "width": 451, "height": 300, "unix_time": 1}})
at.run()
assert not at.exception and not at.error, [e.value for e in (*at.exception, *at.error)]
assert "Mask ready" in "\\n".join(c.value for c in at.caption)
assert EMBEDDINGS_KEY not in at.session_state
print("httpx" in sys.modules, "ray" in sys.modules)
"""
    env = {k: v for k, v in os.environ.items() if k not in ("BACKDROP_SERVER_URL", "BACKDROP_API_TOKEN")}
    env["BACKDROP_SEGMENTER"] = "grabcut"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split()[-2:] == ["False", "False"], out.stdout


def test_wrong_token_is_one_line_error(client_env, monkeypatch, chelsea):
    monkeypatch.setenv("BACKDROP_API_TOKEN", "not-the-token")
    at = open_cat(chelsea)
    assert at.session_state["prepare"].wait(60)
    click_centre(at)
    errors = one_line_errors(at)
    assert len(errors) == 1 and "token" in errors[0], errors
    assert at.session_state["seg_cache"] == {}
