"""What every page starts with: the wide layout (also when a page is opened by its own URL, a
bookmark or a reload of /history: Streamlit then runs the page without the router) and the few
style rules that keep every control whole on a phone and on a laptop.

Streamlit stacks columns below 640 px, and the server cannot know a browser's width: the rules
below are CSS media queries, so the browser picks what fits."""
from __future__ import annotations

import streamlit as st

PHONE_MAX_PX = 640          # Streamlit stacks st.columns at this width and below

# No user text here: fixed rules only.
CSS = f"""<style>
/* The live background preview beside the colour controls: only where the photo is out of sight
   (a phone, where the photo sits above the controls) */
@media (min-width: {PHONE_MAX_PX + 1}px) {{ .st-key-phone_preview {{ display: none; }} }}
/* History's cards (a row that wraps): about 14rem each, as many as fit; two a row on a phone */
.st-key-hist_grid > [data-testid="stLayoutWrapper"] {{ flex: 1 1 14rem; min-width: 0; max-width: 18rem; }}
@media (max-width: {PHONE_MAX_PX}px) {{
  .st-key-hist_grid > [data-testid="stLayoutWrapper"] {{
    flex: 1 1 calc(50% - 0.5rem); max-width: calc(50% - 0.5rem); }}
}}
/* The uploader's list of file types wraps instead of ending in "…" */
[data-testid="stFileUploaderDropzoneInstructions"] span {{
  white-space: normal; overflow: visible; text-overflow: clip; }}
</style>"""


def setup_page() -> None:
    """The wide layout and the narrow-screen rules; call at the top of every page. A bad
    BACKDROP_* setting stops the page here with one line (also on a page's own URL)."""
    from ui.widgets import check_settings
    st.set_page_config(layout="wide")
    st.html(CSS)
    check_settings()
