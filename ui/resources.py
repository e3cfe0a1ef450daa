"""Models and the history store, created once per process and shared by every session.

Each loader is keyed by what makes it different (model name + weights dir, database URL) so that
changing BACKDROP_* between tests never hands back a stale object. Segmenters are safe to share:
the embedding cache inside core.segment is keyed by image hash and lock-protected; a session's
clicks and masks live in its own session state.
"""
from __future__ import annotations

import streamlit as st

from core import config, weights

GRABCUT = "grabcut"


@st.cache_resource(show_spinner=False, max_entries=4)
def _segmenter(name: str, weights_dir: str):
    from core.segment import get_segmenter
    return get_segmenter(name)


def segmenter(name: str):
    """The shared Segmenter for `name` (raises MissingWeightsError when its weights are absent)."""
    return _segmenter(name, str(config.weights_dir()))


@st.cache_resource(show_spinner=False, max_entries=2)
def _inpainter(model: str, weights_dir: str):
    from core.inpaint import get_inpainter
    return get_inpainter(model)


def inpainter(model: str):
    return _inpainter(model, str(config.weights_dir()))


@st.cache_resource(show_spinner=False, max_entries=4)
def _store(url: str, data_dir: str):
    from core.history import open_store
    return open_store(sweep=True)


def store():
    """The history store (SQLAlchemy engine inside) for the configured database URL."""
    return _store(config.database_url(), str(config.data_dir()))


def is_present(spec) -> bool:
    """Whether a model can be used without a download (builtin models always can)."""
    if spec.kind == "builtin":
        return True
    check = getattr(weights, "is_present", None)
    if check is not None:
        return bool(check(spec))
    return weights.local_path(spec).exists()


def choose_segmenter(name: str) -> tuple[str, str | None]:
    """(name to use, one-line note or None): a model whose weights are missing falls back to GrabCut."""
    try:
        spec = weights.get_spec(name, "segment")
    except Exception as e:  # unknown name from the environment
        return GRABCUT, f"{e} — using GrabCut (quick fallback)."
    if is_present(spec):
        return name, None
    return GRABCUT, f"{weights.missing_message(spec)}. Using GrabCut (quick fallback) meanwhile."
