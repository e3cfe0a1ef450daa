"""SAM-HQ (Segment Anything in High Quality) through transformers (`SamHQModel` + the image part
of `SamHQProcessor`) as a two-phase `Segmenter`: `load_sam_hq` reads a snapshot folder with no
network, `SamHQSegmenter` embeds once per image and decodes clicks on the cached embedding.

SAM-HQ is SAM plus an HQ output token whose mask is computed on "HQ features": the image
embedding and the ViT's first global-attention block output, each upscaled 4x by transposed
convolutions. Those depend only on the image, so they are computed ONCE, with the embedding, and
cached; a click runs the prompt encoder, the two-way transformer and the upscaling only.

The click path (`_decode`) follows SysCV's SAM-HQ decoder, which the checkpoints were trained
with: the masks are built from the two-way transformer's image output. transformers' own
`SamHQMaskDecoder.forward` (5.x) upscales the image embedding from BEFORE the transformer
(spatially transposed) instead; its IoU scores are unaffected and match ours exactly
(tests/unit/test_samhq.py checks both). Where the decoder's parts cannot be found (a transformers
change), the model's own forward is used, with a warning. torch and transformers are imported
inside functions.
"""
from __future__ import annotations

import logging
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

__all__ = ["SamHQSegmenter", "load_sam_hq"]

log = logging.getLogger(__name__)

#: What the click path reads from `SamHQModel.mask_decoder`.
_DECODER_PARTS = ("iou_token", "mask_tokens", "hq_token", "transformer", "upscale_conv1", "upscale_layer_norm",
                  "upscale_conv2", "activation", "mask_conv1", "mask_norm", "mask_conv2",
                  "output_hypernetworks_mlps", "hq_mask_mlp", "iou_prediction_head", "num_mask_tokens",
                  "encoder_conv1", "encoder_norm", "encoder_conv2", "compress_vit_conv1", "compress_vit_norm",
                  "compress_vit_conv2")


@dataclass(frozen=True, eq=False)
class _SamHQEmbedding:
    embeddings: Any                 # torch (1, C, 64, 64): the image embedding
    input_size: tuple[int, int]     # (h, w) of the resized image inside the padded square frame
    original_size: tuple[int, int]  # (h, w)
    hq_features: Any = None         # torch (1, C/8, 256, 256): the decoder's image-only HQ features
    intermediate: Any = None        # [torch (1, 64, 64, D)]: the model's own decoder needs it (fallback)


class SamHQSegmenter(_EmbeddingSegmenter):
    """SAM-HQ (transformers `SamHQModel`), prompted with points and/or a box.

    The processor resizes the photo's longest side to 1024 and pads the square at the bottom and
    right (like SAM), so prompts scale by the resize factor and the 256x256 low-res logits cover
    the padded frame; masks are the SAM candidates plus the HQ mask, as SAM-HQ's default
    (`hq_token_only=False`). The model is shared and never mutated.
    """

    def __init__(self, name: str, model, processor, cache_size: int = DEFAULT_CACHE_SIZE):
        import torch

        super().__init__(name, cache_size)
        self.model = model.eval()
        self.processor = processor
        pad = processor.image_processor.pad_size             # the padded square frame, 1024x1024
        self.frame_hw = (int(pad["height"]), int(pad["width"]))
        decoder = model.mask_decoder
        missing = [p for p in _DECODER_PARTS if getattr(decoder, p, None) is None]
        if missing:
            log.warning("SAM-HQ decoder without %s (a transformers change?): clicks use the model's own "
                        "decoder", ", ".join(missing))
        self.fast = not missing
        with torch.inference_mode():    # constant per model: the image-wide positional encoding
            self.image_pe = model.get_image_wide_positional_embeddings()

    # ------------------------------------------------------------------ phase 1: once per image
    def _embed(self, rgb: np.ndarray) -> _SamHQEmbedding:
        import torch

        if not rgb.flags.writeable:     # torch.from_numpy warns about read-only arrays
            rgb = np.array(rgb)
        inputs = self.processor.image_processor(images=rgb, return_tensors="pt",
                                                input_data_format="channels_last")
        pixel_values = inputs["pixel_values"].to(self.model.device, self.model.dtype)
        in_h, in_w = (int(v) for v in inputs["reshaped_input_sizes"][0])
        with torch.inference_mode():
            out = self.model.vision_encoder(pixel_values=pixel_values)
            embeddings, intermediate = out.last_hidden_state, list(out.intermediate_embeddings or [])
            if not self.fast:
                return _SamHQEmbedding(embeddings, (in_h, in_w), tuple(rgb.shape[:2]),
                                       intermediate=intermediate[:1])
            hq = self._hq_features(embeddings, intermediate[0] if intermediate else None)
        return _SamHQEmbedding(embeddings, (in_h, in_w), tuple(rgb.shape[:2]), hq_features=hq)

    def _hq_features(self, embeddings, vit_features):
        """The HQ token's image features: the embedding plus the early ViT features, both upscaled
        4x (what `SamHQMaskDecoder` recomputes on every call)."""
        dec = self.model.mask_decoder
        hq = dec.encoder_conv2(dec.activation(dec.encoder_norm(dec.encoder_conv1(embeddings))))
        if vit_features is not None:
            vit = vit_features.permute(0, 3, 1, 2).contiguous()
            hq = hq + dec.compress_vit_conv2(dec.activation(dec.compress_vit_norm(dec.compress_vit_conv1(vit))))
        return hq

    # ------------------------------------------------------------------ phase 2: every click
    def _decode(self, emb: _SamHQEmbedding, sparse, dense, multimask: bool):
        """(N, 256, 256) low-res logits and (N,) scores for one prompt: SysCV's decoder on the
        transformer's image output, with the cached HQ features."""
        import torch

        dec = self.model.mask_decoder
        n_tokens = dec.num_mask_tokens                      # SAM's 4 mask tokens + the HQ token
        tokens = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hq_token.weight], dim=0)[None, None]
        if sparse is not None:
            tokens = torch.cat([tokens, sparse.to(tokens.dtype)], dim=2)        # (1, 1, T, C)
        src = emb.embeddings + dense
        _, c, h, w = src.shape
        queries, keys = dec.transformer(point_embeddings=tokens, image_embeddings=src,
                                        image_positional_embeddings=self.image_pe, attention_similarity=None)
        src = keys.transpose(2, 3).reshape(1, c, h, w)      # (1, 1, HW, C) -> (1, C, H, W)
        up = dec.activation(dec.upscale_layer_norm(dec.upscale_conv1(src)))
        up = dec.activation(dec.upscale_conv2(up))
        up_hq = dec.mask_conv2(dec.activation(dec.mask_norm(dec.mask_conv1(up)))) + emb.hq_features
        mask_tokens = queries[:, :, 1:1 + n_tokens, :]
        iou = dec.iou_prediction_head(queries[:, :, 0, :])[0, 0]              # (4,)
        picks = [1, 2, 3] if multimask else [0]
        hyper = torch.stack([dec.output_hypernetworks_mlps[i](mask_tokens[0, 0, i]) for i in picks])
        hq_hyper = dec.hq_mask_mlp(mask_tokens[0, 0, n_tokens - 1])
        cc, hh, ww = up.shape[1:]
        masks = (hyper @ up.reshape(cc, hh * ww)).reshape(len(picks), hh, ww)
        masks = masks + (hq_hyper @ up_hq.reshape(cc, hh * ww)).reshape(1, hh, ww)
        scores = iou[picks]
        if multimask:                                       # best first, as transformers orders them
            scores, order = torch.sort(scores, descending=True)
            masks = masks[order]
        return masks, scores

    def segment(self, rgb: np.ndarray, request: SegmentRequest,
                out_size: Optional[tuple[int, int]] = None) -> SegmentResult:
        """Masks for `request` at out_size (w, h) (full size if None); see `Segmenter.segment`."""
        import torch

        w, h, request, (out_w, out_h) = _check_call(rgb, request, out_size)
        emb = self._embedding(rgb)
        in_h, in_w = emb.input_size
        sx, sy = in_w / w, in_h / h                        # original px -> model input frame
        dev, dtype = self.model.device, self.model.dtype
        points = labels = boxes = None
        if request.clicks:
            points = torch.tensor([[[[c.x * sx, c.y * sy] for c in request.clicks]]], dtype=dtype, device=dev)
            labels = torch.tensor([[[c.label for c in request.clicks]]], dtype=torch.int64, device=dev)
        if request.box is not None:
            x1, y1, x2, y2 = request.box
            boxes = torch.tensor([[[x1 * sx, y1 * sy, x2 * sx, y2 * sy]]], dtype=dtype, device=dev)
        with torch.inference_mode():
            if self.fast:
                sparse, dense = self.model.prompt_encoder(input_points=points, input_labels=labels,
                                                          input_boxes=boxes, input_masks=None)
                low_res, iou = self._decode(emb, sparse, dense, request.multimask)
            else:
                out = self.model(image_embeddings=emb.embeddings, intermediate_embeddings=emb.intermediate,
                                 input_points=points, input_labels=labels, input_boxes=boxes,
                                 multimask_output=request.multimask)
                low_res, iou = out.pred_masks[0, 0], out.iou_scores[0, 0]
        # low_res: (N, 256, 256) logits over the padded frame; the image is its top-left (in_h, in_w)
        # part. Resample that part straight to out_size.
        region = (in_h * low_res.shape[-2] / self.frame_hw[0], in_w * low_res.shape[-1] / self.frame_hw[1])
        masks = _masks_from_low_res(low_res, region, (out_h, out_w))
        return _result(masks, iou)


def load_sam_hq(spec: "weights.ModelSpec", path: Path, device: Optional[str] = None) -> SamHQSegmenter:
    """Load a SAM-HQ snapshot folder (config.json, weights, processor config) with no network, on
    `device` (default: `core.devices.pick()`), in float32. Used for the hub models and `tiny-sam-hq`."""
    import torch
    from transformers import SamHQModel, SamHQProcessor

    with quiet_transformers():
        try:
            processor = SamHQProcessor.from_pretrained(path, local_files_only=True)
            model = SamHQModel.from_pretrained(path, local_files_only=True)
        except Exception as e:  # truncated download, wrong files, another architecture
            raise MissingWeightsError(
                f"model {spec.name!r}: {path} is incomplete or not a SAM-HQ folder ({type(e).__name__}); "
                f"delete it and run `python -m core models download {spec.name}`"
            ) from e
    device = devices.pick(device)
    model = model.to(device=device, dtype=torch.float32)
    cpu_encoders.use_for_sam_hq(model, path, device)  # OpenVINO on a CPU when set (docs/cpu.md)
    return SamHQSegmenter(spec.name, model, processor)
