"""Editor logic: photo intake, clicks -> mask at preview size, overlay, and the job request.

A click travels: pages/editor.py (streamlit_image_coordinates) -> `apply_canvas_value` here (maps
displayed pixels to ORIGINAL pixels and records the click) -> `segment_preview` here ->
core.segment (masks at the PREVIEW size; the embedding was computed once by `prepare`).
The browser only ever receives the downscaled preview JPEG with the overlay drawn on it.

Every function takes the session-state mapping explicitly, so tests can drive it with
AppTest.session_state or a plain dict.
"""
from __future__ import annotations

import hashlib
import io
from collections.abc import MutableMapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import numpy as np

from core import config
from ui import state as S
from ui import tasks

PREVIEW_SIDE = 1024          # long side of what the browser gets
CANVAS_JPEG_QUALITY = 80
MIN_BOX_PX = 6               # a "drag" shorter than this (displayed px) is a click
NO_EMBEDDING = {"grabcut"}   # segmenters that keep nothing per image: segment the preview directly
UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "tif", "tiff", "bmp", "gif", "heic", "heif"]

SAMPLES = {  # label -> skimage.data function (bundled with scikit-image, no download)
    "Astronaut": "astronaut",
    "Coffee cup": "coffee",
    "Cat": "chelsea",
}


# ----------------------------------------------------------------------------- photo intake
def load_photo(state: MutableMapping, image, name: str) -> None:
    """Make `image` (core.images.LoadedImage) the photo being edited; forget the old clicks/results."""
    from core.images import make_preview

    state["photo"] = image
    state["photo_name"] = name
    state["preview"] = make_preview(image.rgb, PREVIEW_SIDE)
    state["prompts"] = []
    state["candidate"] = None
    state["seg_cache"] = {}
    state["canvas_cache"] = None
    state["result"] = None
    state["job_notice"] = None
    state["prepare"] = None


def load_upload(state: MutableMapping, data: bytes, name: str):
    """Read an uploaded file (raises ImageError with one line when it is not a usable photo)."""
    from core.images import load_image

    image = load_image(data)
    load_photo(state, image, name)
    return image


def sample_bytes(key: str) -> bytes:
    """PNG bytes of a bundled sample photo (goes through load_image like any upload)."""
    from PIL import Image
    from skimage import data

    buf = io.BytesIO()
    Image.fromarray(getattr(data, key)()).save(buf, format="PNG")
    return buf.getvalue()


def load_sample(state: MutableMapping, label: str) -> None:
    load_upload(state, sample_bytes(SAMPLES[label]), f"{SAMPLES[label]}.png")


# ----------------------------------------------------------------------------- clicks
def preview_size(state: MutableMapping) -> tuple[int, int]:
    rgb = state["preview"].rgb
    return rgb.shape[1], rgb.shape[0]


def _to_original(state: MutableMapping, value: dict, x: float, y: float) -> tuple[int, int]:
    """Displayed pixels (the component's x, y at its displayed width/height) -> original pixels."""
    pw, ph = preview_size(state)
    dw = float(value.get("width") or pw)
    dh = float(value.get("height") or ph)
    return state["preview"].to_original(x * pw / dw, y * ph / dh)


def apply_canvas_value(state: MutableMapping, value: Optional[dict]) -> bool:
    """Record the click or box the image component reported; True when something new was added.

    `value` is what streamlit_image_coordinates returns: {"x", "y", "width", "height", "unix_time"}
    for a click, {"x1", "y1", "x2", "y2", "width", "height", "unix_time"} for a drag. The same value
    comes back on every rerun, so events are de-duplicated by unix_time.
    """
    if not value or state.get("photo") is None or state.get("preview") is None:
        return False
    event = value.get("unix_time")
    if event is not None and event == state.get("canvas_event"):
        return False
    state["canvas_event"] = event
    label = 0 if state.get("click_mode") == S.REMOVE else 1
    if "x1" in value:
        x1, y1, x2, y2 = (float(value[k]) for k in ("x1", "y1", "x2", "y2"))
        if abs(x2 - x1) >= MIN_BOX_PX and abs(y2 - y1) >= MIN_BOX_PX:
            ox1, oy1 = _to_original(state, value, min(x1, x2), min(y1, y2))
            ox2, oy2 = _to_original(state, value, max(x1, x2), max(y1, y2))
            if ox2 > ox1 and oy2 > oy1:
                _push(state, {"kind": "box", "box": (ox1, oy1, ox2, oy2)})
                return True
            return False
        x, y = x1, y1   # no real drag: treat it as a click
    else:
        x, y = float(value["x"]), float(value["y"])
    ox, oy = _to_original(state, value, x, y)
    _push(state, {"kind": "point", "x": ox, "y": oy, "label": label})
    return True


def add_click(state: MutableMapping, x: float, y: float, label: int = 1) -> None:
    """Add a click given in ORIGINAL pixels (used by 'edit from here' and tests)."""
    _push(state, {"kind": "point", "x": float(x), "y": float(y), "label": int(label)})


def _push(state: MutableMapping, prompt: dict) -> None:
    state["prompts"] = [*state.get("prompts", []), prompt]   # reassign: never mutate in place
    state["candidate"] = None          # a new click picks the best candidate again


def undo(state: MutableMapping) -> None:
    state["prompts"] = list(state.get("prompts", []))[:-1]
    state["candidate"] = None


def clear(state: MutableMapping) -> None:
    state["prompts"] = []
    state["candidate"] = None


def clicks(state: MutableMapping):
    from core.segment import Click
    return tuple(Click(p["x"], p["y"], p["label"]) for p in state.get("prompts", [])
                 if p["kind"] == "point")


def box(state: MutableMapping) -> Optional[tuple[float, float, float, float]]:
    boxes = [p["box"] for p in state.get("prompts", []) if p["kind"] == "box"]
    return tuple(float(v) for v in boxes[-1]) if boxes else None


def has_subject(state: MutableMapping) -> bool:
    return bool(state.get("prompts"))


def prompt_summary(state: MutableMapping) -> str:
    pts = clicks(state)
    pos = sum(1 for c in pts if c.label == 1)
    parts = [f"{pos} add", f"{len(pts) - pos} remove"]
    if box(state):
        parts.append("1 box")
    return ", ".join(parts)


# ----------------------------------------------------------------------------- segmentation
def _seg_key(state: MutableMapping, segmenter_name: str) -> str:
    raw = repr((state["photo"].hash, segmenter_name, state.get("prompts")))
    return hashlib.sha1(raw.encode()).hexdigest()[:16]


def segment_preview(state: MutableMapping, segmenter, segmenter_name: str):
    """SegmentResult at the preview size for the current clicks (cached; None without clicks)."""
    from core.segment import SegmentRequest

    if not has_subject(state):
        return None
    key = _seg_key(state, segmenter_name)
    cache = state.get("seg_cache") or {}
    if key not in cache:
        if segmenter_name in NO_EMBEDDING:
            # GrabCut works on a <= 512 px copy anyway: start from the preview, not the 12 MP photo
            from core.segment import Click
            s = state["preview"].scale
            b = box(state)
            request = SegmentRequest(clicks=tuple(Click(c.x * s, c.y * s, c.label) for c in clicks(state)),
                                     box=None if b is None else tuple(v * s for v in b), multimask=True)
            result = segmenter.segment(state["preview"].rgb, request, out_size=preview_size(state))
        else:
            request = SegmentRequest(clicks=clicks(state), box=box(state), multimask=True)
            result = segmenter.segment(state["photo"].rgb, request, out_size=preview_size(state))
        cache = {key: result}          # one entry: the current clicks
        state["seg_cache"] = cache
    return cache[key]


def candidate_key(state: MutableMapping, segmenter_name: str) -> str:
    """Widget key of the candidate picker: new for every new segmentation, so it resets to best."""
    return "cand-" + _seg_key(state, segmenter_name)


def chosen(state: MutableMapping, result) -> int:
    index = state.get("candidate")
    if index is None or not 0 <= index < len(result.masks):
        return int(result.best)
    return int(index)


def mask_options(state: MutableMapping):
    from core.masks import MaskOptions
    return MaskOptions(grow=int(state.get("grow", 0)), feather=int(state.get("feather", 0)),
                       invert=bool(state.get("invert", False)))


def _scaled(px: int, scale: float) -> int:
    if px == 0:
        return 0
    v = int(round(px * scale))
    return v if v != 0 else (1 if px > 0 else -1)


def preview_mask(state: MutableMapping, result) -> np.ndarray:
    """The chosen candidate at preview size with grow/invert/feather applied (scaled to preview).
    The soft edge is compose's own matte, so the preview shows the edge the saved result gets."""
    from core.compose import MAX_FEATHER, alpha_matte
    from core.masks import MaskOptions, refine

    scale = state["preview"].scale
    mask = np.where(result.masks[chosen(state, result)], 255, 0).astype(np.uint8)
    grow_px, inv = _scaled(int(state.get("grow", 0)), scale), bool(state.get("invert", False))
    if grow_px or inv:
        mask = refine(mask, MaskOptions(grow=grow_px, invert=inv))
    f = min(_scaled(int(state.get("feather", 0)), scale), MAX_FEATHER)
    return alpha_matte(mask, f) if f > 0 else mask


def _preview_clicks(state: MutableMapping):
    from core.segment import Click
    s = state["preview"].scale
    return tuple(Click(c.x * s, c.y * s, c.label) for c in clicks(state))


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
    b = box(state)
    if b is not None:
        rgb = _draw_box(rgb, b, state["preview"].scale)
    return rgb


class EncodedImage:
    """Already-encoded JPEG bytes that streamlit_image_coordinates can 'save' (no re-encode)."""

    def __init__(self, data: bytes):
        self.data = data

    def save(self, fp, format: str = "JPEG", **_: Any) -> None:  # noqa: A002 - PIL's signature
        fp.write(self.data)


def canvas_image(state: MutableMapping, segmenter_name: str, result) -> EncodedImage:
    """What the browser receives for the clickable photo: the preview JPEG with overlay (cached)."""
    from core.images import encode_jpeg

    key = (_seg_key(state, segmenter_name) if result is not None else state["photo"].hash,
           None if result is None else chosen(state, result),
           state.get("grow"), state.get("feather"), state.get("invert"))
    cached = state.get("canvas_cache")
    if cached is None or cached[0] != key:
        mask = None if result is None else preview_mask(state, result)
        data = encode_jpeg(canvas_rgb(state, mask), quality=CANVAS_JPEG_QUALITY)
        cached = (key, data)
        state["canvas_cache"] = cached
    return EncodedImage(cached[1])


def candidate_thumbnails(state: MutableMapping, result, segmenter_name: str, side: int = 240) -> list[bytes]:
    """One small JPEG per candidate mask (to choose among SAM's guesses); cached per segmentation.

    A plain tint (no outline): at 240 px that is all the eye needs, and it costs ~1 ms a thumbnail.
    """
    import cv2

    key = _seg_key(state, segmenter_name)
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


# ----------------------------------------------------------------------------- embedding
def start_prepare(state: MutableMapping, segmenter) -> tasks.Task:
    """Compute the photo's embedding in the background as soon as it is loaded."""
    rgb = state["photo"].rgb
    task = tasks.start("prepare", lambda progress, cancel: segmenter.prepare(rgb),
                       label="preparing the photo for clicks")
    task.segmenter = getattr(segmenter, "name", "")
    state["prepare"] = task
    return task


# ----------------------------------------------------------------------------- background + job
def background_spec(state: MutableMapping):
    from core.compose import BackgroundSpec
    from core.errors import InvalidOptionError

    kind = state.get("bg_kind", S.BG_SD)
    if kind == S.BG_SD:
        return BackgroundSpec.parse("sd")
    if kind == S.BG_COLOR:
        return BackgroundSpec.parse(f"color:{state.get('bg_color', '#FFFFFF')}")
    if kind == S.BG_BLUR:
        return BackgroundSpec.parse(f"blur:{int(state.get('blur_radius', 25))}")
    if kind == S.BG_IMAGE:
        path = state.get("bg_image_path")
        if not path:
            raise InvalidOptionError("upload a background photo first (Background → Image)")
        return BackgroundSpec.parse(f"image:{path}")
    return BackgroundSpec.parse("transparent")


def store_background_image(state: MutableMapping, data: bytes) -> None:
    """Keep an uploaded background photo under the data dir (content-addressed) for the job."""
    from core.images import load_image, save_image

    image = load_image(data)
    folder = config.data_dir() / "backgrounds"
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{image.hash[:32]}.png"
    if not path.exists():
        save_image(image.rgb, path)
    from ui.widgets import display_image
    state["bg_image"] = display_image(image.rgb, 320)    # only the small preview is kept
    state["bg_image_path"] = str(path)


def inpaint_request(state: MutableMapping):
    from core.errors import InvalidOptionError
    from core.inpaint import InpaintRequest

    prompt = str(state.get("prompt", "")).strip()
    if not prompt:
        raise InvalidOptionError("describe the new background in the prompt (e.g. 'a sunny beach')")
    seed = int(state.get("seed", -1))
    return InpaintRequest(prompt=prompt, negative=str(state.get("negative", "")).strip(),
                          steps=int(state.get("steps", 25)), guidance=float(state.get("guidance", 7.5)),
                          seed=None if seed < 0 else seed, variants=int(state.get("variants", 1)))


def job_request(state: MutableMapping, segmenter_name: str):
    """The JobRequest for the current photo, clicks, mask options and background widgets."""
    from core.errors import InvalidOptionError
    from core.jobs import JobRequest

    if state.get("photo") is None:
        raise InvalidOptionError("load a photo first (upload one or pick a sample)")
    if not has_subject(state):
        raise InvalidOptionError("click on the subject first so Backdrop knows what to keep")
    spec = background_spec(state)
    sd = spec.kind == "sd"
    return JobRequest(image=state["photo"], background=spec, clicks=clicks(state), box=box(state),
                      candidate=state.get("candidate"), segmenter=segmenter_name,
                      mask_options=mask_options(state),
                      inpaint=inpaint_request(state) if sd else None,
                      model=state.get("inpaint_model") or config.default_inpaint_model(),
                      source_name=state.get("photo_name", ""))


def start_generation(state: MutableMapping, segmenter_name: str) -> tasks.Task:
    """Validate the widgets, then run the job in the background (raises BackdropError on bad input).

    The worker also makes the browser-sized previews of the outputs, so later reruns only send
    cached bytes.
    """
    from core.jobs import run_job
    from ui.widgets import display_image

    request = job_request(state, segmenter_name)

    def work(progress, cancel):
        job = run_job(request, progress=progress, cancel=cancel)
        return {"job": job, "original": display_image(request.image.rgb),
                "previews": [display_image(o) for o in job.outputs]}

    task = tasks.start("generate", work, label="generating the background")
    task.request = request
    state["job"] = task
    return task


def collect_result(state: MutableMapping) -> Optional[tasks.Task]:
    """When the job has finished: move its outputs into state["result"]; return the finished task."""
    task = state.get("job")
    if task is None or not task.done:
        return None
    state["job"] = None
    if task.result is not None:
        r = task.result["job"]
        state["result"] = {"run_id": r.run_id, "outputs": r.outputs, "seeds": r.seeds,
                           "timings": r.timings, "original": task.result["original"],
                           "previews": task.result["previews"], "name": Path(task.request.source_name or "photo").stem,
                           "background": str(task.request.background)}
        if r.record_error:   # the outputs are fine and downloadable; only the history failed
            state["job_notice"] = ("warning", f"Done in {task.elapsed:.1f} s, but the run is not in "
                                   f"History: {r.record_error}. Download the result below.")
        else:
            state["job_notice"] = ("success", f"Done in {task.elapsed:.1f} s"
                                   + (f" — saved to History as run #{r.run_id}." if r.run_id else "."))
    elif task.cancelled:
        state["job_notice"] = ("warning", "Cancelled: " + (task.error or "the run was stopped."))
    else:
        state["job_notice"] = ("error", task.error or "The run failed.")
    return task


STAGE_TEXT = {"starting": "Starting", "mask": "Cutting out the subject", "load model": "Loading the model",
              "diffusion": "Painting the background", "compose": "Putting the subject back",
              "done": "Saving"}


def progress_text(task: tasks.Task) -> str:
    stage = STAGE_TEXT.get(task.stage, task.stage.capitalize())
    return f"{stage}… {int(task.fraction * 100)}% · {task.elapsed:.0f} s"
