""""Find the subject" then a refining click, in a real Chromium with GrabCut (no weights): on a
studio shot of a red product with a blue object beside it, the button selects both (the overlay
tints them, the backdrop and the product's shadow stay untinted), and one remove click on the blue
object takes it out while the product stays selected. Screenshots (desktop and phone) go to
test-artifacts/browser/find-subject/."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, grabcut_app, keep_failure

pytestmark = pytest.mark.browser

TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "find-subject"
RED, BLUE, BACKDROP, SHADOW = (300, 310), (625, 400), (60, 60), (300, 478)   # (x, y) in the shot
CLICK = (660, 340)                  # on the blue object, away from where its tint is read (the dot)


def shot() -> bytes:
    """800x600 PNG: a red product on a white sweep with a soft shadow, a blue object beside it."""
    import cv2
    rgb = np.full((600, 800, 3), 246, np.uint8)
    shade = np.zeros((600, 800), np.float32)
    cv2.ellipse(shade, (300, 478), (150, 14), 0, 0, 360, 1.0, -1)
    shade = cv2.GaussianBlur(shade, (0, 0), 10)
    rgb = (rgb * (1 - 0.35 * shade[..., None])).astype(np.uint8)
    rgb[150:470, 200:400] = (170, 25, 30)
    rgb[300:420, 600:700] = (30, 60, 190)
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG")
    return buf.getvalue()


def shown(img) -> np.ndarray:
    """The picture the photo component shows (its JPEG data URL), as RGB at 800x600."""
    src = img.get_attribute("src")
    data = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB").resize((800, 600)), dtype=np.int16)


def tinted(picture: np.ndarray, original: np.ndarray, xy) -> bool:
    """The overlay changed the colour around (x, y): the mask covers it."""
    x, y = xy
    return float(np.abs(picture[y - 4:y + 5, x - 4:x + 5] - original[y - 4:y + 5, x - 4:x + 5]).mean()) > 12


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with grabcut_app(tmp_path_factory.mktemp("find-subject"), SHOTS / "server.log") as srv:
        yield srv


def test_find_the_subject_then_a_remove_click(server, tmp_path):
    from playwright.sync_api import expect, sync_playwright

    from ui.clicker import IFRAME_SELECTOR

    SHOTS.mkdir(parents=True, exist_ok=True)
    (tmp_path / "shot.png").write_bytes(shot())
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
