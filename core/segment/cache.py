"""The two-phase machinery shared by SAM and SAM 2.1: image keys, the embedding LRU, the segmenter
base class that owns it, and the one resampling of low-res logits into masks.

`prepare(rgb)` computes the expensive image embedding ONCE per image; `segment` then runs only the
prompt encoder and mask decoder on the cached embedding (no click ever re-embeds). Embeddings live in
a small, lock-protected LRU keyed by `image_key(rgb)` (= `core.images.content_hash`), owned by the
segmenter, so two threads segmenting two images at once each get their own image's masks.

Masks are produced directly at `out_size` (e.g. the preview size) by resampling the 256x256
low-resolution logits once (padding cropped, see `_masks_from_low_res`); full resolution is only
computed when `out_size` is None.
"""
from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from typing import Any, Callable, Optional

import numpy as np

from core.errors import InvalidOptionError
from core.segment.types import SegmentResult, _check_rgb

__all__ = ["DEFAULT_CACHE_SIZE", "image_key", "EmbeddingCache"]

#: Image embeddings kept per segmenter. A SAM entry is 14 MB (the 256x64x64 float32 embedding and
#: the decoder's 10 MB per-image half, see core.segment.decoder), a SAM 2.1 one about 26 MB (three
#: feature levels too), so 6 entries take at most about 160 MB.
DEFAULT_CACHE_SIZE = 6


# ----------------------------------------------------------------------------- image keys
_KEY_MEMO: "OrderedDict[int, tuple[weakref.ref, tuple, str]]" = OrderedDict()
_KEY_MEMO_LOCK = threading.Lock()


def image_key(rgb: np.ndarray) -> str:
    """`core.images.content_hash(rgb)`, memoised by identity for READ-ONLY arrays.

    Hashing a 12 MP photo costs ~25 ms, a third of a click's budget. An array whose
    `flags.writeable` is False is treated as immutable (the convention for loaded images), so its
    hash is remembered for as long as the same array object is alive; writable arrays are hashed on
    every call.
    """
    from core.images import content_hash

    if rgb.flags.writeable:
        return content_hash(rgb)
    ident = (rgb.__array_interface__["data"][0], rgb.shape, rgb.strides)
    with _KEY_MEMO_LOCK:
        hit = _KEY_MEMO.get(id(rgb))
        if hit is not None and hit[0]() is rgb and hit[1] == ident:
            _KEY_MEMO.move_to_end(id(rgb))
            return hit[2]
    key = content_hash(rgb)
    with _KEY_MEMO_LOCK:
        _KEY_MEMO[id(rgb)] = (weakref.ref(rgb), ident, key)
        _KEY_MEMO.move_to_end(id(rgb))
        while len(_KEY_MEMO) > 32:
            _KEY_MEMO.popitem(last=False)
    return key


# ----------------------------------------------------------------------------- the embedding LRU
class EmbeddingCache:
    """Thread-safe LRU with single-flight computation.

    `get_or_compute(key, compute)` returns the cached value, or runs `compute()` once even when
    several threads ask for the same missing key at the same time (the others wait for it). Values
    are computed outside the cache-wide lock, so different keys are computed concurrently.
    `capacity=None` means unbounded. (Loaded models are not kept here: see `core.segment`'s own
    bounded registry.)
    """

    def __init__(self, capacity: Optional[int] = DEFAULT_CACHE_SIZE):
        if capacity is not None and capacity < 1:
            raise InvalidOptionError(f"cache capacity must be >= 1, got {capacity}")
        self.capacity = capacity
        self._data: "OrderedDict[Any, Any]" = OrderedDict()
        self._inflight: dict[Any, threading.Lock] = {}
        self._lock = threading.Lock()

    def get_or_compute(self, key, compute: Callable[[], Any]):
        with self._lock:
            if key in self._data:
                self._data.move_to_end(key)
                return self._data[key]
            key_lock = self._inflight.setdefault(key, threading.Lock())
        with key_lock:
            with self._lock:
                if key in self._data:       # computed by the thread we waited for
                    self._data.move_to_end(key)
                    return self._data[key]
            try:
                value = compute()
                with self._lock:
                    self._data[key] = value
                    self._data.move_to_end(key)
                    while self.capacity is not None and len(self._data) > self.capacity:
                        self._data.popitem(last=False)
            finally:
                with self._lock:
                    if self._inflight.get(key) is key_lock:
                        del self._inflight[key]
        return value

    def __contains__(self, key) -> bool:
        with self._lock:
            return key in self._data

    def __len__(self) -> int:
        with self._lock:
            return len(self._data)

    def keys(self) -> list:
        """Keys from least to most recently used."""
        with self._lock:
            return list(self._data)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


# ----------------------------------------------------------------------------- two-phase segmenters
class _EmbeddingSegmenter:
    """Shared machinery of the two-phase segmenters: the embedding LRU and the encoder counter."""

    name: str

    def __init__(self, name: str, cache_size: int = DEFAULT_CACHE_SIZE):
        self.name = name
        self.cache = EmbeddingCache(cache_size)
        self._count_lock = threading.Lock()
        self.encoder_calls = 0      # how many image embeddings were computed (for tests/benchmarks)

    def prepare(self, rgb: np.ndarray) -> None:
        """Compute and cache the image embedding of `rgb` (HxWx3 uint8). Slow, once per image."""
        _check_rgb(rgb)
        self._embedding(rgb)

    def _embedding(self, rgb: np.ndarray):
        return self.cache.get_or_compute(image_key(rgb), lambda: self._counted_embed(rgb))

    def _counted_embed(self, rgb: np.ndarray):
        with self._count_lock:
            self.encoder_calls += 1
        return self._embed(rgb)

    def _embed(self, rgb: np.ndarray):  # pragma: no cover - abstract
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, cached={len(self.cache)}, encoder_calls={self.encoder_calls})"


# ----------------------------------------------------------------------------- low-res logits -> masks
def _masks_from_low_res(low_res, region_hw: tuple[float, float], out_hw: tuple[int, int],
                        threshold: float = 0.0) -> np.ndarray:
    """Bool masks (N, out_h, out_w) from low-res logits (N, h, w), in ONE bilinear resampling.

    `region_hw` is the part of the low-res grid that shows the image, in low-res pixels from the
    top-left corner (fractional allowed): for SAM the resized image inside the zero-padded square
    frame, (input_h, input_w) * 256 / 1024; for SAM 2.1 the whole grid. Each output pixel centre is
    mapped to its position in that region (half-pixel convention, as `F.interpolate(...,
    align_corners=False)`), i.e. the geometry of SAM's "low-res -> 1024 frame -> crop -> resize", but
    without materialising the 1024x1024 intermediate: at preview size this costs a few ms instead of
    ~100, and at 12 MP it is 3-6x cheaper.
    """
    import cv2

    low = np.ascontiguousarray(low_res.detach().float().cpu().numpy(), dtype=np.float32)
    (rh, rw), (oh, ow) = region_hw, out_hw
    ax, ay = rw / ow, rh / oh                   # low-res px per output px
    m = np.array([[ax, 0.0, 0.5 * ax - 0.5], [0.0, ay, 0.5 * ay - 0.5]], np.float32)   # dst -> src
    flags, border = cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, cv2.BORDER_REPLICATE
    if 1 < low.shape[0] <= 4:       # the candidates as channels of one image: one pass, ~25% faster
        warped = cv2.warpAffine(np.ascontiguousarray(low.transpose(1, 2, 0)), m, (ow, oh), flags=flags,
                                borderMode=border)
        return np.ascontiguousarray((warped > threshold).transpose(2, 0, 1))
    masks = np.empty((low.shape[0], oh, ow), bool)
    for i, logits in enumerate(low):
        warped = cv2.warpAffine(logits, m, (ow, oh), flags=flags, borderMode=border)
        np.greater(warped, threshold, out=masks[i])
    return masks


def _result(masks: np.ndarray, scores) -> SegmentResult:
    """Bool masks (N, H, W) + (N,) torch scores -> SegmentResult, best = argmax of the scores."""
    scores = scores.detach().float().cpu().numpy().astype(np.float32)
    return SegmentResult(masks=masks, scores=scores, best=int(np.argmax(scores)))
