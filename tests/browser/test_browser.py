"""The app in a real browser: `streamlit run` + Playwright driving Debian Chromium.

Upload a real photo, click the subject in the image component's iframe, see the mask, generate an
AI-scene background with the tiny inpainting model, download the PNG, then in History favourite the
run and export the favourites zip. Screenshots of every step go to test-artifacts/browser/.
Skipped when Chromium or Playwright is missing, except under BACKDROP_REQUIRE_BROWSER=1 (CI), where
that is a failure.
"""
from __future__ import annotations

import io
import json
import re
import zipfile

import pytest
from PIL import Image

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Server, Shots, require_browser, keep_failure

TIMEOUT_MS = 180_000      # the CPU is shared: be generous, but wait on texts, never sleep


def st_button(page, label: str):
    """A Streamlit button by the end of its text (select boxes also carry buttons named "Open"; a
    button with a Material icon has the icon's name before its label)."""
    # .first: a button with a tooltip (help=) renders as two nested matches
    return page.locator("button[data-testid^='stBaseButton']").filter(
        has_text=re.compile(rf"(^|[a-z_]){re.escape(label)}$")).first


@pytest.fixture
def browser_ready():
    require_browser()


@pytest.fixture
def server(browser_ready, tiny_sam, tiny_inpaint, weights_dir, tmp_path):
    srv = Server({"BACKDROP_DATA_DIR": str(tmp_path / "data"), "BACKDROP_WEIGHTS_DIR": str(weights_dir),
                  "BACKDROP_SEGMENTER": "tiny", "BACKDROP_INPAINT_MODEL": "tiny",
                  "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"},
                 ARTIFACTS / "server.log")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


def test_upload_click_generate_history_export(server, tmp_path, astronaut):
    from playwright.sync_api import expect, sync_playwright

    photo = tmp_path / "astronaut photo.jpg"
    Image.fromarray(astronaut).save(photo, quality=92)

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(viewport={"width": 1440, "height": 1100}, accept_downloads=True)
            page = context.new_page()
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            shot = Shots(page)

            # 1. the Editor, empty
            page.goto(server.url)
            expect(page.get_by_text("…or try a sample photo")).to_be_visible()
            shot("editor-empty")

            # 2. upload a real photo
            page.locator("input[type='file']").first.set_input_files(str(photo))
            expect(page.get_by_text("Click on the subject to select it")).to_be_visible()
            expect(page.get_by_text("astronaut photo.jpg · 512×512 px", exact=False)).to_be_visible()
            frame = page.frame_locator("iframe[title*='backdrop_clicker']").first
            img = frame.locator("img")
            expect(img).to_be_visible()
            shot("photo-loaded")

            # 3. click on the subject (inside the component's iframe); the mask overlay comes back
            src_before = img.get_attribute("src")
            box = img.bounding_box()
            assert box and box["width"] > 200
            img.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.35})
            expect(page.get_by_text(re.compile(r"Mask ready: candidate \d of \d"))).to_be_visible()
            expect(img).not_to_have_attribute("src", src_before)   # the overlay was drawn
            assert img.get_attribute("src").startswith("data:image/jpeg;base64,")
            shot("mask-overlay")

            # 4. AI-scene background with the tiny model: prompt, Generate, progress, result
            page.get_by_role("textbox", name="Prompt: describe the new scene").fill("a calm beach at sunset")
            page.get_by_role("textbox", name="Prompt: describe the new scene").press("Control+Enter")
            page.get_by_role("button", name="Generate").click()
            expect(page.get_by_text(re.compile(r"Done in [\d.]+ s — saved to History as run #1"))).to_be_visible()
            expect(page.locator(".bd-compare img.bd-after")).to_be_visible()   # in the photo area
            dl = page.get_by_role("button", name=re.compile(r"Download PNG \(512×512\)"))
            expect(dl).to_be_visible()
            dl.scroll_into_view_if_needed()
            shot("result")
            with page.expect_download() as d:
                dl.click()
            png = d.value.path().read_bytes()
            with Image.open(io.BytesIO(png)) as im:
                assert im.format == "PNG" and im.size == (512, 512)

            # 5. History: the run is there; favourite it
            page.get_by_role("link", name="History").click()
            expect(page.get_by_text("Every run is kept here")).to_be_visible()
            expect(page.get_by_text("a calm beach at sunset")).to_be_visible()
            page.get_by_text("★ Favourite", exact=True).click()
            expect(page.get_by_role("button", name="Export favourites (1) as zip")).to_be_enabled()
            shot("history-favourited")

            # 6. open it: source, mask, clicks, parameters
            st_button(page, "Open").click()
            expect(page.get_by_role("heading", name=re.compile(r"Run #1 · .* · succeeded"))).to_be_visible()
            expect(st_button(page, "Edit from here")).to_be_visible()
            expect(page.locator("[data-testid='stDataFrame'] canvas").first).to_be_visible()
            shot("history-details")
            page.keyboard.press("Escape")                     # the details are a dialog: close it
            expect(page.get_by_role("dialog")).to_have_count(0)

            # 7. export the favourites as a zip
            export = page.get_by_role("button", name="Export favourites (1) as zip")
            with page.expect_download() as d:
                export.click()
            zpath = tmp_path / "favourites.zip"
            d.value.save_as(zpath)
            with zipfile.ZipFile(zpath) as z:
                names = z.namelist()
                outputs = [n for n in names if n.endswith(".png") and not n.startswith("masks/")]
                assert len(outputs) == 1, names
                assert "manifest.json" in names
                manifest = json.loads(z.read("manifest.json"))
                with Image.open(io.BytesIO(z.read(outputs[0]))) as im:
                    assert im.size == (512, 512)
            assert [r["run_id"] for r in manifest["outputs"]] == [1]
            shot("exported")

            # 8. edit from here goes back to the Editor with the photo and click
            st_button(page, "Open").click()
            st_button(page, "Edit from here").click()
            expect(page.get_by_text("Loaded run #1")).to_be_visible()
            expect(page.get_by_text(re.compile(r"Mask ready: candidate \d of \d"))).to_be_visible()
            shot("edit-from-here")

            # 9. the Models page: what is on disk, the device, defaults
            page.get_by_role("link", name="Models & settings").click()
            expect(page.get_by_role("heading", name="Models & settings")).to_be_visible()
            expect(page.get_by_role("button", name="Download sam-vit-b")).to_be_visible()
            expect(page.locator("[data-testid='stDataFrame'] canvas").first).to_be_visible()
            shot("models")
        except Exception:
            keep_failure(page, server, ARTIFACTS / "failure.png")
            raise
        finally:
            browser.close()
