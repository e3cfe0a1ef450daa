"""A reload keeps the work, in a real browser (`streamlit run` + Playwright + Chromium): upload a
studio shot, "Find the subject", one remove click that takes the object beside the product out,
type a prompt, reload the page: the photo, the subject found with its click (the same mask area
tinted on the photo, and the mask's caption) and the prompt are there, and the URL still carries
the page's id; the same link on a phone shows the same. One server (GrabCut: no weights).
Skipped when Chromium or Playwright is missing, except under BACKDROP_REQUIRE_BROWSER=1 (CI),
where that fails. Screenshots: test-artifacts/browser/reload/."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest
from PIL import Image

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, grabcut_app, keep_failure, open_editor
from photos import SHADOW, png, shown, studio_shot, tinted
from waiting import wait_until

pytestmark = pytest.mark.browser

TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "reload"
PROMPT = "a lighthouse on a cliff at dusk"
RED, BLUE, BACKDROP = (300, 310), (625, 400), (60, 60)   # (x, y) in the shot (photos.studio_shot)
CLICK = (660, 340)                  # a remove click on the blue object, away from where BLUE is read
MASK = re.compile(r"Mask ready: .*\(found, 0 add, 1 remove")


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


def product_alone(img, original, page) -> np.ndarray:
    """The picture shown once its overlay tints the product and not the blue object, the
    backdrop or the shadow (the picture may come a moment after the caption)."""
    for _ in range(60):
        picture = shown(img)
        if tinted(picture, original, RED) and not tinted(picture, original, BLUE):
            break
        page.wait_for_timeout(500)
    assert tinted(picture, original, RED) and not tinted(picture, original, BLUE)
    assert not tinted(picture, original, BACKDROP) and not tinted(picture, original, SHADOW)
    return picture


def test_reload_keeps_photo_subject_found_click_and_prompt(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from ui.clicker import IFRAME_SELECTOR

    SHOTS.mkdir(parents=True, exist_ok=True)
    (tmp_path / "shot.png").write_bytes(png(studio_shot()[0]))
    original = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"), dtype=np.int16)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        try:
            img = open_editor(page, server.url, tmp_path / "shot.png", timeout_ms=TIMEOUT_MS).locator("img")
            page.get_by_role("button", name="Find the subject", exact=True).click()
            expect(page.get_by_text(re.compile(r"Mask ready: .*\(found, 0 add, 0 remove"))).to_be_visible()
            page.get_by_text("Remove (exclude)").click()
            box = img.bounding_box()
            img.click(position={"x": box["width"] * CLICK[0] / 800, "y": box["height"] * CLICK[1] / 600})
            expect(page.get_by_text(MASK)).to_be_visible()
            before = product_alone(img, original, page)
            prompt = page.get_by_role("textbox", name="Prompt: describe the new scene")
            prompt.fill(PROMPT)
            prompt.press("Control+Enter")

            session = re.search(r"[?&]s=([0-9a-f]{32})", page.url)
            assert session, page.url                      # the page's id is in its URL
            wait_saved(server.data / "sessions" / f"{session.group(1)}.json",
                       lambda w: w["settings"].get("prompt") == PROMPT and len(w["prompts"]) == 1
                       and w.get("auto"))

            page.reload()
            expect(page.get_by_text(MASK)).to_be_visible()
            expect(page.get_by_text("shot.png · 800×600 px", exact=False)).to_be_visible()
            expect(page.get_by_role("textbox", name="Prompt: describe the new scene")).to_have_value(PROMPT)
            assert session.group(0)[1:] in page.url
            img = page.frame_locator(IFRAME_SELECTOR).first.locator("img")
            after = product_alone(img, original, page)           # the same mask area, tinted again
            assert float(np.abs(after - before).mean()) < 2.0
            page.screenshot(path=str(SHOTS / "after-reload-1440.png"))

            phone = browser.new_page(viewport={"width": 390, "height": 844})   # the same link on a phone
            phone.set_default_timeout(TIMEOUT_MS)
            phone.goto(page.url)
            expect(phone.get_by_text(MASK)).to_be_visible()
            product_alone(phone.frame_locator(IFRAME_SELECTOR).first.locator("img"), original, phone)
            phone.screenshot(path=str(SHOTS / "after-reload-390.png"), full_page=True)
        except Exception:
            keep_failure(page, server, SHOTS / "failure.png")
            raise
        finally:
            browser.close()
