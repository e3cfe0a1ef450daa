"""The result in the photo area: after a run the Editor's photo shows the result, with a before/after
slider, the variants as thumbnails to pick the one shown, its PNG download and "Back to editing"
(the clickable photo again; the result stays a click away). A new result is brought into view
once, so a person who pressed Generate below the photo (a phone) sees it arrive.

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import base64
from collections.abc import MutableMapping
from typing import Optional

import streamlit as st

from ui.widgets import shown_bytes

COMPARE_MAX_VH = 62          # the picture's height at most, in % of the window: it fits with its buttons
THUMB_WIDTH = 120

# The slider: the result underneath, the original on top cut off at the handle; an invisible range
# input over the whole picture moves the handle (drag, tap, or the arrow keys).
COMPARE_CSS = """<style>
.bd-result{text-align:center;scroll-margin-top:4.5rem}
.bd-compare{position:relative;display:inline-block;max-width:100%;vertical-align:top;--pos:50%;
  line-height:0;user-select:none}
.bd-compare img{display:block;max-width:100%;max-height:{VH}vh;width:auto;height:auto;margin:0}
.bd-compare img.bd-before{position:absolute;inset:0;width:100%;height:100%;max-height:none;
  clip-path:inset(0 calc(100% - var(--pos)) 0 0)}
.bd-compare .bd-handle{position:absolute;top:0;bottom:0;left:var(--pos);width:3px;margin-left:-1.5px;
  background:#fff;box-shadow:0 0 0 1px rgba(0,0,0,.35);pointer-events:none}
.bd-compare .bd-handle::after{content:"\\2039\\203A";position:absolute;top:50%;left:50%;
  transform:translate(-50%,-50%);width:2.2rem;height:2.2rem;border-radius:50%;background:#fff;
  box-shadow:0 1px 4px rgba(0,0,0,.4);color:#333;font:bold 1.1rem/2.2rem sans-serif}
.bd-compare .bd-tag{position:absolute;top:.5rem;padding:.1rem .5rem;border-radius:.3rem;
  background:rgba(0,0,0,.55);color:#fff;font:.8rem/1.4 sans-serif;pointer-events:none}
.bd-compare .bd-tag-before{left:.5rem}.bd-compare .bd-tag-after{right:.5rem}
.bd-compare input{position:absolute;inset:0;width:100%;height:100%;margin:0;opacity:0;
  cursor:ew-resize;touch-action:pan-y}
.bd-compare input:focus-visible+.bd-handle{outline:2px solid #ff4b4b}
</style>""".replace("{VH}", str(COMPARE_MAX_VH))

# Binds the range input to the handle, and brings the picture fully into view the first time this
# page draws result number SCROLL (0: never); a redraw (another variant, Back and Show) leaves the
# page where the person put it.
COMPARE_JS = """<script>(() => {
  const box = document.currentScript.previousElementSibling;
  const cmp = box.querySelector('.bd-compare'), range = box.querySelector('input');
  const set = () => cmp.style.setProperty('--pos', range.value + '%');
  range.addEventListener('input', set); set();
  if (!SCROLL || window.bdScrolledTo === SCROLL) return;
  window.bdScrolledTo = SCROLL;
  const img = box.querySelector('img');
  const go = () => {
    const r = box.getBoundingClientRect();
    if (r.top < 60 || r.bottom + 90 > window.innerHeight) box.scrollIntoView({block: 'start'});
  };
  if (img.complete) requestAnimationFrame(go); else img.addEventListener('load', go, {once: true});
})();</script>"""


# ----------------------------------------------------------------------------- state
def of_photo(state: MutableMapping) -> Optional[dict]:
    """The last run's result when it is of the photo being edited, else None."""
    res, image = state.get("result"), state.get("photo")
    if res is None or image is None or res.get("photo", image.hash) != image.hash:
        return None
    return res


def take_new(state: MutableMapping, res: dict) -> None:
    """A result not seen before: show it (first variant), bring it into view once, and note the
    clicks it was made from (changing them goes back to editing)."""
    state["result_seen"] = res
    state["result_view"] = True
    state["result_pick"] = 0
    state["result_scroll"] = int(state.get("result_scroll") or 0) + 1
    state["result_prompts"] = list(state.get("prompts") or [])


def showing(state: MutableMapping) -> bool:
    """Whether the photo area shows the result (else the clickable photo): after a run of this
    photo, until "Back to editing" or a change of the clicks (Undo, Clear)."""
    res = of_photo(state)
    if res is None:
        return False
    if state.get("result_seen") is not res:
        take_new(state, res)
    if state.get("result_view") and list(state.get("prompts") or []) != state.get("result_prompts"):
        state["result_view"] = False
    return bool(state.get("result_view"))


def _set_view(state: MutableMapping, on: bool) -> None:
    state["result_view"] = on
    if on:          # the clicks shown with the result are the ones it now stands for
        state["result_prompts"] = list(state.get("prompts") or [])


def _pick(state: MutableMapping, i: int) -> None:
    state["result_pick"] = i


def picked(state: MutableMapping, res: dict) -> int:
    i = state.get("result_pick") or 0
    return i if 0 <= i < len(res["outputs"]) else 0


# ----------------------------------------------------------------------------- drawing
def data_url(data: bytes) -> str:
    mime = "image/png" if data[:8] == b"\x89PNG\r\n\x1a\n" else "image/jpeg"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def compare_html(before: bytes, after: bytes, scroll: int = 0) -> str:
    """The before/after slider of two same-sized pictures (encoded bytes; no user text); `scroll`:
    the number of the result, brought into view once by the page (0: not)."""
    return (COMPARE_CSS
            + '<div class="bd-result"><div class="bd-compare">'
            + f'<img class="bd-after" src="{data_url(after)}" alt="Result">'
            + f'<img class="bd-before" src="{data_url(before)}" alt="Original">'
            + '<input type="range" min="0" max="100" value="50" step="1" '
              'aria-label="Before and after: drag to compare the original with the result">'
            + '<div class="bd-handle"></div>'
            + '<span class="bd-tag bd-tag-before">Before</span><span class="bd-tag bd-tag-after">After</span>'
            + '</div></div>'
            + COMPARE_JS.replace("SCROLL", str(int(scroll))))


def result_area(state: MutableMapping) -> None:
    """The photo area after a run: the before/after slider of the variant picked, its download and
    Back to editing, then the variants as thumbnails to pick from."""
    from core.images import encode_png

    res = of_photo(state)
    i = picked(state, res)
    out, seed = res["outputs"][i], res["seeds"][i]
    st.html(compare_html(res["original"], shown_bytes(res["previews"][i]), state.get("result_scroll") or 0),
            unsafe_allow_javascript=True)      # the same HTML on a rerun: the slider stays where it is
    n = len(res["outputs"])
    where = f"run #{res['run_id']} in History" if res.get("run_id") else "not in History"
    st.caption("Drag across the picture to compare: before (left) and after (right). · "
               + (f"Variant {i + 1} of {n} · " if n > 1 else "")
               + (f"seed {seed} · " if seed is not None else "") + where)
    c1, c2 = st.columns(2)
    c1.download_button(f"Download PNG ({out.shape[1]}×{out.shape[0]})", data=lambda: encode_png(out),
                       file_name=f"{res['name']}-backdrop-{res['run_id'] or 'x'}-{i + 1}.png",
                       mime="image/png", key=f"dl-{res['run_id']}-{i}", on_click="ignore", type="primary",
                       icon=":material/download:", width="stretch")
    c2.button("Back to editing", key="result-back", icon=":material/edit:", on_click=_set_view,
              args=(state, False), width="stretch",
              help="The clickable photo again, to change the selection; the result stays here.")
    if n > 1:       # a row that wraps (columns would stack full width on a phone)
        with st.container(horizontal=True, gap="small", key="result-variants"):
            for j in range(n):
                with st.container(width=THUMB_WIDTH, gap="small"):
                    st.image(shown_bytes(res["previews"][j]), width="stretch")
                    st.button(f"Variant {j + 1}", key=f"result-pick-{j}", on_click=_pick, args=(state, j),
                              type="primary" if j == i else "secondary", width="stretch")
    if res.get("remote") and res.get("run_id"):     # client mode: the run is in the service's history
        if st.button(f"Open run #{res['run_id']} in History", key="open-run", icon=":material/history:"):
            state["hist_open"] = res["run_id"]
            st.switch_page("pages/history.py")


def back_to_result(state: MutableMapping) -> None:
    """Above the clickable photo, while a result of it is put aside: the way back to it."""
    if of_photo(state) is not None:
        st.button("Show the result", key="result-show", icon=":material/compare:", on_click=_set_view,
                  args=(state, True), help="The last result of this photo, with before/after and download.")


def photo_area(state: MutableMapping, subject_canvas) -> None:
    """The Editor's photo column: the result after a run, else the clickable photo."""
    if showing(state):
        state["canvas_bg_drawn"] = None     # no live preview drawn: nothing for it to catch up with
        result_area(state)
    else:
        back_to_result(state)
        subject_canvas()
