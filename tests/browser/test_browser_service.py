"""Client mode in a real Chromium: `streamlit run` with BACKDROP_SERVER_URL pointing at the running
service (tests/conftest.py `service`), a photo uploaded through the page, then clicks timed from
the click event to the new overlay painted (bench/browser_click.py's measurement). The app server
has its own data dir and loads no model: every mask comes from the service's kept embedding.
The bound is loose (the CPU is shared with the Ray cluster); the figures are printed.
Skipped when Chromium or Playwright is missing, except under BACKDROP_REQUIRE_BROWSER=1."""
from __future__ import annotations

import statistics
import sys
import time

import pytest

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Server, bench_module, require_browser
from serve_kit import TOKEN

pytestmark = [pytest.mark.browser, pytest.mark.service]

LOOSE_MS = 5000.0


@pytest.fixture
def bench():
    require_browser()
    with bench_module("browser_click") as module:
        yield module


def test_click_to_overlay_through_the_service(bench, service, tmp_path, tiny_sam):
    from playwright.sync_api import sync_playwright

    from core.segment import SegmentRequest
    from core.service.client import ServiceClient

    photo = bench._photo(tmp_path / "coffee-1600x1200.jpg", (1600, 1200))
    env = {"BACKDROP_SERVER_URL": service["url"], "BACKDROP_API_TOKEN": TOKEN,
           "BACKDROP_DATA_DIR": str(tmp_path / "app-data"),
           "BACKDROP_WEIGHTS_DIR": str(tmp_path / "no-weights"),     # the app needs none
           "BACKDROP_SEGMENTER": "tiny", "HF_HUB_OFFLINE": "1"}
    srv = Server(env, tmp_path / "app.log")
    try:
        srv.wait_healthy()
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
            try:
                app = bench.measure_app(browser, srv, photo, 3,
                                        screenshot=ARTIFACTS / "service-click.png")
            finally:
                browser.close()
    except Exception:
        print(srv.log_tail(), file=sys.stderr)
        raise
    finally:
        srv.stop()
    assert len(app["ms"]) == 3 and all(v > 0 for v in app["ms"])
    assert app["median_ms"] < LOOSE_MS, app
    log = (tmp_path / "app.log").read_text(errors="replace")
    assert "Traceback" not in log, log[-3000:]
    assert not (tmp_path / "no-weights").exists() or not any((tmp_path / "no-weights").iterdir())

    # what the service spends per click, seen from a client: POST /v1/segment by handle
    import cv2
    rgb = cv2.cvtColor(cv2.imread(str(photo)), cv2.COLOR_BGR2RGB)
    with ServiceClient(service["url"], TOKEN, timeout=120) as c:
        handle = c.embed(photo=photo.read_bytes(), segmenter="tiny")["embedding"]
        times = []
        for i in range(5):
            t = time.perf_counter()
            out = c.segment(SegmentRequest(clicks=((700.0 + 20 * i, 500.0, 1),)), embedding=handle,
                            size=(896, 672))
            times.append((time.perf_counter() - t) * 1000)
            assert out["embedded"] is False and out["masks"].shape[1:] == (672, 896)
    assert rgb.shape[:2] == (1200, 1600)
    print(f"\nclient mode, 1600x1200 photo, tiny SAM: click -> overlay painted median "
          f"{app['median_ms']:.0f} ms {app['ms']} (first click {app['first_click_wall_s']} s incl. "
          f"the embedding); POST /v1/segment by handle median {statistics.median(times):.0f} ms "
          f"{[round(t) for t in times]}")
