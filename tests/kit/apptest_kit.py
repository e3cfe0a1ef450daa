"""Helpers shared by the Streamlit AppTest suites (tests/integration/test_app_*.py)."""
from __future__ import annotations

from pathlib import Path

import waiting

APP = str(Path(__file__).resolve().parents[2] / "streamlit_app.py")


def open_page(page: str):
    """The whole app (streamlit_app.py) run once, then switched to `page` (e.g. "pages/history.py")
    and run, without an uncaught exception."""
    from streamlit.testing.v1 import AppTest
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    at.switch_page(page).run()
    no_exception(at)
    return at


def sample_clicked(sample: str = "Astronaut", x: float = 256, y: float = 200, at=None):
    """The Editor with a sample photo loaded (its button under the photo area) and one click at
    (x, y) of the clickable photo, as the photo component reports it (ui.canvas.apply_canvas_value),
    run without an uncaught exception. `at`: an app already on the Editor; by default the whole app
    (streamlit_app.py) is started."""
    from streamlit.testing.v1 import AppTest
    from ui import canvas, photo
    if at is None:
        at = AppTest.from_file(APP, default_timeout=120).run()
    at.button(key=f"sample-{sample}").click().run()
    width, height = photo.preview_size(at.session_state)       # the photo as the browser shows it
    canvas.apply_canvas_value(at.session_state, {"x": x, "y": y, "width": width, "height": height,
                                                 "unix_time": 1})
    at.run()
    no_exception(at)
    return at


def no_exception(at) -> None:
    """The script ran without an uncaught exception (what a user would see as a traceback)."""
    assert not at.exception, [e.value for e in at.exception]


def wait_until(at, cond, timeout: float = 180.0, what: str = "condition", poll: float = 0.3) -> None:
    """Rerun the app (as the page's polling fragment would) until cond(at) holds (waiting.wait_until)."""
    def ran_and_holds():
        at.run()
        no_exception(at)
        return cond(at)
    waiting.wait_until(ran_and_holds, timeout, what, poll)


def button(at, label: str):
    """The app's button with this label (a clear failure listing the buttons when there is none)."""
    matches = [b for b in at.button if b.label == label]
    assert matches, f"no button {label!r}: {[b.label for b in at.button]}"
    return matches[0]
