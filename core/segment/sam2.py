"""SAM 2.1 through transformers (`Sam2Model` + the image part of `Sam2Processor`) as a two-phase
`Segmenter`: `load_sam2` reads a snapshot folder with no network, `Sam2Segmenter` embeds once per
image and decodes clicks on the cached embedding. torch and transformers are imported inside
functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

import numpy as np

from core import cpu_encoders, devices
from core.errors import MissingWeightsError
from core.log import quiet_transformers
from core.segment.cache import DEFAULT_CACHE_SIZE, _EmbeddingSegmenter, _masks_from_low_res, _result
from core.segment.types import SegmentRequest, SegmentResult, _check_call

if TYPE_CHECKING:
    from core import weights

__all__ = ["Sam2Segmenter", "load_sam2"]


@dataclass(frozen=True, eq=False)
class _Sam2Embedding:
    features: list                  # torch feature maps, highest resolution first
    original_size: tuple[int, int]  # (h, w)
    decoder_state: Any = None       # decoder.ImageState: the decoder's image-only work, if fast


class Sam2Segmenter(_EmbeddingSegmenter):
    """SAM 2.1 through transformers' `Sam2Model` + `Sam2Processor` (image processor only).

    The processor resizes the photo to a 1024x1024 square (no padding), so prompts scale by
    (1024 / w, 1024 / h) and the 256x256 low-res logits map onto the whole image.
    """

    def __init__(self, name: str, model, processor, cache_size: int = DEFAULT_CACHE_SIZE):
        from core.segment import decoder as fast_decoder
        super().__init__(name, cache_size)
        self.model = model.eval()
        self.processor = processor
        self.decoder = fast_decoder.for_sam2(model)      # the click path, as for SAM (see there)
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
    on `device` (default: `core.devices.pick()`)."""
    from transformers import Sam2Model, Sam2Processor

    with quiet_transformers():
        try:
            processor = Sam2Processor.from_pretrained(path, local_files_only=True)
            device = devices.pick(device)
            model = Sam2Model.from_pretrained(path, local_files_only=True).to(device)
        except (OSError, ValueError) as e:
            raise MissingWeightsError(
                f"model {spec.name!r}: {path} is incomplete or not a SAM 2.1 folder ({type(e).__name__}); "
                f"delete it and run `python -m core models download {spec.name}`"
            ) from e
    cpu_encoders.use_for_sam2(model, path, device)    # OpenVINO on a CPU when set (docs/cpu.md)
    return Sam2Segmenter(spec.name, model, processor)
