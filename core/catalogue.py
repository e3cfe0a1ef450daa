"""A run with framing or a shadow (catalogue shots): the subject cut out as a layer, placed on the
frame, the background made at the frame's size, the shadow drawn on it, the subject over it.

    staged = stage(rgb, mask, matte, frame)          # frame None: the photo's own size
    region = staged.paint_region                     # for "sd": what the inpainter repaints
    generated = inpainter.inpaint(staged.canvas, region, ...)   # (sd only) at the frame's size
    out = finish(staged, background, shadow, generated=...)

Without a frame and a shadow core.compose.compose does the same job in one step (jobs.py keeps
using it then). With them the subject's opaque pixels are still the photo's own, bit for bit, when
the frame needs no scaling (core/framing.py), and resampled exactly once when it does.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

import numpy as np

from core.compose import Matte, blurred, compose, cover_fit, read_background_image, solid
from core.errors import InvalidOptionError
from core.framing import Frame, Placement, Shadow, over, place, reframe
from core.spec import Background, Framing

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Staged:
    """The subject as an RGBA layer at the output's size (`layer`), the photo at that size for
    backgrounds made from it (`canvas`: padded by repeating its border), the subject's hard mask
    there (`subject`), and where the frame lies over the photo (`where`, None without a frame)."""
    layer: np.ndarray
    canvas: np.ndarray
    subject: np.ndarray
    where: Optional[Placement]

    @property
    def size(self) -> tuple[int, int]:
        return self.layer.shape[1], self.layer.shape[0]

    @property
    def paint_region(self) -> np.ndarray:
        """HxW uint8, 255 where an AI background is painted: everything the subject does not
        cover opaquely (the padding of a frame included: outpainting)."""
        return np.where(self.layer[..., 3] == 255, 0, 255).astype(np.uint8)


def stage(rgb: np.ndarray, mask: np.ndarray, matte: Optional[Matte],
          frame: Optional[Frame]) -> Staged:
    """Cut the subject (its matte: soft border and cleaned colours, or the hard mask) and place it
    on `frame` (None: the photo's own size and place)."""
    layer = compose(rgb, mask, "transparent", matte=matte)
    if frame is None:
        return Staged(layer, rgb, mask >= 128, None)
    where = place(layer[..., 3], frame)
    framed = reframe(layer, where)
    canvas = reframe(rgb, where, pad="edge")
    return Staged(framed, canvas, framed[..., 3] >= 128, where)


def background_layer(staged: Staged, background: Background,
                     generated: Optional[np.ndarray] = None) -> Optional[np.ndarray]:
    """The background at the output's size: a colour, the photo blurred (the subject left out),
    a photo covering the frame, the generated picture; None for transparent."""
    w, h = staged.size
    if background.kind == "transparent":
        return None
    if background.kind == "color":
        return solid((w, h), background.color)
    if background.kind == "blur":
        return blurred(staged.canvas, staged.subject, background.radius)
    if background.kind == "image":
        return cover_fit(read_background_image(background.path), (w, h))
    if generated is None or generated.shape[:2] != (h, w):
        raise InvalidOptionError(f"an AI background must be painted at {w}x{h} (the frame's size)")
    return generated


def finish(staged: Staged, background: Background, shadow: Optional[Shadow] = None,
           generated: Optional[np.ndarray] = None) -> np.ndarray:
    """The output: the shadow on the background, the subject over both (RGBA when transparent:
    the shadow kept as semi-transparent black, see core.framing.over)."""
    return over(background_layer(staged, background, generated), staged.layer, shadow)


def frame_of(framing: Framing) -> Optional[Frame]:
    """The spec's frame as core.framing.Frame (None: no frame, the photo's own size)."""
    size = framing.size
    return None if size is None else Frame(size[0], size[1], float(framing.margin), framing.align)


def shadow_of(framing: Framing) -> Optional[Shadow]:
    """The spec's shadow as core.framing.Shadow (None: no shadow)."""
    if framing.shadow == "none":
        return None
    return Shadow(framing.shadow, float(framing.shadow_strength), float(framing.shadow_softness))


def auto_subject(rgb: np.ndarray):
    """The subject found with no clicks: a core.auto.AutoSubject (mask HxW uint8 255 = subject,
    confidence 0..1, box). Raises a one-line core.errors.ImageError on a blank photo (no subject)
    or one with no plain backdrop around the subject (an all-subject photo).
    With BiRefNet weights downloaded (core.salient: `birefnet` on a GPU, `birefnet-lite`) the
    learned model finds it (method "birefnet"/"birefnet-lite"); else the studio method, no weights."""
    from core import salient
    from core.auto import find_subject
    name = salient.available()
    if name:
        try:
            return salient.find_subject(rgb, name)
        except salient.ModelLoadError as e:     # a broken download: say so in the log, go on
            log.warning("%s; finding the subject without it", e)
    return find_subject(rgb)
