"""Models and the history store, created once per process and shared by every session.

Segmenters come straight from core.segment's registry, which keeps at most
`core.segment.MAX_LOADED` loaded models (keyed by name and resolved path, so changing
BACKDROP_WEIGHTS_DIR between tests never hands back a stale one): it is the only place that holds
them, so dropping one there frees it. They are safe to share: the embedding cache inside each is
keyed by image hash and lock-protected; a session's clicks and masks live in its own session state.
Inpainting models are held by core.inpaint's ModelManager alone (one loaded at a time; switching
frees the old one), which core.jobs asks directly. The history store is an `st.cache_resource`
keyed by database URL, data dir and image store (BACKDROP_BLOB_URL).
"""
from __future__ import annotations

import logging

import streamlit as st

from core import config, weights
from core.errors import InvalidOptionError

log = logging.getLogger(__name__)

GRABCUT = "grabcut"


def segmenter(name: str):
    """The shared Segmenter for `name` (raises MissingWeightsError when its weights are absent)."""
    from core.segment import get_segmenter
    return get_segmenter(name)


@st.cache_resource(show_spinner=False, max_entries=4)
def _store(url: str, data_dir: str, blob_url: str = ""):
    from core.history import open_store
    return open_store(sweep=True)


def store():
    """The history store (SQLAlchemy engine inside) for the configured database URL."""
    return _store(config.database_url(), str(config.data_dir()), config.blob_url())


def is_present(spec) -> bool:
    """Whether a model can be used without a download (builtin models always can)."""
    return weights.is_present(spec)


def choose_segmenter(name: str) -> tuple[str, str | None]:
    """(name to use, one-line note or None): a model whose weights are missing falls back to GrabCut."""
    try:
        spec = weights.get_spec(name, "segment")
    except InvalidOptionError as e:  # unknown name from the environment
        log.warning("segmenter %r is not a known model; using GrabCut", name, exc_info=True)
        return GRABCUT, f"{e} — using GrabCut (quick fallback)."
    if is_present(spec):
        return name, None
    size = "built in code" if spec.kind.startswith("tiny") else weights._size_text(spec.size_bytes)
    return GRABCUT, (f"{name} is not downloaded yet ({size}): get it on the Models page. "
                     "Using GrabCut (quick fallback) meanwhile.")
