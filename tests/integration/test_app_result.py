"""The result in the Editor's photo area (ui.result) through Streamlit's AppTest: after a run the
photo area shows the result (before/after, one download, Back to editing) instead of the clickable
photo; only for the photo it was made of; the variants are thumbnails that pick the one shown.
The browser side (in view, the slider) is tests/test_browser_result.py."""
from __future__ import annotations

import base64
import io
import re

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("streamlit")
from streamlit.testing.v1 import AppTest  # noqa: E402
from apptest_kit import no_exception, sample_clicked, wait_until  # noqa: E402

from ui import state as S  # noqa: E402


@pytest.fixture
def tiny_env(monkeypatch, tiny_sam):
    monkeypatch.setenv("BACKDROP_SEGMENTER", "tiny")


def generated(bg_kind: str = S.BG_TRANSPARENT, variants: int = 1) -> AppTest:
    """The editor after one run on the Astronaut sample, one click on it, background `bg_kind`
    (an AI scene: 2 steps, `variants` pictures)."""
    at = sample_clicked(x=230, y=180)                  # on the astronaut
    at.segmented_control(key="bg_kind").set_value(bg_kind).run()
    if bg_kind == S.BG_SD:
        at.text_area(key="prompt").input("a quiet beach").run()
        at.slider(key="steps").set_value(2).run()
        at.number_input(key="variants").set_value(variants).run()
    [b for b in at.button if b.label == "Generate"][0].click().run()
    no_exception(at)
    wait_until(at, lambda a: a.session_state["job"] is None, what="the run to finish")
    assert at.session_state["result"] is not None, [e.value for e in at.error]
    return at


def labels(at: AppTest) -> list[str]:
    return [b.label for b in at.button]


def downloads(at: AppTest) -> list[str]:
    return [b.label for b in at.get("download_button")]


def compare(at: AppTest) -> str | None:
    """The before/after slider's HTML, or None when the photo area shows the clickable photo."""
    bodies = [h.proto.body for h in at.get("html") if "bd-compare" in h.proto.body]
    assert len(bodies) <= 1
    return bodies[0] if bodies else None


def pictures(html: str) -> dict[str, bytes]:
    """The slider's pictures by role (after: the result, before: the original) as encoded bytes."""
    found = re.findall(r'<img class="bd-(after|before)" src="data:image/\w+;base64,([^"]+)"', html)
    return {role: base64.b64decode(data) for role, data in found}


def grey_share(data: bytes) -> float:
    """The fraction of a picture in the checkerboard's grey (ui.widgets.CHECKER_SHADES)."""
    rgb = np.asarray(Image.open(io.BytesIO(data)).convert("RGB")).astype(int)
    return float((np.abs(rgb - 204).max(axis=2) <= 6).mean())


def canvas_shown(at: AppTest) -> bool:
    return any(c.value.startswith(("Mask ready", "Click on the subject")) for c in at.caption)


def test_result_takes_the_photo_area_then_back_to_editing_and_back(tiny_env):
    at = generated()
    res = at.session_state["result"]
    html = compare(at)
    assert html is not None and not canvas_shown(at)
    pics = pictures(html)
    assert pics["before"] == res["original"]
    after, before = grey_share(pics["after"]), grey_share(pics["before"])
    assert after > 0.02 and after > 4 * before, (after, before)   # transparency on the checkerboard
    assert downloads(at) == ["Download PNG (512×512)"]   # one download, next to the picture
    assert "Back to editing" in labels(at) and "Show the result" not in labels(at)
    assert any("run #1 in History" in c.value for c in at.caption)
    at.run()                       # any rerun: the same slider, so the browser keeps it as it is
    assert compare(at) == html

    [b for b in at.button if b.label == "Back to editing"][0].click().run()
    no_exception(at)
    assert compare(at) is None and canvas_shown(at) and downloads(at) == []
    assert "Show the result" in labels(at)

    [b for b in at.button if b.label == "Show the result"][0].click().run()
    assert compare(at) is not None and downloads(at) == ["Download PNG (512×512)"]

    [b for b in at.button if b.label == "Undo"][0].click().run()     # the selection changes: edit it
    no_exception(at)
    assert compare(at) is None and canvas_shown(at) and "Show the result" in labels(at)


def test_result_is_shown_on_its_own_photo_only(tiny_env):
    at = generated()
    assert compare(at) is not None
    at.session_state["result"] = {**at.session_state["result"], "photo": "another photo's hash"}
    at.run()                                   # a result kept from another photo (e.g. restored)
    no_exception(at)
    assert compare(at) is None and canvas_shown(at) and downloads(at) == []
    assert "Show the result" not in labels(at)

    at = generated()
    at.button(key="sample-Cat").click().run()  # a new photo: its clickable photo, nothing of the old
    no_exception(at)
    assert compare(at) is None and canvas_shown(at) and downloads(at) == []
    assert "Show the result" not in labels(at)


def test_variants_are_thumbnails_that_pick_the_one_shown_and_downloaded(tiny_env, tiny_inpaint, monkeypatch):
    monkeypatch.setenv("BACKDROP_INPAINT_MODEL", "tiny")
    at = generated(S.BG_SD, variants=2)
    res = at.session_state["result"]
    assert len(res["outputs"]) == 2
    assert pictures(compare(at))["after"] == res["previews"][0]
    assert any("Variant 1 of 2" in c.value for c in at.caption)
    dl = at.get("download_button")
    assert len(dl) == 1 and dl[0].proto.id.endswith(f"dl-{res['run_id']}-0")

    [b for b in at.button if b.label == "Variant 2"][0].click().run()
    no_exception(at)
    assert pictures(compare(at))["after"] == res["previews"][1]
    assert any("Variant 2 of 2" in c.value and f"seed {res['seeds'][1]}" in c.value for c in at.caption)
    dl = at.get("download_button")
    assert len(dl) == 1 and dl[0].proto.id.endswith(f"dl-{res['run_id']}-1")
