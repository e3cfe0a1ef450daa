"""What only a browser shows of the simple backgrounds: the clickable photo turns into the live
preview — transparency on a checkerboard (not white), then the colour typed as hex — with no run
made. One `streamlit run` for the module (no model weights: GrabCut segments). Screenshots go to
test-artifacts/browser/backgrounds/. Skipped without Chromium/Playwright, except under
BACKDROP_REQUIRE_BROWSER=1 (CI)."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Shots, grabcut_app, keep_failure

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "backgrounds"


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with grabcut_app(tmp_path_factory.mktemp("backgrounds-app"), SHOTS / "server.log") as srv:
        yield srv


def decoded(src: str) -> np.ndarray:
    """The canvas <img>'s data: URL as an HxWx3 int array."""
    assert src.startswith("data:image/jpeg;base64,"), src[:40]
    data = base64.b64decode(src.split(",", 1)[1])
    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)


def share(rgb: np.ndarray, colour: tuple[int, int, int], tol: int = 14) -> float:
    """The fraction of pixels within `tol` of `colour` in every channel."""
    return float((np.abs(rgb - np.array(colour)).max(axis=2) <= tol).mean())


def test_photo_previews_transparency_on_a_checkerboard_then_a_hex_colour(server):
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            shot = Shots(page, SHOTS)
            page.goto(server.url)
            page.get_by_role("button", name="Astronaut").click()
            img = page.frame_locator("iframe[title*='backdrop_clicker']").first.locator("img")
            expect(img).to_be_visible()
            box = img.bounding_box()
            img.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.35})
            expect(page.get_by_text(re.compile(r"Mask ready: candidate"))).to_be_visible()
            overlay = img.get_attribute("src")
            assert share(decoded(overlay), (204, 204, 204), 6) < 0.02   # the photo itself has no squares

            kind = page.locator(".st-key-bg_kind button")
            kind.filter(has_text="Transparent").click()
            expect(img).not_to_have_attribute("src", overlay)
            expect(page.get_by_text("Live preview on the photo")).to_be_visible()
            checker = decoded(img.get_attribute("src"))
            light, grey = share(checker, (255, 255, 255)), share(checker, (204, 204, 204))
            assert light > 0.08 and grey > 0.08, (light, grey)      # squares of both shades
            img.scroll_into_view_if_needed()
            shot("transparent-preview")

            kind.filter(has_text="Colour").click()
            hex_box = page.get_by_label("Hex", exact=True)
            expect(hex_box).to_have_value("#FFFFFF")
            before = img.get_attribute("src")
            hex_box.fill("#FF0000")
            hex_box.press("Enter")
            expect(img).not_to_have_attribute("src", before)
            for _ in range(60):                  # the white preview may land first: wait for red
                red = decoded(img.get_attribute("src"))
                if share(red, (255, 0, 0), 40) > 0.08:
                    break
                page.wait_for_timeout(500)
            assert share(red, (255, 0, 0), 40) > 0.08 and share(red, (204, 204, 204), 6) < 0.02
            shot("colour-preview")

            page.goto(server.url + "/history")                       # previews are not runs
            expect(page.get_by_text("No runs yet")).to_be_visible()
        except Exception:
            keep_failure(page, server, SHOTS / "failure.png")
            raise
        finally:
            browser.close()
