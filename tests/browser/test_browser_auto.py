""""Find the subject" then a refining click, in a real Chromium with GrabCut (no weights): on a
studio shot of a red product with a blue object beside it, the button selects both (the overlay
tints them, the backdrop and the product's shadow stay untinted), and one remove click on the blue
object takes it out while the product stays selected. Screenshots (desktop and phone) go to
test-artifacts/browser/find-subject/."""
from __future__ import annotations

import re

import numpy as np
import pytest
from PIL import Image

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, grabcut_app, keep_failure
from photos import SHADOW, png, shown, studio_shot, tinted

pytestmark = pytest.mark.browser

TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "find-subject"
RED, BLUE, BACKDROP = (300, 310), (625, 400), (60, 60)   # (x, y) in the shot (photos.studio_shot)
CLICK = (660, 340)                  # on the blue object, away from where its tint is read (the dot)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with grabcut_app(tmp_path_factory.mktemp("find-subject"), SHOTS / "server.log") as srv:
        yield srv


def test_find_the_subject_then_a_remove_click(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from ui.clicker import IFRAME_SELECTOR

    SHOTS.mkdir(parents=True, exist_ok=True)
    (tmp_path / "shot.png").write_bytes(png(studio_shot()[0]))
    original = np.asarray(Image.open(tmp_path / "shot.png").convert("RGB"), dtype=np.int16)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1440, "height": 900})
        try:
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            page.goto(server.url)
            page.locator("input[type=file]").first.set_input_files(str(tmp_path / "shot.png"))
            img = page.frame_locator(IFRAME_SELECTOR).first.locator("img")
            expect(img).to_be_visible()
            page.get_by_role("button", name="Find the subject", exact=True).click()
            expect(page.get_by_text(re.compile(r"Mask ready: .*\(found, 0 add, 0 remove"))).to_be_visible()
            picture = shown(img)
            assert tinted(picture, original, RED) and tinted(picture, original, BLUE)
            assert not tinted(picture, original, BACKDROP) and not tinted(picture, original, SHADOW)
            page.screenshot(path=str(SHOTS / "found-1440x900.png"), full_page=True)

            page.get_by_text("Remove (exclude)").click()
            box = img.bounding_box()
            img.click(position={"x": box["width"] * CLICK[0] / 800, "y": box["height"] * CLICK[1] / 600})
            expect(page.get_by_text(re.compile(r"Mask ready: .*\(found, 0 add, 1 remove"))).to_be_visible()
            expect(page.frame_locator(IFRAME_SELECTOR).first.locator("#spinner")).to_be_hidden()
            for _ in range(60):          # the new picture may come a moment after the caption
                picture = shown(img)
                if not tinted(picture, original, BLUE):
                    break
                page.wait_for_timeout(500)
            assert tinted(picture, original, RED) and not tinted(picture, original, BLUE)
            page.screenshot(path=str(SHOTS / "refined-1440x900.png"), full_page=True)

            phone = browser.new_page(viewport={"width": 390, "height": 844})
            phone.goto(server.url)
            phone.locator("input[type=file]").first.set_input_files(str(tmp_path / "shot.png"))
            expect(phone.frame_locator(IFRAME_SELECTOR).first.locator("img")).to_be_visible()
            phone.get_by_role("button", name="Find the subject", exact=True).click()
            expect(phone.get_by_text(re.compile(r"Mask ready: .*\(found"))).to_be_visible()
            phone.get_by_role("button", name="Find the subject", exact=True).scroll_into_view_if_needed()
            phone.screenshot(path=str(SHOTS / "found-390x844.png"))
        except Exception:
            keep_failure(page, server, SHOTS / "failure.png")
            raise
        finally:
            browser.close()
