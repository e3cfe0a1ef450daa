"""A reload keeps the work, in a real browser (`streamlit run` + Playwright + Chromium): load a
sample, click the subject, type a prompt, reload the page: the photo, the click (the mask's
caption) and the prompt are there, and the URL still carries the page's id. One server (GrabCut:
no weights). Skipped when Chromium or Playwright is missing, except under
BACKDROP_REQUIRE_BROWSER=1 (CI), where that fails. Screenshots: test-artifacts/browser/reload/."""
from __future__ import annotations

import json
import re

import pytest

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, grabcut_app, open_editor
from waiting import wait_until

pytestmark = pytest.mark.browser

TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "reload"
PROMPT = "a lighthouse on a cliff at dusk"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with grabcut_app(tmp_path_factory.mktemp("reload"), SHOTS / "server.log") as srv:
        yield srv


def wait_saved(path, has, timeout: float = 60.0) -> None:
    """Until the page's saved work (the JSON the server writes) holds `has(work)`."""
    def saved():
        try:
            return has(json.loads(path.read_text()))
        except (OSError, ValueError):
            return False
    wait_until(saved, timeout, f"the work saved to {path}", poll=0.2)


def test_reload_keeps_photo_click_and_prompt(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            img = open_editor(page, server.url, sample="Cat", timeout_ms=TIMEOUT_MS).locator("img")
            box = img.bounding_box()
            img.click(position={"x": box["width"] * 0.5, "y": box["height"] * 0.5})
            mask = page.get_by_text(re.compile(r"Mask ready: .*\(1 add, 0 remove\)"))
            expect(mask).to_be_visible()
            prompt = page.get_by_role("textbox", name="Prompt: describe the new scene")
            prompt.fill(PROMPT)
            prompt.press("Control+Enter")

            session = re.search(r"[?&]s=([0-9a-f]{32})", page.url)
            assert session, page.url                      # the page's id is in its URL
            wait_saved(server.data / "sessions" / f"{session.group(1)}.json",
                       lambda w: w["settings"].get("prompt") == PROMPT and len(w["prompts"]) == 1)

            page.reload()
            expect(page.get_by_text(re.compile(r"Mask ready: .*\(1 add, 0 remove\)"))).to_be_visible()
            expect(page.get_by_text("chelsea.png · 451×300 px", exact=False)).to_be_visible()
            expect(page.get_by_role("textbox", name="Prompt: describe the new scene")).to_have_value(PROMPT)
            assert session.group(0)[1:] in page.url
            SHOTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SHOTS / "after-reload-1440.png"))

            phone = browser.new_page(viewport={"width": 390, "height": 844})   # the same link on a phone
            phone.set_default_timeout(TIMEOUT_MS)
            phone.goto(page.url)
            expect(phone.get_by_text(re.compile(r"Mask ready: .*\(1 add, 0 remove\)"))).to_be_visible()
            phone.screenshot(path=str(SHOTS / "after-reload-390.png"), full_page=True)
        finally:
            browser.close()
