"""What every segmenter takes and gives: clicks, requests, results, the `Segmenter` protocol, and
the input checks they all run first.

Conventions (same as the rest of `core/`): images are RGB uint8 HxWx3 arrays; clicks and boxes are
in pixels of the ORIGINAL image, (x, y) order, x to the right, y down, a box (x1, y1, x2, y2) with
x1 < x2, y1 < y2; sizes are (width, height); masks come back as bool (N, H, W) with the model's
quality score per candidate, and `SegmentResult.mask` is the best one as HxW uint8, 255 = subject.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar, Optional, Protocol, runtime_checkable

import numpy as np

from core import arrays
from core.spec import Click, Flag, Prompts
from core.errors import InvalidOptionError

__all__ = ["Click", "SegmentRequest", "SegmentResult", "Segmenter"]


# ----------------------------------------------------------------------------- requests / results
# A click is part of the run spec: core.spec.Click(x, y, label), original pixels.


class SegmentRequest(Prompts):
    """What the user asked for: clicks and/or a box (original pixels; validated by the run
    spec's Prompts), and whether to return the three multimask candidates (True) or one mask.

    A request needs at least one positive click or a box; `validate(width, height)` checks that and
    that every click and the box lie inside the image.
    """

    _positional: ClassVar[tuple[str, ...]] = ("clicks", "box", "multimask")
    multimask: Flag = True

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
    """(width, height) of a valid HxWx3 uint8 array, else InvalidOptionError (see core.arrays)."""
    h, w = arrays.rgb(rgb, "image").shape[:2]
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
