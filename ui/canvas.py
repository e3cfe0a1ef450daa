"""The clickable photo: what the browser shows (the preview JPEG with the mask overlay, click dots
and box drawn on it, and the candidate thumbnails) and what its clicks mean.

A click travels: pages/editor.py (ui.clicker, the photo component) -> `apply_canvas_value` here (maps
DISPLAYED pixels to ORIGINAL pixels and records the click with ui.prompts) ->
ui.prompts.segment_preview (masks at the PREVIEW size). The browser only ever receives the
downscaled preview JPEG with the overlay drawn on it. Arrays are HxWx3 uint8 RGB, masks HxW uint8.

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import logging
from collections.abc import MutableMapping
from typing import Any, Optional

import numpy as np

from ui import prompts
from ui import state as S
from ui.photo import preview_size

log = logging.getLogger(__name__)
CANVAS_JPEG_QUALITY = 75     # sent on every click: q75 at 1:1 looks like q80, ~15 % fewer bytes
MIN_BOX_PX = 6               # a "drag" shorter than this (displayed px) is a click


# ----------------------------------------------------------------------------- clicks
def _to_original(state: MutableMapping, value: dict, x: float, y: float) -> tuple[int, int]:
    """Displayed pixels (the component's x, y at its displayed width/height) -> original pixels."""
    pw, ph = preview_size(state)
    dw = float(value.get("width") or pw)
    dh = float(value.get("height") or ph)
    return state["preview"].to_original(x * pw / dw, y * ph / dh)


def apply_canvas_value(state: MutableMapping, value: Optional[dict]) -> bool:
    """Record what the photo component (ui.clicker) reported; True when the prompts changed.

    One event is {"x", "y", "width", "height", "unix_time"} for a click (with "label": 0 remove /
    1 add, or "shift": true for a remove; without either the click mode decides),
    {"x1", "y1", "x2", "y2", "width", "height", "unix_time"} for a drag (a box) and
    {"undo": true, "unix_time"} for Ctrl+Z. The component sends the events the page has not drawn
    yet as "events" (oldest first), so quick clicks are not lost while a slow segmenter runs; each
    is applied once, in order (by unix_time). A value without "events" is one event; the same
    value comes back on every rerun, so it is de-duplicated by its unix_time.
    """
    if not value or state.get("photo") is None or state.get("preview") is None:
        return False
    events = value.get("events")
    if not isinstance(events, list):
        event = value.get("unix_time")
        if event is not None and event == state.get("canvas_event"):
            return False
        state["canvas_event"] = event
        return _apply_event(state, value)
    changed = False
    for event in events:
        t, last = event.get("unix_time"), state.get("canvas_event")
        if not isinstance(t, (int, float)) or (isinstance(last, (int, float)) and t <= last):
            continue
        state["canvas_event"] = t
        changed = _apply_event(state, event) or changed
    return changed


def _apply_event(state: MutableMapping, value: dict) -> bool:
    if value.get("undo"):
        if not prompts.has_subject(state):
            return False
        prompts.undo(state)
        return True
    if value.get("label") in (0, 1):
        label = int(value["label"])
    elif value.get("shift"):
        label = 0
    else:
        label = 0 if state.get("click_mode") == S.REMOVE else 1
    if "x1" in value:
        x1, y1, x2, y2 = (float(value[k]) for k in ("x1", "y1", "x2", "y2"))
        if abs(x2 - x1) >= MIN_BOX_PX and abs(y2 - y1) >= MIN_BOX_PX:
            ox1, oy1 = _to_original(state, value, min(x1, x2), min(y1, y2))
            ox2, oy2 = _to_original(state, value, max(x1, x2), max(y1, y2))
            if ox2 > ox1 and oy2 > oy1:
                prompts.add_box(state, (ox1, oy1, ox2, oy2))
                return True
            return False
        x, y = x1, y1   # no real drag: treat it as a click
    else:
        x, y = float(value["x"]), float(value["y"])
    ox, oy = _to_original(state, value, x, y)
    prompts.push(state, {"kind": "point", "x": ox, "y": oy, "label": label})
    return True


# ----------------------------------------------------------------------------- overlay
def _scaled(px: int, scale: float) -> int:
    if px == 0:
        return 0
    v = int(round(px * scale))
    return v if v != 0 else (1 if px > 0 else -1)


def edge_settings(state: MutableMapping) -> tuple:
    """What of the edge controls changes the overlay: ("hard", feather) or ("matte", band) —
    the matting method does not (the overlay always uses Guided, see `preview_mask`)."""
    if state.get("edge", S.EDGE_HARD) == S.EDGE_HARD:
        return (S.EDGE_HARD, state.get("feather"))
    return (S.EDGE_MATTE, state.get("edge_band"))


def preview_band(state: MutableMapping) -> int:
    """The matte's band at preview size: the run's band (the chosen width, or the automatic one
    for the full-size photo) scaled to the preview, at least 1 px."""
    from core.matte import band_width

    band = state.get("edge_band") or band_width(state["photo"].rgb.shape)    # 0 = auto
    return max(1, int(round(band * state["preview"].scale)))


def matte_band(state: MutableMapping) -> Optional[int]:
    """The band the overlay's matte gets: None while the band is Auto (the matte sizes it itself,
    and widens it on a blurred border, as the run does at full size), else the chosen width
    scaled to the preview."""
    return preview_band(state) if state.get("edge_band") else None


def preview_mask(state: MutableMapping, result) -> np.ndarray:
    """The chosen candidate at preview size with grow/invert and the edge applied (scaled to the
    preview). A hard edge's feather is compose's own matte, so the preview shows the edge the saved
    result gets; a soft edge is core.matte's alpha matte of the preview, always with the fast
    Guided method (a click stays quick; the run may use Closed-form or ViTMatte)."""
    from core.compose import alpha_matte

    mask = subject_mask(state, result)
    if state.get("edge", S.EDGE_HARD) != S.EDGE_HARD:
        from core.matte import edge_matte
        return edge_matte(state["preview"].rgb, mask, "guided", matte_band(state),
                          decontaminate=False).alpha()
    f = preview_feather(state)
    return alpha_matte(mask, f) if f > 0 else mask


def subject_mask(state: MutableMapping, result) -> np.ndarray:
    """The chosen candidate at preview size cleaned up as the run will be: fill holes, drop specks,
    grow, invert (pixel sizes scaled to the preview), 0/255."""
    from core.masks import MaskOptions, refine

    scale = state["preview"].scale
    mask = np.where(result.masks[prompts.chosen(state, result)], 255, 0).astype(np.uint8)
    area = int(state.get("min_area") or 0)
    options = MaskOptions(grow=_scaled(int(state.get("grow", 0)), scale), invert=bool(state.get("invert", False)),
                          fill_holes=bool(state.get("fill_holes", False)),
                          min_area=max(1, round(area * scale * scale)) if area else 0)
    if options != MaskOptions():
        mask = refine(mask, options)
    return mask


def preview_feather(state: MutableMapping) -> int:
    from core.compose import MAX_FEATHER
    return min(_scaled(int(state.get("feather", 0)), state["preview"].scale), MAX_FEATHER)


def background_preview(state: MutableMapping, result) -> np.ndarray:
    """The preview with the new (colour, blur, image, transparent) background behind the subject,
    as Generate will make it at full size (ui.background.preview_rgb: core.compose at preview
    size; a soft edge with the Guided matte), with the click dots and box drawn on it."""
    from core.masks import overlay
    from ui import background

    mask = subject_mask(state, result)
    matte, feather = None, preview_feather(state)
    if state.get("edge", S.EDGE_HARD) != S.EDGE_HARD:
        from core.matte import edge_matte
        matte = edge_matte(state["preview"].rgb, mask, "guided", matte_band(state))
    rgb = overlay(background.preview_rgb(state, mask, feather, matte), None, clicks=_preview_clicks(state))
    b = prompts.box(state)
    return rgb if b is None else _draw_box(rgb, b, state["preview"].scale)


def _preview_clicks(state: MutableMapping):
    from core.segment import Click
    s = state["preview"].scale
    return tuple(Click(c.x * s, c.y * s, c.label) for c in prompts.clicks(state))


def _draw_box(rgb: np.ndarray, b, scale: float, color=(255, 200, 0), width: int = 2) -> np.ndarray:
    h, w = rgb.shape[:2]
    x1, y1, x2, y2 = (int(round(v * scale)) for v in b)
    x1, x2 = max(0, min(x1, w - 1)), max(0, min(x2, w - 1))
    y1, y2 = max(0, min(y1, h - 1)), max(0, min(y2, h - 1))
    out = rgb.copy()
    out[y1:y1 + width, x1:x2 + 1] = color
    out[max(y2 - width + 1, 0):y2 + 1, x1:x2 + 1] = color
    out[y1:y2 + 1, x1:x1 + width] = color
    out[y1:y2 + 1, max(x2 - width + 1, 0):x2 + 1] = color
    return out


def canvas_rgb(state: MutableMapping, mask: Optional[np.ndarray]) -> np.ndarray:
    """The preview with the mask overlay, click dots and box drawn (preview-size RGB)."""
    from core.masks import overlay

    rgb = state["preview"].rgb
    if mask is not None:
        rgb = overlay(rgb, mask, clicks=_preview_clicks(state))
    b = prompts.box(state)
    if b is not None:
        rgb = _draw_box(rgb, b, state["preview"].scale)
    return rgb


class EncodedImage:
    """The clickable photo's JPEG bytes (`.data`, what ui.clicker shows), encoded once; `save` writes
    them as they are (no re-encode)."""

    def __init__(self, data: bytes):
        self.data = data

    def save(self, fp, format: str = "JPEG", **_: Any) -> None:  # noqa: A002 - PIL's signature
        fp.write(self.data)


CANVAS_RECENT = 8            # overlays kept per photo: flipping between candidates or edge settings is free


def canvas_image(state: MutableMapping, segmenter_name: str, result) -> EncodedImage:
    """What the browser receives for the clickable photo: the preview JPEG with overlay, cached per
    mask key (segmentation, candidate, the mask clean-up and the edge: feather, or the matte's band) —
    or, with a simple background chosen, the live preview of it (`background_preview`, keyed by
    the background too).
    `state["canvas_cache"]` is the current (key, bytes); `state["canvas_recent"]` keeps the last
    few, so going back to one is not redrawn."""
    from core.images import encode_jpeg
    from ui import background

    shows_background = result is not None and background.preview_on(state)
    key = (prompts.seg_key(state, segmenter_name) if result is not None else state["photo"].hash,
           None if result is None else prompts.chosen(state, result),
           state.get("grow"), state.get("invert"), state.get("fill_holes"), state.get("min_area"),
           edge_settings(state),
           background.preview_key(state) if shows_background else None)
    # what the photo was drawn with: a background photo stored later in the same run (its
    # uploader is below the photo) asks for one more run (ui.background.view_control)
    state["canvas_bg_drawn"] = (result is not None, key[-1])
    cached = state.get("canvas_cache")
    if cached is None or cached[0] != key:
        recent = state.get("canvas_recent")
        if not isinstance(recent, dict) or recent.get("photo") != state["photo"].hash:
            recent = {"photo": state["photo"].hash, "images": {}}
        images = recent["images"]
        data = images.pop(key, None)
        if data is None and shows_background:
            try:
                data = encode_jpeg(background_preview(state, result), quality=CANVAS_JPEG_QUALITY)
            except Exception:    # e.g. the background photo is gone: the mask, as without preview
                log.warning("the background preview could not be drawn", exc_info=True)
        if data is None:
            mask = None if result is None else preview_mask(state, result)
            data = encode_jpeg(canvas_rgb(state, mask), quality=CANVAS_JPEG_QUALITY)
        images[key] = data                       # newest last
        while len(images) > CANVAS_RECENT:
            images.pop(next(iter(images)))
        state["canvas_recent"] = recent
        cached = (key, data)
        state["canvas_cache"] = cached
    return EncodedImage(cached[1])


def candidate_thumbnails(state: MutableMapping, result, segmenter_name: str, side: int = 240) -> list[bytes]:
    """One small JPEG per candidate mask (to choose among SAM's guesses); cached per segmentation.

    A plain tint (no outline): at 240 px that is all the eye needs, and it costs ~1 ms a thumbnail.
    """
    import cv2

    key = prompts.seg_key(state, segmenter_name)
    cached = state.get("thumb_cache")
    if cached is not None and cached[0] == key:
        return cached[1]
    prev = state["preview"].rgb
    s = side / max(prev.shape[:2])
    size = (max(1, round(prev.shape[1] * s)), max(1, round(prev.shape[0] * s)))
    small = cv2.resize(prev, size, interpolation=cv2.INTER_AREA)
    tint = np.empty_like(small)
    tint[:] = (30, 144, 255)
    tinted = cv2.addWeighted(small, 0.5, tint, 0.5, 0.0)
    out = []
    for m in result.masks:
        sm = cv2.resize(m.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)
        thumb = np.where(sm[:, :, None], tinted, small)
        ok, buf = cv2.imencode(".jpg", cv2.cvtColor(thumb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])
        out.append(buf.tobytes())
    state["thumb_cache"] = (key, out)
    return out
