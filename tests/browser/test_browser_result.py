"""What only a browser shows of the result: after Generate the photo area shows the result, in view
without scrolling (a laptop, 1440x900, and a phone, 390x844, where Generate sits far below the
photo), its before/after slider shows the original and the result, its download sits under it, and
"Back to editing" gives the clickable photo back. One `streamlit run` for the module (no model
weights: GrabCut segments, the background is transparent). Screenshots go to
test-artifacts/browser/result/. Skipped without Chromium/Playwright, except under
BACKDROP_REQUIRE_BROWSER=1 (CI)."""
from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Shots, grabcut_app, keep_failure

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "result"
LAPTOP = {"width": 1440, "height": 900}
PHONE = {"width": 390, "height": 844}
CANVAS = "iframe[title*='backdrop_clicker'], iframe[title*='streamlit_image_coordinates']"   # the clickable photo
# the element fully inside the window, as the person sees it (no scrolling of ours)
IN_VIEW = """sel => { const r = document.querySelector(sel)?.getBoundingClientRect();
  return !!r && r.height > 150 && r.top >= 0 && r.bottom <= window.innerHeight; }"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with grabcut_app(tmp_path_factory.mktemp("result-app"), SHOTS / "server.log") as srv:
        yield srv


def shown(page, locator) -> np.ndarray:
    """What the element shows (a screenshot), as an HxWx3 int array."""
    return np.asarray(Image.open(io.BytesIO(locator.screenshot())).convert("RGB")).astype(int)


def middle(rgb: np.ndarray) -> np.ndarray:
    """The middle of a picture: away from the slider's handle at an edge and the Before/After tags."""
    h, w = rgb.shape[:2]
    return rgb[h // 5: h - h // 5, w // 5: w - w // 5]


def checker_share(rgb: np.ndarray) -> float:
    """The fraction of pixels of the checkerboard's grey squares (ui.widgets.CHECKER_SHADES)."""
    return float((np.abs(rgb - 204).max(axis=2) <= 6).mean())


def generate_transparent(page, url: str) -> None:
    """The Astronaut sample, one click on the subject, a transparent background, Generate."""
    from playwright.sync_api import expect

    page.goto(url)
    page.get_by_role("button", name="Astronaut").click()
    img = page.frame_locator(CANVAS).first.locator("img")
    expect(img).to_be_visible()
    box = img.bounding_box()
    img.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.35})
    expect(page.get_by_text(re.compile(r"Mask ready: candidate"))).to_be_visible()
    page.locator(".st-key-bg_kind button").filter(has_text="Transparent").click()
    expect(page.get_by_text("The result is a PNG with a transparent background")).to_be_visible()
    page.get_by_role("button", name="Generate").click()     # scrolls down to it (a phone: far down)


@pytest.mark.parametrize("viewport", [LAPTOP, PHONE], ids=["laptop", "phone"])
def test_result_lands_in_view_with_before_after_and_download(server, viewport, astronaut):
    from playwright.sync_api import expect, sync_playwright

    name = "laptop" if viewport == LAPTOP else "phone"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=viewport, accept_downloads=True)
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            shot = Shots(page, SHOTS / name)
            generate_transparent(page, server.url)

            # the result arrives in the photo area and is brought into view, with its download
            compare = page.locator(".bd-compare")
            expect(compare.locator("img.bd-after")).to_be_visible()
            page.wait_for_function(IN_VIEW, arg=".bd-compare", timeout=20_000)
            download = page.get_by_role("button", name=re.compile(r"Download PNG \(512×512\)"))
            expect(download).to_be_visible()
            near = download.bounding_box()           # right under the picture, in view too
            assert near and 0 <= near["y"] and near["y"] + near["height"] <= viewport["height"], near
            shot("result-in-view")

            # before/after: the left edge of the slider shows the result (transparent: the
            # checkerboard), the right edge the original photo
            box = compare.bounding_box()
            compare.locator("input").click(position={"x": 1, "y": box["height"] / 2})
            after = middle(shown(page, compare))
            compare.locator("input").click(position={"x": box["width"] - 1, "y": box["height"] / 2})
            before = shown(page, compare)
            original = np.asarray(Image.fromarray(astronaut).resize(
                (before.shape[1], before.shape[0]), Image.Resampling.BILINEAR)).astype(int)
            before, original = middle(before), middle(original)
            gap_before = np.abs(before - original).mean()
            gap_after = np.abs(after[:before.shape[0], :before.shape[1]] - original).mean()
            assert gap_before < 20 and gap_after > 2 * gap_before, (gap_before, gap_after)
            assert checker_share(after) > 0.05 and checker_share(after) > 5 * checker_share(before)
            shot("before")

            if viewport == LAPTOP:
                with page.expect_download() as d:
                    download.click()
                with Image.open(d.value.path()) as im:
                    assert im.format == "PNG" and im.mode == "RGBA" and im.size == (512, 512)

                # back to editing: the clickable photo, the way back to the result, one download less
                page.get_by_role("button", name="Back to editing").click()
                expect(page.get_by_text(re.compile(r"Mask ready: candidate"))).to_be_visible()
                expect(page.locator(CANVAS)).to_be_visible()
                expect(download).to_have_count(0)
                shot("back-to-editing")
                page.get_by_role("button", name="Show the result").click()
                expect(compare.locator("img.bd-after")).to_be_visible()
        except Exception:
            keep_failure(page, server, SHOTS / f"failure-{name}.png")
            raise
        finally:
            browser.close()
