"""Helpers for the real-browser test: find Chromium, run `streamlit run` on a free port, screenshots."""
from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Optional

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


def browser_missing() -> Optional[str]:
    """Why the browser test cannot run here, or None when it can."""
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"Chromium not found at {CHROMIUM} (Debian: apt-get install chromium)"
    return None


def require_browser() -> None:
    """Skip the calling test when Chromium or Playwright is missing; under
    BACKDROP_REQUIRE_BROWSER=1 (CI) fail instead, so a missing browser cannot pass unnoticed."""
    import pytest
    reason = browser_missing()
    if reason:
        if os.environ.get("BACKDROP_REQUIRE_BROWSER") == "1":
            pytest.fail(f"browser test required (BACKDROP_REQUIRE_BROWSER=1) but {reason}")
        pytest.skip(reason)


@contextlib.contextmanager
def bench_module(name: str):
    """Import bench/<name>.py (the benchmarks are scripts, not a package) for the block."""
    import importlib
    folder = str(Path(__file__).resolve().parents[2] / "bench")
    sys.path.insert(0, folder)
    try:
        yield importlib.import_module(name)
    finally:
        sys.path.remove(folder)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`streamlit run <script>` (default the app, streamlit_app.py) as a subprocess on a free port;
    always stop() it (a fixture does). `script` may be any path (bench/browser_click.py runs a bare
    page of only the click component this way); it runs in `cwd`, default this repository."""

    def __init__(self, env: dict[str, str], log_path: Path, script: str | Path = "streamlit_app.py",
                 cwd: Path = ROOT):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", str(script),
             "--server.port", str(self.port), "--server.address", "127.0.0.1",
             "--server.headless", "true", "--browser.gatherUsageStats", "false",
             "--server.fileWatcherType", "none"],
            cwd=cwd, env={**os.environ, **env}, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_healthy(self, timeout: float = 180.0) -> None:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.proc.poll() is not None:
                raise RuntimeError(f"streamlit exited with {self.proc.returncode}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url + "/_stcore/health", timeout=5) as r:
                    if r.status == 200 and r.read().strip() == b"ok":
                        return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"streamlit was not healthy after {timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, n: int = 4000) -> str:
        self._log.flush()
        try:
            return self.log_path.read_bytes()[-n:].decode("utf-8", "replace")
        except OSError:
            return ""

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=20)
        self._log.close()


class Shots:
    """Numbered screenshots of each step under test-artifacts/browser/."""

    def __init__(self, page, folder: Path = ARTIFACTS):
        self.page = page
        self.folder = folder
        self.n = 0
        folder.mkdir(parents=True, exist_ok=True)
        for old in [*folder.glob("[0-9][0-9]-*.png"), folder / "failure.png"]:
            old.unlink(missing_ok=True)

    def __call__(self, name: str) -> Path:
        self.n += 1
        path = self.folder / f"{self.n:02d}-{name}.png"
        self.page.screenshot(path=str(path))
        return path


@contextlib.contextmanager
def grabcut_app(root: Path, log_path: Path):
    """The app with GrabCut (no weights to fetch) on a free port, its data and weights folders
    under `root` (`srv.data` is the data folder), healthy inside the block and stopped after.
    Skips the test without Chromium/Playwright (fails under BACKDROP_REQUIRE_BROWSER=1)."""
    require_browser()
    srv = Server({"BACKDROP_DATA_DIR": str(root / "data"), "BACKDROP_WEIGHTS_DIR": str(root / "weights"),
                  "BACKDROP_SEGMENTER": "grabcut", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                 log_path)
    srv.data = root / "data"
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def keep_failure(page, server: Server, path: Path) -> None:
    """On a failing browser test: what the page showed (best effort) and the server's log tail."""
    try:
        page.screenshot(path=str(path))
    except Exception:
        pass
    print(server.log_tail())


def open_editor(page, url: str, photo: Optional[Path] = None, *, sample: str = "Astronaut",
                timeout_ms: int = 180_000):
    """Open the app at `url` in `page` with a photo in the editor: `photo` (a file) uploaded, else
    the sample `sample` chosen. Waits (up to `timeout_ms`, also set for the page's actions and
    `expect`) until the photo shows in the click component; returns that component's frame."""
    from playwright.sync_api import expect

    from ui.clicker import IFRAME_SELECTOR
    page.set_default_timeout(timeout_ms)
    expect.set_options(timeout=timeout_ms)
    page.goto(url)
    if photo is not None:
        page.locator("input[type=file]").first.set_input_files(str(photo))
    else:
        page.get_by_role("button", name=sample).click()
    frame = page.frame_locator(IFRAME_SELECTOR).first
    expect(frame.locator("img")).to_be_visible()
    return frame
