"""Where things live, read from the environment at call time (so tests can point elsewhere)."""
from __future__ import annotations

import os
from pathlib import Path


def data_dir() -> Path:
    """History images and the default SQLite DB. `BACKDROP_DATA_DIR`, default ./data."""
    return Path(os.environ.get("BACKDROP_DATA_DIR", "data")).resolve()


def database_url() -> str:
    """`BACKDROP_DATABASE_URL`, default sqlite:///<data dir>/history.db. A team shares one
    PostgreSQL history with postgresql+psycopg://user:password@host:5432/dbname (core/history)."""
    return os.environ.get("BACKDROP_DATABASE_URL") or f"sqlite:///{data_dir() / 'history.db'}"


def blob_url() -> str:
    """Where history images are stored: `BACKDROP_BLOB_URL`; empty (default) = the data dir.
    A folder path (or file:///folder: a mounted network filesystem works as is) or
    s3://bucket/prefix for S3-compatible object storage shared by a team (core/history/blobs.py;
    endpoint BACKDROP_S3_ENDPOINT_URL or AWS_ENDPOINT_URL, credentials from the AWS_* settings)."""
    return os.environ.get("BACKDROP_BLOB_URL", "").strip()


def weights_dir() -> Path:
    """Model files. `BACKDROP_WEIGHTS_DIR`, default ./weights."""
    return Path(os.environ.get("BACKDROP_WEIGHTS_DIR", "weights")).resolve()


def default_segmenter() -> str:
    """`BACKDROP_SEGMENTER`, default sam2-tiny (fastest image embedding on a CPU)."""
    return os.environ.get("BACKDROP_SEGMENTER", "sam2-tiny")


def default_inpaint_model() -> str:
    """`BACKDROP_INPAINT_MODEL`, default SD 1.5 inpainting."""
    return os.environ.get("BACKDROP_INPAINT_MODEL", "sd15-inpainting")


MODES = ("fast", "quality")


def default_mode() -> str:
    """`BACKDROP_MODE` (fast | quality), else fast without a CUDA GPU (CPU, Apple silicon: a
    few-step distilled LoRA) and quality with one (30 full steps)."""
    mode = os.environ.get("BACKDROP_MODE", "").strip().lower()
    if mode in MODES:
        return mode
    from core import devices
    try:
        return "quality" if devices.pick().startswith("cuda") else "fast"
    except Exception:   # an unusable BACKDROP_DEVICE is reported where the model loads
        return "fast"


def server_url() -> str:
    """`BACKDROP_SERVER_URL`: the team service (python -m core serve) the app and the CLI hand their
    work to; empty (the default) = everything runs in this process."""
    return os.environ.get("BACKDROP_SERVER_URL", "").strip()
