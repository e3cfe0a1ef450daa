"""Every page on a phone (390×844) and a laptop (1440×900) in a real Chromium: no control is cut
(by the screen's edge, by the box it sits in, or by an ellipsis), a page opened by its own URL
has the wide layout, the missing-model warning is on the page (not in the sidebar a phone keeps
closed), History's filters are folded and its cards two a row on a phone, and the colour preview
is beside the colour controls on a phone. The Editor is checked with every fold open too. One `streamlit run` for the module, no model weights
(GrabCut segments). Screenshots go to test-artifacts/browser/layout/. Skipped without
Chromium/Playwright, except under BACKDROP_REQUIRE_BROWSER=1 (CI)."""
from __future__ import annotations

import numpy as np
import pytest

from browser_helpers import ARTIFACTS, CHROMIUM, CHROMIUM_ARGS, Server, require_browser, keep_failure
from runs import record

pytestmark = pytest.mark.browser
TIMEOUT_MS = 180_000
SHOTS = ARTIFACTS / "layout"
SIZES = [(1440, 900), (390, 844)]
RUNS = 5

# Every visible control that is cut: past the screen's edge, past the edge of a box that hides
# what overflows it, or with its own text cut short (an ellipsis). Hidden inputs drawn by other
# elements (checkboxes, toggles, sliders) and what sits in a closed expander are left out.
CUT_CONTROLS_JS = """() => {
  const vw = document.documentElement.clientWidth;
  const sidebar = document.querySelector('[data-testid=stSidebar]');
  const sidebarShown = sidebar && sidebar.getBoundingClientRect().right > 10;
  const out = [];
  const name = el => ((el.innerText || el.getAttribute('aria-label') || el.value || '') + '').trim()
    .replace(/\\s+/g, ' ').slice(0, 60) + ' <' + el.tagName.toLowerCase()
    + (el.dataset.testid ? ' ' + el.dataset.testid : '') + '>';
  const cutBy = (el, r) => {
    for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
      if (getComputedStyle(a).overflowX === 'visible') continue;
      const b = a.getBoundingClientRect();
      if (b.width >= 1 && (r.right > b.right + 1.5 || r.left < b.left - 1.5)) return a;
    }
    return null;
  };
  const controls = 'button, input, textarea, label, a, img, iframe, summary, [role=radio], [role=option],'
    + '[role=combobox], [data-testid=stDataFrame], [data-testid=stWidgetLabel], [data-testid=stMarkdownContainer]';
  for (const el of document.querySelectorAll(controls)) {
    if ((el.innerText || '').trim() === 'Skip to main content') continue;     // shown on focus only
    if (el.matches('input[type=checkbox], input[type=radio], input[type=range]')) continue;
    if (sidebar && sidebar.contains(el) && !sidebarShown) continue;
    const fold = el.closest('details');
    if (fold && !fold.open && !el.closest('summary')) continue;
    if (el.closest('[data-testid=stDataFrame]') && !el.matches('[data-testid=stDataFrame]')) continue;
    const r = el.getBoundingClientRect();
    const cs = getComputedStyle(el);
    if (r.width < 1 || r.height < 1 || cs.visibility === 'hidden' || cs.opacity === '0') continue;
    if (r.right > vw + 1 || r.left < -1) { out.push('off-screen: ' + name(el)); continue; }
    if (cutBy(el, r)) { out.push('cut by its box: ' + name(el)); continue; }
    if (el.matches('input[role=combobox]') && el.scrollWidth > el.clientWidth + 1) {
      out.push('value cut: ' + name(el)); continue;       // a select box's choice
    }
    for (const t of [el, ...el.querySelectorAll('*')]) {
      const ts = getComputedStyle(t);
      const text = t.matches('input, textarea') ? '' : (t.innerText || '').trim();
      if (text && t.clientWidth > 0 && t.scrollWidth > t.clientWidth + 1
          && (ts.overflowX !== 'visible' || ts.textOverflow === 'ellipsis')) {
        out.push('text cut: ' + name(el)); break;
      }
    }
  }
  return out;
}"""

# Tables (st.dataframe) wider than their box: a cut column on a laptop
WIDE_TABLES_JS = """() => [...document.querySelectorAll('[data-testid=stDataFrame] .dvn-scroller')]
  .filter(s => s.scrollWidth > s.clientWidth + 1).length"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_browser()
    from core.history import open_store
    from skimage import data as skdata

    root = tmp_path_factory.mktemp("layout-app")
    env = {"BACKDROP_DATA_DIR": str(root / "data"), "BACKDROP_WEIGHTS_DIR": str(root / "weights"),
           "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with pytest.MonkeyPatch.context() as mp:        # the runs History lists
        for k, v in env.items():
            mp.setenv(k, v)
        store = open_store()
        small = skdata.astronaut()[::8, ::8].copy()
        mask = np.zeros(small.shape[:2], np.uint8)
        mask[16:48, 16:48] = 255
        for i in range(RUNS):
            sd = i % 2 == 0
            record(store, source=small, source_name=f"photo {i}.png", mask=mask,
                   outputs=[(np.where(mask[..., None] > 0, small, 40 * i).astype(np.uint8), 100 + i)],
                   segmenter="grabcut", clicks=[(32, 32, 1)], background="sd" if sd else "color:#00ff00",
                   prompt=f"run {i}: a beach at golden hour with palm trees and soft light" if sd else None,
                   model="tiny" if sd else None)
    srv = Server(env, SHOTS / "server.log")
    try:
        srv.wait_healthy()
        yield srv
    finally:
        srv.stop()


@pytest.mark.parametrize("size", SIZES, ids=["laptop", "phone"])
def test_no_control_is_cut_on_a_phone_or_a_laptop(server, size):
    from playwright.sync_api import expect, sync_playwright

    width, height = size
    phone = width < 640
    tag = f"{width}x{height}"
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": width, "height": height})
            page.set_default_timeout(TIMEOUT_MS)
            expect.set_options(timeout=TIMEOUT_MS)
            SHOTS.mkdir(parents=True, exist_ok=True)

            def check(name: str) -> None:
                page.screenshot(path=str(SHOTS / f"{tag}-{name}.png"))
                assert page.evaluate(CUT_CONTROLS_JS) == [], name

            def main_width() -> float:
                return page.locator("[data-testid=stMainBlockContainer]").bounding_box()["width"]

            # History by its own URL: wide; filters folded (their label says none is on); cards
            cards = page.locator("[class*='st-key-hist_card_']")
            page.goto(server.url + "/history")
            expect(cards).to_have_count(RUNS)
            expect(cards.first.locator("img")).to_be_visible()
            expect(page.get_by_text("Search and filters", exact=True)).to_be_visible()
            expect(page.get_by_label("Search prompts")).to_be_hidden()
            if not phone:
                assert main_width() > 1000          # the wide layout without the router
            a, b = cards.nth(0).bounding_box(), cards.nth(1).bounding_box()
            assert abs(a["y"] - b["y"]) < 2 and b["x"] > a["x"] + a["width"]   # side by side
            check("history")

            # Models by its own URL: wide; on a laptop the tables fit their width
            page.goto(server.url + "/models")
            expect(page.locator("[data-testid=stDataFrame] .dvn-scroller")).to_have_count(5)   # a table per task
            if not phone:
                assert main_width() > 1000
                assert page.evaluate(WIDE_TABLES_JS) == 0
            check("models")

            # the Editor: the missing-model warning on the page, not only in the (closed) sidebar
            page.goto(server.url)
            warning = page.locator("[data-testid=stMain] [data-testid=stAlert]").filter(
                has_text="is not downloaded yet")
            expect(warning).to_be_visible()
            check("editor-empty")

            page.get_by_role("button", name="Astronaut").click()
            img = page.frame_locator("iframe").first.locator("img")
            expect(img).to_be_visible()
            box = img.bounding_box()
            img.click(position={"x": box["width"] * 0.45, "y": box["height"] * 0.35})
            expect(page.get_by_text("Mask ready", exact=False)).to_be_visible()
            kinds = page.locator(".st-key-bg_kind button")
            expect(kinds).to_have_count(5)
            folds = page.locator("[data-testid=stMain] details summary")   # every fold open
            for i in range(folds.count()):
                folds.nth(i).click()
            expect(page.locator("[data-testid=stMain] details:not([open])")).to_have_count(0)
            check("editor-folds-open")
            for i in range(folds.count()):
                folds.nth(i).click()

            kinds.filter(has_text="Colour").click()
            expect(page.get_by_label("Hex", exact=True)).to_be_visible()
            preview = page.locator(".st-key-phone_preview img")
            if phone:               # the photo is above, out of sight: its preview is here
                expect(preview).to_be_visible()
                preview.scroll_into_view_if_needed()
            else:
                expect(page.get_by_text("Live preview on the photo")).to_be_visible()
                expect(preview).to_be_hidden()
            check("editor-colour")

            kinds.filter(has_text="Transparent").click()
            expect(page.get_by_text("Live preview on the photo")).to_be_visible()
            kinds.first.scroll_into_view_if_needed()
            check("editor-transparent")
        except Exception:
            keep_failure(page, server, SHOTS / f"{tag}-failure.png")
            raise
        finally:
            browser.close()
