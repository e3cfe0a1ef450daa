"""Segmentation: clicks (and/or a box) on a photo -> subject mask.

Conventions (same as the rest of `core/`):
  * images are RGB uint8 numpy arrays of shape HxWx3;
  * clicks and boxes are in pixels of the ORIGINAL image, (x, y) order, x to the right, y down;
    a box is (x1, y1, x2, y2) with x1 < x2, y1 < y2;
  * sizes are (width, height);
  * masks come back as bool arrays (N, H, W) with the model's quality score per candidate;
    `SegmentResult.mask` is the best candidate as HxW uint8, 255 = subject.

Two phases, as in segment-anything's `SamPredictor`: `prepare(rgb)` computes the expensive image
embedding ONCE per image; `segment(rgb, request, out_size)` runs only the prompt encoder and mask
decoder on the cached embedding (no click ever re-embeds). Embeddings live in a small, lock-protected
LRU keyed by `core.images.content_hash(rgb)`, owned by the segmenter, and the segmenter (= the model)
is shared by every session through `get_segmenter(name)`. Per-image state is never kept in a shared
predictor object, so two threads segmenting two images at once each get their own image's masks.

Masks are produced directly at `out_size` (e.g. the preview size) by resampling the 256x256
low-resolution logits once (padding cropped, see `_masks_from_low_res`); full resolution is only
computed when `out_size` is None.

Heavy libraries (torch, segment_anything, transformers, cv2) are imported inside functions.
"""
from __future__ import annotations

import io
import math
import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, runtime_checkable

import numpy as np

from core import weights
from core.errors import InvalidOptionError, MissingWeightsError

__all__ = [
    "Click", "SegmentRequest", "SegmentResult", "Segmenter", "EmbeddingCache",
    "SamSegmenter", "Sam2Segmenter", "GrabCutSegmenter",
    "SEGMENTERS", "DEFAULT_CACHE_SIZE", "get_segmenter", "clear_segmenters", "image_key",
    "build_tiny_sam", "build_tiny_sam_model", "load_sam", "load_sam2", "default_device",
]

#: Names accepted by `get_segmenter` (the `segment` task of the weights registry).
SEGMENTERS = ("sam-vit-b", "sam-vit-l", "sam-vit-h", "sam2-tiny", "sam2-small", "grabcut", "tiny")

#: Image embeddings kept per segmenter. A SAM entry is 14 MB (the 256x64x64 float32 embedding and
#: the decoder's 10 MB per-image half, see sam_decoder), a SAM 2.1 one about 26 MB (three feature
#: levels too), so 6 entries take at most about 160 MB.
DEFAULT_CACHE_SIZE = 6


# ----------------------------------------------------------------------------- requests / results
@dataclass(frozen=True)
class Click:
    """One click in original-image pixels: (x, y), label 1 = subject (positive), 0 = not subject."""

    x: float
    y: float
    label: int = 1

    def __post_init__(self):
        if not all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                   for v in (self.x, self.y)) or not (math.isfinite(self.x) and math.isfinite(self.y)):
            raise InvalidOptionError(f"click coordinates must be finite numbers, got ({self.x!r}, {self.y!r})")
        if self.label not in (0, 1) or isinstance(self.label, bool):
            raise InvalidOptionError(f"click label must be 1 (subject) or 0 (not subject), got {self.label!r}")


@dataclass(frozen=True)
class SegmentRequest:
    """What the user asked for: clicks and/or a box (original pixels), and whether to return the
    three multimask candidates (True) or a single mask (False).

    A request needs at least one positive click or a box; `validate(width, height)` checks that and
    that every click and the box lie inside the image.
    """

    clicks: tuple[Click, ...] = ()
    box: Optional[tuple[float, float, float, float]] = None
    multimask: bool = True

    def __post_init__(self):
        clicks = tuple(self.clicks)
        for c in clicks:
            if not isinstance(c, Click):
                raise InvalidOptionError(f"clicks must be Click objects, got {type(c).__name__}")
        object.__setattr__(self, "clicks", clicks)
        if self.box is not None:
            try:
                box = tuple(float(v) for v in self.box)
            except (TypeError, ValueError):
                raise InvalidOptionError(f"box must be four numbers (x1, y1, x2, y2), got {self.box!r}") from None
            if len(box) != 4 or not all(math.isfinite(v) for v in box):
                raise InvalidOptionError(f"box must be four finite numbers (x1, y1, x2, y2), got {self.box!r}")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise InvalidOptionError(f"box {box} is empty: x2 must be > x1 and y2 > y1")
            object.__setattr__(self, "box", box)

    @property
    def positives(self) -> tuple[Click, ...]:
        return tuple(c for c in self.clicks if c.label == 1)

    @property
    def negatives(self) -> tuple[Click, ...]:
        return tuple(c for c in self.clicks if c.label == 0)

    def validate(self, width: int, height: int) -> None:
        """Raise InvalidOptionError unless the request is usable on a width x height image."""
        if not self.clicks and self.box is None:
            raise InvalidOptionError("nothing to segment: click on the subject or draw a box around it")
        if not self.positives and self.box is None:
            raise InvalidOptionError("only 'not subject' clicks given: add a click on the subject or a box")
        for c in self.clicks:
            if not (0 <= c.x < width and 0 <= c.y < height):
                raise InvalidOptionError(
                    f"click ({c.x:g}, {c.y:g}) is outside the {width}x{height} image")
        if self.box is not None:
            x1, y1, x2, y2 = self.box
            if x1 < 0 or y1 < 0 or x2 > width or y2 > height:
                raise InvalidOptionError(
                    f"box ({x1:g}, {y1:g}, {x2:g}, {y2:g}) is outside the {width}x{height} image")


@dataclass(frozen=True, eq=False)
class SegmentResult:
    """Masks (N, H, W) bool at the requested size, scores (N,) float32 (the model's predicted
    quality), and `best` = index of the highest score. N = 3 for a SAM multimask request, else 1."""

    masks: np.ndarray
    scores: np.ndarray
    best: int

    @property
    def mask(self) -> np.ndarray:
        """The best candidate as HxW uint8, 255 = subject."""
        return self.masks[self.best].astype(np.uint8) * 255

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the masks."""
        return int(self.masks.shape[2]), int(self.masks.shape[1])


@runtime_checkable
class Segmenter(Protocol):
    """What the app, the CLI and jobs rely on. Implementations are safe to share across threads."""

    name: str

    def prepare(self, rgb: np.ndarray) -> None:
        """Compute and cache the image embedding (slow, once per image); no-op where none exists."""

    def segment(self, rgb: np.ndarray, request: SegmentRequest,
                out_size: Optional[tuple[int, int]] = None) -> SegmentResult:
        """Masks for `request` (original pixels) at out_size (w, h), or full size if None. Cheap
        once `prepare(rgb)` has run (it runs `prepare` itself otherwise)."""


# ----------------------------------------------------------------------------- input checks
def _check_rgb(rgb: Any) -> tuple[int, int]:
    """(width, height) of a valid HxWx3 uint8 array, else InvalidOptionError."""
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        got = (f"{rgb.dtype} array of shape {rgb.shape}" if isinstance(rgb, np.ndarray)
               else type(rgb).__name__)
        raise InvalidOptionError(f"image must be an RGB uint8 array of shape HxWx3, got {got}")
    h, w = rgb.shape[:2]
    if h == 0 or w == 0:
        raise InvalidOptionError(f"image is empty ({w}x{h})")
    return w, h


def _check_request(request: Any, width: int, height: int) -> SegmentRequest:
    if not isinstance(request, SegmentRequest):
        raise InvalidOptionError(f"request must be a SegmentRequest, got {type(request).__name__}")
    request.validate(width, height)
    return request


def _check_out_size(out_size: Any, width: int, height: int) -> tuple[int, int]:
    """(w, h) to produce masks at: out_size, or the image size when None."""
    if out_size is None:
        return width, height
    try:
        w, h = out_size
        ok = all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in (w, h))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise InvalidOptionError(f"out_size must be (width, height) in positive whole pixels, got {out_size!r}")
    return int(w), int(h)


def _check_call(rgb: Any, request: Any, out_size: Any):
    """What every `Segmenter.segment` checks first: (w, h, request, (out_w, out_h))."""
    w, h = _check_rgb(rgb)
    return w, h, _check_request(request, w, h), _check_out_size(out_size, w, h)


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


# ----------------------------------------------------------------------------- caches
class EmbeddingCache:
    """Thread-safe LRU with single-flight computation.

    `get_or_compute(key, compute)` returns the cached value, or runs `compute()` once even when
    several threads ask for the same missing key at the same time (the others wait for it). Values
    are computed outside the cache-wide lock, so different keys are computed concurrently.
    `capacity=None` means unbounded.
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


# ----------------------------------------------------------------------------- SAM (segment_anything)
@dataclass(frozen=True, eq=False)
class _SamEmbedding:
    features: Any                   # torch (1, 256, 64, 64)
    input_size: tuple[int, int]     # (h, w) of the resized image inside the padded square frame
    original_size: tuple[int, int]  # (h, w)
    decoder_state: Any = None       # sam_decoder.ImageState: the decoder's image-only work, if fast


class SamSegmenter(_EmbeddingSegmenter):
    """Segment Anything (`segment_anything.modeling.Sam`), prompted with points and/or a box.

    The model is shared and never mutated; each call builds its own prompt tensors and reads the
    cached features, which is what `SamPredictor.predict` does minus the predictor's mutable state.
    """

    def __init__(self, name: str, model, cache_size: int = DEFAULT_CACHE_SIZE):
        import torch

        from core import sam_decoder
        super().__init__(name, cache_size)
        self.model = model.eval()
        self.img_size = int(model.image_encoder.img_size)
        # The click path: SAM's decoder with its image-only half done once per image (sam_decoder),
        # ~35 ms a click instead of ~55-70 with vit_b on 2 cores. Non-standard decoders use the
        # model's own, with the transposed convolutions in channels-last layout (2-3x faster on CPU).
        self.decoder = sam_decoder.for_sam(model)
        upscaling = getattr(model.mask_decoder, "output_upscaling", None)
        if isinstance(upscaling, torch.nn.Module):
            upscaling.to(memory_format=torch.channels_last)

    def _resized_shape(self, h: int, w: int) -> tuple[int, int]:
        scale = self.img_size / max(h, w)
        return int(h * scale + 0.5), int(w * scale + 0.5)   # = ResizeLongestSide.get_preprocess_shape

    def _embed(self, rgb: np.ndarray) -> _SamEmbedding:
        import torch
        from segment_anything.utils.transforms import ResizeLongestSide

        h, w = rgb.shape[:2]
        resized = ResizeLongestSide(self.img_size).apply_image(rgb)   # HxWx3 uint8, long side img_size
        with torch.inference_mode():
            x = torch.as_tensor(resized, device=self.model.device).permute(2, 0, 1).contiguous()[None]
            features = self.model.image_encoder(self.model.preprocess(x.float()))
        state = self.decoder.prepare(features) if self.decoder is not None else None
        return _SamEmbedding(features, tuple(resized.shape[:2]), (h, w), state)

    def segment(self, rgb: np.ndarray, request: SegmentRequest,
                out_size: Optional[tuple[int, int]] = None) -> SegmentResult:
        """Masks for `request` at out_size (w, h) (full size if None); see `Segmenter.segment`."""
        import torch

        w, h, request, (out_w, out_h) = _check_call(rgb, request, out_size)
        emb = self._embedding(rgb)
        in_h, in_w = emb.input_size
        sx, sy = in_w / w, in_h / h                        # original px -> model input frame
        dev = self.model.device
        with torch.inference_mode():
            points = None
            if request.clicks:
                coords = torch.tensor([[[c.x * sx, c.y * sy] for c in request.clicks]],
                                      dtype=torch.float32, device=dev)
                labels = torch.tensor([[c.label for c in request.clicks]], dtype=torch.int, device=dev)
                points = (coords, labels)
            boxes = None
            if request.box is not None:
                x1, y1, x2, y2 = request.box
                boxes = torch.tensor([[x1 * sx, y1 * sy, x2 * sx, y2 * sy]], dtype=torch.float32, device=dev)
            sparse, dense = self.model.prompt_encoder(points=points, boxes=boxes, masks=None)
            if emb.decoder_state is not None:
                low_res, iou = self.decoder.decode(emb.decoder_state, sparse, request.multimask)
            else:
                low_res, iou = self.model.mask_decoder(
                    image_embeddings=emb.features,
                    image_pe=self.model.prompt_encoder.get_dense_pe(),
                    sparse_prompt_embeddings=sparse,
                    dense_prompt_embeddings=dense,
                    multimask_output=request.multimask,
                )
        # low_res: (1, N, 256, 256) logits over the zero-padded img_size^2 frame; the image is its
        # top-left (in_h, in_w) part. Resample that part straight to out_size.
        cell = low_res.shape[-1] / self.img_size
        masks = _masks_from_low_res(low_res[0], (in_h * cell, in_w * cell), (out_h, out_w),
                                    self.model.mask_threshold)
        return _result(masks, iou[0])


def _build_tiny_sam_model(checkpoint=None):
    """A small random-initialised SAM: ViT encoder with embed_dim 32, depth 2, 2 heads, but the
    official 1024 input / 16 px patches, so the embedding is 256x64x64 and the prompt encoder and
    mask decoder see exactly the shapes of the real models. Same signature as the builders in
    `segment_anything.sam_model_registry`; weights are loaded by `load_sam`, so `checkpoint` must
    be None."""
    if checkpoint is not None:
        raise InvalidOptionError("the tiny SAM builder loads no checkpoint itself; use load_sam")
    from functools import partial

    import torch
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    prompt_dim, image_size, patch = 256, 1024, 16
    sam = Sam(
        image_encoder=ImageEncoderViT(
            depth=2, embed_dim=32, img_size=image_size, mlp_ratio=2,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=2, patch_size=patch,
            qkv_bias=True, use_rel_pos=True, global_attn_indexes=(), window_size=8,
            out_chans=prompt_dim,
        ),
        prompt_encoder=PromptEncoder(
            embed_dim=prompt_dim, image_embedding_size=(image_size // patch, image_size // patch),
            input_image_size=(image_size, image_size), mask_in_chans=4,
        ),
        mask_decoder=MaskDecoder(
            num_multimask_outputs=3,
            transformer=TwoWayTransformer(depth=1, embedding_dim=prompt_dim, mlp_dim=64, num_heads=2),
            transformer_dim=prompt_dim, iou_head_depth=2, iou_head_hidden_dim=32,
        ),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )
    return sam.eval()


def build_tiny_sam_model(seed: int = 0):
    """The tiny SAM with deterministic random weights (`seed`), without touching global RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = _build_tiny_sam_model()
        # Real checkpoints have non-zero positional embeddings; give the tiny one some too.
        torch.nn.init.normal_(model.image_encoder.pos_embed, std=0.02)
    return model


def build_tiny_sam(path, seed: int = 0) -> Path:
    """Save the tiny SAM's state_dict (torch.save, like the official .pth files) to `path`.

    `get_segmenter("tiny")` then loads it back through `load_sam`, the code path of the official
    checkpoints. Deterministic: the same seed gives the same bytes' worth of weights.
    """
    import torch

    from core.files import atomic_write_bytes

    buf = io.BytesIO()
    torch.save(build_tiny_sam_model(seed).state_dict(), buf)
    return atomic_write_bytes(path, buf.getvalue())


def default_device() -> str:
    """"cuda" when a GPU is usable, else "cpu" (segmentation runs in float32 on both)."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def load_sam(spec: "weights.ModelSpec", path: Path, device: Optional[str] = None):
    """Build the SAM architecture for `spec` and load the checkpoint at `path` (read as CPU tensors,
    weights_only), then move it to `device` (default: `default_device()`). Used for the official
    checkpoints and for `tiny` alike."""
    import torch

    if spec.kind == "tiny-sam":
        builder = _build_tiny_sam_model
    else:
        from segment_anything import sam_model_registry
        builder = sam_model_registry[spec.sam_type]
    model = builder(checkpoint=None)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state)
    except Exception as e:  # truncated download, wrong file, other architecture
        raise MissingWeightsError(
            f"model {spec.name!r}: {path} is unreadable or not a {spec.name} checkpoint "
            f"({type(e).__name__}); delete it and run `python -m core models download {spec.name}`"
        ) from e
    return model.to(device or default_device()).eval()


# ----------------------------------------------------------------------------- SAM 2.1 (transformers)
@dataclass(frozen=True, eq=False)
class _Sam2Embedding:
    features: list                  # torch feature maps, highest resolution first
    original_size: tuple[int, int]  # (h, w)
    decoder_state: Any = None       # sam_decoder.ImageState: the decoder's image-only work, if fast


class Sam2Segmenter(_EmbeddingSegmenter):
    """SAM 2.1 through transformers' `Sam2Model` + `Sam2Processor` (image processor only).

    The processor resizes the photo to a 1024x1024 square (no padding), so prompts scale by
    (1024 / w, 1024 / h) and the 256x256 low-res logits map onto the whole image.
    """

    def __init__(self, name: str, model, processor, cache_size: int = DEFAULT_CACHE_SIZE):
        from core import sam_decoder
        super().__init__(name, cache_size)
        self.model = model.eval()
        self.processor = processor
        self.decoder = sam_decoder.for_sam2(model)      # the click path, as for SAM (see there)
        size = processor.image_processor.size
        self.input_hw = (int(size["height"]), int(size["width"]))

    def _embed(self, rgb: np.ndarray) -> _Sam2Embedding:
        import torch

        if not rgb.flags.writeable:     # torch.from_numpy warns about read-only arrays
            rgb = np.array(rgb)
        inputs = self.processor(images=rgb, return_tensors="pt")
        pixel_values = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        with torch.inference_mode():
            features = list(self.model.get_image_embeddings(pixel_values))   # [s0, s1, main]
        state = None
        if self.decoder is not None:
            state = self.decoder.prepare(features[-1], skips=(features[1], features[0]))
            features[1], features[0] = state.skips      # the channels-last copies: keep one of each
        return _Sam2Embedding(features, tuple(rgb.shape[:2]), state)

    def segment(self, rgb: np.ndarray, request: SegmentRequest,
                out_size: Optional[tuple[int, int]] = None) -> SegmentResult:
        """Masks for `request` at out_size (w, h) (full size if None); see `Segmenter.segment`."""
        import torch

        w, h, request, (out_w, out_h) = _check_call(rgb, request, out_size)
        emb = self._embedding(rgb)
        sx, sy = self.input_hw[1] / w, self.input_hw[0] / h
        dev, dtype = self.model.device, self.model.dtype
        kwargs = {}
        if request.clicks:
            kwargs["input_points"] = torch.tensor([[[[c.x * sx, c.y * sy] for c in request.clicks]]],
                                                  dtype=dtype, device=dev)      # (1, 1, N, 2)
            kwargs["input_labels"] = torch.tensor([[[c.label for c in request.clicks]]],
                                                  dtype=torch.int64, device=dev)  # (1, 1, N)
        if request.box is not None:
            x1, y1, x2, y2 = request.box
            kwargs["input_boxes"] = torch.tensor([[[x1 * sx, y1 * sy, x2 * sx, y2 * sy]]],
                                                 dtype=dtype, device=dev)       # (1, 1, 4)
        with torch.inference_mode():
            if emb.decoder_state is not None:
                sparse, _ = self.model.prompt_encoder(input_points=kwargs.get("input_points"),
                                                      input_labels=kwargs.get("input_labels"),
                                                      input_boxes=kwargs.get("input_boxes"), input_masks=None)
                low_res, iou = self.decoder.decode(emb.decoder_state, sparse[:, 0], request.multimask)
                low_res, iou = low_res[0], iou[0]
            else:
                out = self.model(image_embeddings=emb.features, multimask_output=request.multimask, **kwargs)
                low_res, iou = out.pred_masks[0, 0], out.iou_scores[0, 0]
        # low_res: (N, 256, 256) logits over the whole image
        masks = _masks_from_low_res(low_res, tuple(low_res.shape[-2:]), (out_h, out_w))
        return _result(masks, iou)


def load_sam2(spec: "weights.ModelSpec", path: Path, device: Optional[str] = None) -> Sam2Segmenter:
    """Load a SAM 2.1 snapshot folder (config.json, weights, preprocessor config) with no network,
    on `device` (default: `default_device()`)."""
    from transformers import Sam2Model, Sam2Processor
    from transformers.utils import logging as hf_logging

    # Its "Loading weights" bar is noise for a sub-second load. The switch is process-wide: another
    # transformers load at the same moment would lose its bar too, which is harmless.
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        processor = Sam2Processor.from_pretrained(path, local_files_only=True)
        model = Sam2Model.from_pretrained(path, local_files_only=True).to(device or default_device())
    except (OSError, ValueError) as e:
        raise MissingWeightsError(
            f"model {spec.name!r}: {path} is incomplete or not a SAM 2.1 folder ({type(e).__name__}); "
            f"delete it and run `python -m core models download {spec.name}`"
        ) from e
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return Sam2Segmenter(spec.name, model, processor)


# ----------------------------------------------------------------------------- GrabCut (OpenCV)
class GrabCutSegmenter:
    """OpenCV GrabCut: the quick fallback that needs no weights.

    Positive clicks become sure-foreground disks, negative clicks sure-background disks. The initial
    rectangle is the box, or the positive clicks' bounding box grown by `margin` x the long side;
    outside it is sure background. GrabCut runs on a copy scaled to long side <= `max_side`, the
    regions connected to a positive click are kept (all regions with a box only), and the mask is
    upscaled to out_size. Returns one candidate (N = 1) with score 1.0. Nothing heavy is cached.
    """

    def __init__(self, name: str = "grabcut", max_side: int = 512, iterations: int = 5,
                 margin: float = 0.35):
        self.name = name
        self.max_side = max_side
        self.iterations = iterations
        self.margin = margin

    def prepare(self, rgb: np.ndarray) -> None:
        """Nothing to precompute; checks the image."""
        _check_rgb(rgb)

    def segment(self, rgb: np.ndarray, request: SegmentRequest,
                out_size: Optional[tuple[int, int]] = None) -> SegmentResult:
        import cv2

        w, h, request, (out_w, out_h) = _check_call(rgb, request, out_size)

        s = min(1.0, self.max_side / max(w, h))
        sw, sh = max(1, round(w * s)), max(1, round(h * s))
        small = cv2.resize(rgb, (sw, sh), interpolation=cv2.INTER_AREA) if s < 1 else np.ascontiguousarray(rgb)
        pos = [(min(sw - 1, int(c.x * s)), min(sh - 1, int(c.y * s))) for c in request.positives]
        neg = [(min(sw - 1, int(c.x * s)), min(sh - 1, int(c.y * s))) for c in request.negatives]

        if request.box is not None:
            x1, y1, x2, y2 = (v * s for v in request.box)
        else:
            m = self.margin * max(sw, sh)
            xs, ys = [p[0] for p in pos], [p[1] for p in pos]
            x1, y1, x2, y2 = min(xs) - m, min(ys) - m, max(xs) + 1 + m, max(ys) + 1 + m
        x1, y1 = max(0, int(x1)), max(0, int(y1))
        x2, y2 = min(sw, math.ceil(x2)), min(sh, math.ceil(y2))

        mask = np.full((sh, sw), cv2.GC_BGD, np.uint8)
        mask[y1:y2, x1:x2] = cv2.GC_PR_FGD
        if np.count_nonzero(mask == cv2.GC_BGD) < 0.02 * mask.size:
            # The rectangle covers (almost) everything: let the image border seed the background model.
            for edge in (mask[0, :], mask[-1, :], mask[:, 0], mask[:, -1]):
                edge[edge == cv2.GC_PR_FGD] = cv2.GC_PR_BGD
        r = max(2, round(0.015 * max(sw, sh)))
        for x, y in neg:
            cv2.circle(mask, (x, y), r, int(cv2.GC_BGD), -1)
        for x, y in pos:
            cv2.circle(mask, (x, y), r, int(cv2.GC_FGD), -1)

        fg = np.zeros((sh, sw), np.uint8)
        if np.any(mask == cv2.GC_BGD) or np.any(mask == cv2.GC_PR_BGD):
            bgd, fgd = np.zeros((1, 65), np.float64), np.zeros((1, 65), np.float64)
            cv2.grabCut(small, mask, None, bgd, fgd, self.iterations, cv2.GC_INIT_WITH_MASK)
            fg = ((mask == cv2.GC_FGD) | (mask == cv2.GC_PR_FGD)).astype(np.uint8)
            if pos:
                _, labels = cv2.connectedComponents(fg, connectivity=8)
                keep = sorted({int(labels[y, x]) for x, y in pos} - {0})
                fg = np.isin(labels, keep).astype(np.uint8)
        else:   # a one-pixel image or similar: nothing to contrast against
            fg[:] = 1
        full = cv2.resize(fg * 255, (out_w, out_h), interpolation=cv2.INTER_LINEAR) > 127
        if request.box is not None:     # outside the box is sure background: keep it so after upscaling
            bx1, by1, bx2, by2 = request.box
            fx, fy = out_w / w, out_h / h
            keep = np.zeros_like(full)
            keep[int(by1 * fy):math.ceil(by2 * fy), int(bx1 * fx):math.ceil(bx2 * fx)] = True
            full &= keep
        return SegmentResult(masks=full[None], scores=np.ones(1, np.float32), best=0)

    def __repr__(self) -> str:
        return f"GrabCutSegmenter(max_side={self.max_side}, iterations={self.iterations})"


# ----------------------------------------------------------------------------- registry
_LOADED = EmbeddingCache(capacity=None)     # (name, resolved path) -> Segmenter, single-flight loads


def get_segmenter(name: str) -> Segmenter:
    """The shared segmenter for a registry name (see `SEGMENTERS`), loaded once and cached.

    Raises InvalidOptionError for an unknown name and MissingWeightsError (naming the file, its size
    and `python -m core models download NAME`) when the model is not on disk. The cache is keyed by
    name and resolved path, so pointing BACKDROP_WEIGHTS_DIR elsewhere loads the files found there.
    """
    if not isinstance(name, str) or name not in SEGMENTERS:
        raise InvalidOptionError(f"unknown segmenter {name!r}; known: {', '.join(SEGMENTERS)}")
    spec = weights.get_spec(name, "segment")
    if spec.kind == "builtin":
        return _LOADED.get_or_compute((name, None), lambda: GrabCutSegmenter(name))
    path = weights.resolve(name, "segment")

    def load():
        if spec.kind in ("sam", "tiny-sam"):
            return SamSegmenter(name, load_sam(spec, path))
        if spec.kind == "sam2":
            return load_sam2(spec, path)
        raise InvalidOptionError(f"segmenter {name!r} has unsupported kind {spec.kind!r}")  # pragma: no cover

    return _LOADED.get_or_compute((name, str(path)), load)


def clear_segmenters() -> None:
    """Forget every loaded segmenter (frees their models and embeddings once nobody holds them)."""
    _LOADED.clear()
