"""Segmentation: clicks (and/or a box) on a photo -> subject mask.

    seg = get_segmenter("sam2-tiny")            # any `segment` model of core.weights
    seg.prepare(rgb)                            # the image embedding, once per image (slow)
    result = seg.segment(rgb, SegmentRequest((Click(220, 150),)), out_size=(w, h))   # cheap
    result.mask                                 # HxW uint8, 255 = subject

Where things are (one idea per file):
  types.py     Click, SegmentRequest, SegmentResult, the Segmenter protocol, input checks
  cache.py     image_key, EmbeddingCache (per-image embeddings), the two-phase base class and the
               one resampling of low-res logits into masks
  sam.py       Segment Anything (segment_anything): SamSegmenter, load_sam
  sam2.py      SAM 2.1 (transformers): Sam2Segmenter, load_sam2
  samhq.py     SAM-HQ (transformers): SamHQSegmenter, load_sam_hq (HQ features cached per image)
  decoder.py   the click path shared by both: their mask decoder with the image-only half done once
  grabcut.py   OpenCV GrabCut, the fallback that needs no weights
  here         the registry of loaded segmenters: get_segmenter, clear_segmenters

Conventions: images are RGB uint8 HxWx3; clicks and boxes are (x, y) pixels of the ORIGINAL image;
sizes are (width, height); masks are bool (N, H, W) with a score per candidate.

Loaded segmenters (= models) are shared by every session and thread; per-image state lives in each
segmenter's lock-protected embedding cache, never in a shared predictor object. At most
`MAX_LOADED` are kept (least recently used dropped first); a dropped one still works for whoever
holds it and is freed when nobody does. Heavy libraries are imported inside functions.
"""
from __future__ import annotations

from core import weights
from core.devices import pick as default_device
from core.errors import InvalidOptionError
from core.loaded import LoadedModels
from core.segment.cache import DEFAULT_CACHE_SIZE, EmbeddingCache, image_key
from core.segment.cache import _masks_from_low_res  # noqa: F401 - used by bench/click_latency.py
from core.segment.grabcut import GrabCutSegmenter
from core.segment.sam import SamSegmenter, load_sam
from core.segment.sam2 import Sam2Segmenter, load_sam2
from core.segment.samhq import SamHQSegmenter, load_sam_hq
from core.segment.types import Click, SegmentRequest, SegmentResult, Segmenter
from core.tiny import build_tiny_sam, build_tiny_sam_model

__all__ = [
    "Click", "SegmentRequest", "SegmentResult", "Segmenter", "EmbeddingCache",
    "SamSegmenter", "Sam2Segmenter", "SamHQSegmenter", "GrabCutSegmenter",
    "SEGMENTERS", "DEFAULT_CACHE_SIZE", "MAX_LOADED", "get_segmenter", "loaded_segmenters",
    "clear_segmenters", "image_key",
    "build_tiny_sam", "build_tiny_sam_model", "load_sam", "load_sam2", "load_sam_hq", "default_device",
]

#: Names accepted by `get_segmenter`: the `segment` models of the weights registry.
SEGMENTERS = tuple(s.name for s in weights.specs("segment"))

#: Loaded segmenters kept at once (SAM ViT-H alone is 2.5 GB).
MAX_LOADED = 4

# ----------------------------------------------------------------------------- loaded segmenters
_LOADED: "LoadedModels[Segmenter]" = LoadedModels(lambda: MAX_LOADED)   # (name, resolved path) ->


def _loaded(key: tuple, load) -> Segmenter:
    """The registry entry for `key`, loading it with `load()` (once) when absent."""
    return _LOADED.get(key, load)


def get_segmenter(name: str) -> Segmenter:
    """The shared segmenter for a registry name (see `SEGMENTERS`), loaded once and kept while it is
    among the `MAX_LOADED` most recently used.

    Raises InvalidOptionError for an unknown name and MissingWeightsError (naming the file, its size
    and `python -m core models download NAME`) when the model is not on disk. Entries are keyed by
    name and resolved path, so pointing BACKDROP_WEIGHTS_DIR elsewhere loads the files found there.
    """
    known = [s.name for s in weights.specs("segment")]
    if not isinstance(name, str) or name not in known:
        raise InvalidOptionError(f"unknown segmenter {name!r}; known: {', '.join(known)}")
    spec = weights.get_spec(name, "segment")
    if spec.kind == "builtin":
        return _loaded((name, None), lambda: GrabCutSegmenter(name))
    path = weights.resolve(name, "segment")

    def load():
        if spec.kind in ("sam", "tiny-sam"):
            return SamSegmenter(name, load_sam(spec, path))
        if spec.kind == "sam2":
            return load_sam2(spec, path)
        if spec.kind in ("sam-hq", "tiny-sam-hq"):
            return load_sam_hq(spec, path)
        raise InvalidOptionError(f"segmenter {name!r} has unsupported kind {spec.kind!r}")  # pragma: no cover

    return _loaded((name, str(path)), load)


def loaded_segmenters() -> list[str]:
    """Names of the segmenters kept loaded, least recently used first."""
    return [name for (name, _), _ in _LOADED.items()]


def clear_segmenters() -> None:
    """Forget every loaded segmenter (frees their models and embeddings once nobody holds them)."""
    _LOADED.clear()
