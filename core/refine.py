"""Clicks that correct an automatic mask (core.auto): the auto mask is the starting point, each click
adds to it or takes from it.

    result = refine(segmenter, rgb, auto_mask, clicks, out_size=(w, h))

- With Segment Anything (core.segment.sam.SamSegmenter) the auto mask becomes SAM's prompt together
  with the clicks: its box (widened to take in any add click outside it) and the mask itself as
  SAM's mask input (low-resolution logits, as SAM feeds back its own previous mask). SAM then
  decides the outline with the clicks' help: one mask.
- With any other segmenter (GrabCut, SAM 2, SAM-HQ, the service) each click is segmented on its own
  and the region found is added to the mask (an add click) or taken from it (a remove click: only
  the part of the region that is connected to the click inside the mask). Clicks apply in order.

`auto_mask` is HxW uint8 (255 = subject) at any size (scaled to the photo's); clicks are
core.segment.Click in the photo's pixels. The result is a core.segment.SegmentResult at out_size.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from core.segment.types import Click, SegmentRequest, SegmentResult

__all__ = ["refine", "mask_box"]

LOGIT = 10.0            # the mask input's logit inside (+) and outside (-) the auto mask
BOX_PAD = 0.02          # the box given to SAM grows by this share of the photo's long side


def mask_box(mask: np.ndarray) -> Optional[tuple[int, int, int, int]]:
    """(x1, y1, x2, y2) of the mask's pixels >= 128, x2/y2 exclusive; None for an empty mask."""
    ys, xs = np.nonzero(mask >= 128)
    if xs.size == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def _resized(mask: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Bool mask at size (w, h)."""
    import cv2

    if (mask.shape[1], mask.shape[0]) == size:
        return mask >= 128
    return cv2.resize(mask, size, interpolation=cv2.INTER_LINEAR) >= 128


def refine(segmenter, rgb: np.ndarray, auto_mask: np.ndarray, clicks: Sequence[Click],
           out_size: Optional[tuple[int, int]] = None) -> SegmentResult:
    """The auto mask corrected by `clicks` (see the module's docstring), at out_size (w, h; the
    photo's size when None). Without clicks: the auto mask itself."""
    h, w = rgb.shape[:2]
    out_w, out_h = out_size or (w, h)
    clicks = tuple(clicks)
    if not clicks:
        return _one(_resized(auto_mask, (out_w, out_h)), 1.0)
    from core.segment.sam import SamSegmenter

    if isinstance(segmenter, SamSegmenter):
        return _refine_sam(segmenter, rgb, auto_mask, clicks, (out_w, out_h))
    return _refine_regions(segmenter, rgb, auto_mask, clicks, (out_w, out_h))


def _one(mask: np.ndarray, score: float) -> SegmentResult:
    return SegmentResult(masks=mask[None].astype(bool), scores=np.array([score], np.float32), best=0)


def _refine_regions(segmenter, rgb, auto_mask, clicks, out_size) -> SegmentResult:
    import cv2

    out_w, out_h = out_size
    h, w = rgb.shape[:2]
    mask = _resized(auto_mask, out_size)
    for c in clicks:
        found = segmenter.segment(rgb, SegmentRequest(clicks=(Click(c.x, c.y, 1),), multimask=True),
                                  out_size=out_size)
        region = found.masks[found.best]
        x = min(out_w - 1, max(0, int(c.x * out_w / w)))
        y = min(out_h - 1, max(0, int(c.y * out_h / h)))
        if c.label == 1:
            mask = mask | region
            mask[y, x] = True
        else:
            inside = (mask & region).astype(np.uint8)
            inside[y, x] = 1 if mask[y, x] else inside[y, x]
            _, labels = cv2.connectedComponents(inside, connectivity=8)
            if labels[y, x]:
                mask = mask & (labels != labels[y, x])
    return _one(mask, 1.0)


def _refine_sam(segmenter, rgb, auto_mask, clicks, out_size) -> SegmentResult:
    import cv2
    import torch

    from core.segment.cache import _masks_from_low_res, _result

    h, w = rgb.shape[:2]
    full = _resized(auto_mask, (w, h)).astype(np.uint8) * 255
    box = mask_box(full)
    pad = BOX_PAD * max(w, h)
    xs = [c.x for c in clicks if c.label == 1] + ([box[0], box[2]] if box else [])
    ys = [c.y for c in clicks if c.label == 1] + ([box[1], box[3]] if box else [])
    emb = segmenter._embedding(rgb)
    model = segmenter.model
    in_h, in_w = emb.input_size
    sx, sy = in_w / w, in_h / h
    dev = model.device
    # the mask input covers the padded img_size^2 frame at 4x the embedding's resolution
    side = int(model.prompt_encoder.mask_input_size[0])
    cell = side / segmenter.img_size
    logits = np.full((side, side), -LOGIT, np.float32)
    rw, rh = max(1, round(in_w * cell)), max(1, round(in_h * cell))
    small = cv2.resize(full, (rw, rh), interpolation=cv2.INTER_AREA) >= 128
    logits[:rh, :rw] = np.where(small, LOGIT, -LOGIT)
    with torch.inference_mode():
        coords = torch.tensor([[[c.x * sx, c.y * sy] for c in clicks]], dtype=torch.float32, device=dev)
        labels = torch.tensor([[c.label for c in clicks]], dtype=torch.int, device=dev)
        boxes = None
        if xs:
            x1, y1 = max(0.0, min(xs) - pad), max(0.0, min(ys) - pad)
            x2, y2 = min(float(w), max(xs) + pad), min(float(h), max(ys) + pad)
            boxes = torch.tensor([[x1 * sx, y1 * sy, x2 * sx, y2 * sy]], dtype=torch.float32, device=dev)
        masks_in = torch.from_numpy(logits)[None, None].to(dev)
        sparse, dense = model.prompt_encoder(points=(coords, labels), boxes=boxes, masks=masks_in)
        low_res, iou = model.mask_decoder(image_embeddings=emb.features,
                                          image_pe=model.prompt_encoder.get_dense_pe(),
                                          sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense,
                                          multimask_output=False)
    cell = low_res.shape[-1] / segmenter.img_size
    masks = _masks_from_low_res(low_res[0], (in_h * cell, in_w * cell), (out_size[1], out_size[0]),
                                model.mask_threshold)
    return _result(masks, iou[0])
