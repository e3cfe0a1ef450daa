"""OpenCV GrabCut as a `Segmenter`: the quick fallback that needs no weights. cv2 is imported inside
functions."""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from core.segment.types import SegmentRequest, SegmentResult, _check_call, _check_rgb

__all__ = ["GrabCutSegmenter"]


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
