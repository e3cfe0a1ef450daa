"""Photos and files for the service: uploads and history sources read through core.images
(pixel cap, format allow-list, one-line ImageError), subject masks, stored files by hash.
Used by the ingress and the model replicas alike; blocking (call from a thread)."""
from __future__ import annotations

from typing import Optional

import numpy as np

from core.errors import HistoryError, InvalidOptionError


class NotFound(HistoryError):
    """A run, photo or file that the history does not have (HTTP 404)."""


def load_upload(blob: bytes, name: str = "the uploaded photo"):
    """An uploaded file -> LoadedImage; ImageError (one line) when it is not an acceptable photo."""
    from core.images import load_image
    return load_image(blob, name=name)


def blob_bytes(store, digest: str, thumb: bool = False) -> Optional[bytes]:
    """The stored file of `digest` (the PNG, or its WebP thumbnail) from the history's image store
    (a folder or S3), None if there is none; HistoryError when the store cannot be read."""
    from core.history import blobs
    rel = blobs.thumb_rel(digest) if thumb else blobs.image_rel(digest)
    try:
        return store.blobs.read(rel)
    except FileNotFoundError:
        return None


def source_image(digest: str):
    """The history's source photo with content hash `digest` -> LoadedImage; NotFound if none."""
    from core.history import RunQuery, open_store
    store = open_store()
    if not store.list_runs(RunQuery(source_hash=digest), limit=1).runs:
        raise NotFound(f"no photo with hash {digest[:12]}… in the history")
    blob = blob_bytes(store, digest)
    if blob is None:
        raise NotFound(f"the file of photo {digest[:12]}… is missing from the image store")
    return load_upload(blob, f"source {digest[:12]}")


def photo(upload: Optional[bytes], source: Optional[str]):
    """The photo of a request: an upload or a history source hash (exactly one)."""
    if upload is not None and source:
        raise InvalidOptionError("give the photo either as an upload or as a history source, not both")
    if upload is not None:
        return load_upload(upload)
    if source:
        return source_image(source)
    raise InvalidOptionError("no photo: upload it as file 'photo' or give 'source' (a history photo hash)")


def mask_array(blob: bytes, image) -> np.ndarray:
    """An uploaded subject mask (any image; brightest channel, > 127 = subject) -> HxW uint8
    0/255 of the photo's size, as `python -m core replace --mask` reads one."""
    mask = load_upload(blob, "the uploaded mask").rgb.max(axis=2)
    if mask.shape != (image.height, image.width):
        raise InvalidOptionError(f"mask is {mask.shape[1]}x{mask.shape[0]} but the photo is "
                                 f"{image.width}x{image.height}; they must be the same size")
    return np.where(mask > 127, 255, 0).astype(np.uint8)
