"""Where things live, read from the environment at call time (so tests can point elsewhere)."""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """History images and the default SQLite DB. `BACKDROP_DATA_DIR`, default ./data."""
    return Path(os.environ.get("BACKDROP_DATA_DIR", "data")).resolve()


def database_url() -> str:
    """`BACKDROP_DATABASE_URL`, default sqlite:///<data dir>/history.db."""
    return os.environ.get("BACKDROP_DATABASE_URL") or f"sqlite:///{data_dir() / 'history.db'}"


def weights_dir() -> Path:
    """Model files. `BACKDROP_WEIGHTS_DIR`, default ./weights."""
    return Path(os.environ.get("BACKDROP_WEIGHTS_DIR", "weights")).resolve()


def default_segmenter() -> str:
    """`BACKDROP_SEGMENTER`, default sam2-tiny (fastest image embedding on a CPU)."""
    return os.environ.get("BACKDROP_SEGMENTER", "sam2-tiny")


def default_inpaint_model() -> str:
    """`BACKDROP_INPAINT_MODEL`, default SD 1.5 inpainting."""
    return os.environ.get("BACKDROP_INPAINT_MODEL", "sd15-inpainting")
