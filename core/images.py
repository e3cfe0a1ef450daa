"""Image intake (being written): see module contract in the task description."""
from __future__ import annotations

import hashlib

import numpy as np


def content_hash(rgb: np.ndarray) -> str:
    """SHA-256 hex of an image array's shape, dtype and bytes: the key for embeddings and storage."""
    h = hashlib.sha256(f"{rgb.shape}|{rgb.dtype}|".encode())
    h.update(np.ascontiguousarray(rgb).data)
    return h.hexdigest()
