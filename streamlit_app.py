"""Backdrop — the app's entry point and router (`streamlit run streamlit_app.py`).

Initialises this person's session state once, then hands over to the page they are on.
Pages live in pages/ and stay thin; the Streamlit glue is in ui/, the engine in core/.
"""
import streamlit as st

from core import log
from ui import state as ui_state
from ui.widgets import check_settings

log.configure()   # once per process (idempotent): our loggers to the server's stderr, escaped
st.set_page_config(page_title="Backdrop — replace a photo's background", page_icon="🖼️",
                   layout="wide")

check_settings()          # a bad BACKDROP_* value: one line on the page, not a traceback
ui_state.init_session(st.session_state)

pages = [
    st.Page("pages/editor.py", title="Editor", icon=":material/photo_camera:", default=True),
    st.Page("pages/history.py", title="History", icon=":material/history:"),
    st.Page("pages/models.py", title="Models & settings", icon=":material/tune:"),
]
st.navigation(pages).run()
