"""Segment Anything (segment_anything's `Sam`: ViT-B/L/H and the built-in `tiny`) as a two-phase
`Segmenter`: `load_sam` reads a checkpoint, `SamSegmenter` embeds once per image and decodes clicks
on the cached embedding. torch and segment_anything are imported inside functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from core import cpu_encoders, devices, tiny
from core.errors import MissingWeightsError
from core.segment.cache import DEFAULT_CACHE_SIZE, _EmbeddingSegmenter, _masks_from_low_res, _result
from core.segment.types import SegmentRequest, SegmentResult, _check_call

if TYPE_CHECKING:
    from core import weights

__all__ = ["SamSegmenter", "load_sam"]


@dataclass(frozen=True, eq=False)
class _SamEmbedding:
    features: Any                   # torch (1, 256, 64, 64)
    input_size: tuple[int, int]     # (h, w) of the resized image inside the padded square frame
    original_size: tuple[int, int]  # (h, w)
    decoder_state: Any = None       # decoder.ImageState: the decoder's image-only work, if fast


class SamSegmenter(_EmbeddingSegmenter):
    """Segment Anything (`segment_anything.modeling.Sam`), prompted with points and/or a box.

    The model is shared and never mutated; each call builds its own prompt tensors and reads the
    cached features, which is what `SamPredictor.predict` does minus the predictor's mutable state.
    """

    def __init__(self, name: str, model, cache_size: int = DEFAULT_CACHE_SIZE):
        import torch

        from core.segment import decoder as fast_decoder
        super().__init__(name, cache_size)
        self.model = model.eval()
        self.img_size = int(model.image_encoder.img_size)
        # The click path: SAM's decoder with its image-only half done once per image (.decoder),
        # ~35 ms a click instead of ~55-70 with vit_b on 2 cores. Non-standard decoders use the
        # model's own, with the transposed convolutions in channels-last layout (2-3x faster on CPU).
        self.decoder = fast_decoder.for_sam(model)
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


def load_sam(spec: "weights.ModelSpec", path: Path, device: Optional[str] = None):
    """Build the SAM architecture for `spec` and load the checkpoint at `path` (read as CPU tensors,
    weights_only), then move it to `device` (default: `core.devices.pick()`). Used for the official
    checkpoints and for `tiny` alike."""
    import torch

    if spec.kind == "tiny-sam":
        builder = tiny._build_tiny_sam_model
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
    device = devices.pick(device)
    model = model.to(device).eval()
    cpu_encoders.use_for_sam(model, path, device)     # OpenVINO on a CPU when set (docs/cpu.md)
    return model
