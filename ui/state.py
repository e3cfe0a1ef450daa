"""Session state: one person's clicks, mask, settings and results (never shared between sessions).

`init_session` runs from the router (streamlit_app.py) and fills in what is missing. Widgets never
get a `value=` argument: their initial values live here, so Streamlit never sees two sources of
truth. Widgets whose value must survive a visit to another page are created with
`persist_state="session"` (Streamlit otherwise drops the state of widgets not drawn in a run).
"""
from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any, Optional

from core import config
from core.spec import (DEFAULT_BLUR, EDGE_METHODS, MAX_EDGE_BAND, MAX_SEED, MODE_DEFAULTS, Background,
                        Generation, MaskOptions, RunSpec, Subject)

ADD = "Add (include)"
REMOVE = "Remove (exclude)"
CLICK_MODES = (ADD, REMOVE)

BG_SD = "AI scene"
BG_COLOR = "Colour"
BG_BLUR = "Blur"
BG_IMAGE = "Image"
BG_TRANSPARENT = "Transparent"
BG_KINDS = (BG_SD, BG_COLOR, BG_BLUR, BG_IMAGE, BG_TRANSPARENT)

MODES = config.MODES
MODE_LABELS = {"fast": "Fast", "quality": "Quality"}

# ---------------------------------------------------------------- session state <-> run spec
# The widget of a mask or generation parameter has the field's own name as its key ("steps",
# "grow"), so a new field of core.spec.MaskOptions / Generation needs only its widget: its state
# default comes from the spec, spec_from_state and spec_to_state find it by name; its widget's
# label, range, step and help come from the field too (ui/fields.py). The spec's default is the
# editor's, the CLI's and the API's: one policy, no second list of defaults here.
SPEC_PARTS = {"mask": MaskOptions, "generation": Generation}
STATE_KEYS = {"generation.model": "inpaint_model"}    # where the widget key is not the field name
UI_DEFAULTS: dict[str, Any] = {"prompt": ""}          # the spec requires a prompt: the box starts empty
# Widgets that show the spec's None as an empty choice: the seed (a text box: a browser number
# cannot hold every seed the spec allows), the sampler and the LoRA ("the model's own").
EMPTY_IS_NONE = ("seed", "scheduler", "lora")
# The edge: the "edge" widget says Hard or Soft, the "edge_method" widget which matting method
# (the spec's single "matte:METHOD" value is split in two here and joined in spec_from_state); the
# "edge_band" widget shows 0 for "auto" (the spec's None).
EDGE_HARD, EDGE_MATTE = "hard", "matte"
EDGES = (EDGE_HARD, EDGE_MATTE)
EDGE_LABELS = {EDGE_HARD: "Hard", EDGE_MATTE: "Soft (matting)"}
EDGE_METHOD_LABELS = {"guided": "Guided — fast, no weights", "cf": "Closed-form — slower",
                      "vitmatte": "ViTMatte — learned, needs weights"}
assert tuple(EDGE_METHOD_LABELS) == EDGE_METHODS
BAND_AUTO = 0
# The band slider's stops: every px up to 32, then coarser up to the spec's maximum.
BAND_STOPS = (BAND_AUTO, *range(1, 33), 40, 48, 56, 64, 96, 128, 192, MAX_EDGE_BAND)
BG_KIND_LABELS = {"sd": BG_SD, "color": BG_COLOR, "blur": BG_BLUR, "image": BG_IMAGE,
                  "transparent": BG_TRANSPARENT}


def _key(part: str, name: str) -> str:
    return STATE_KEYS.get(f"{part}.{name}", name)


def _to_state(name: str, value: Any) -> Any:
    if name in EMPTY_IS_NONE:                # None -> "" (random seed, the model's own sampler)
        return "" if value is None else str(value)
    if name == "edge":                       # "matte:cf" -> "matte" (the method has its own widget)
        return EDGE_HARD if value in (None, EDGE_HARD) else EDGE_MATTE
    if name == "edge_band":                  # None ("auto") -> 0
        return BAND_AUTO if value is None else int(value)
    return value


def _seed(value: Any) -> Optional[int]:
    """The seed box's text as the spec's seed: empty = random (None); InvalidOptionError if it is
    not a whole number (the spec checks the range)."""
    from core.errors import InvalidOptionError

    if isinstance(value, int) and not isinstance(value, bool):   # a number kept from before
        return None if value < 0 else value
    text = str(value or "").strip().replace(" ", "").replace("_", "")
    if not text:
        return None
    if not text.isdigit() or len(text) > 30:
        raise InvalidOptionError(f"seed must be a whole number from 0 to {MAX_SEED}, or empty for a "
                                 f"random one, got {str(value)[:30]!r}")
    return int(text)


def _from_state(name: str, value: Any) -> Any:
    if name == "seed":
        return _seed(value)
    if name in EMPTY_IS_NONE:
        return value or None
    if name == "edge_band":
        return None if value in (None, BAND_AUTO) else value
    if isinstance(value, str) and name in ("prompt", "negative"):
        return value.strip()
    return value


def spec_defaults() -> dict[str, Any]:
    """State keys and starting values of the spec-backed widgets (model names come from config)."""
    out: dict[str, Any] = {}
    for part, model in SPEC_PARTS.items():
        for name, field in model.model_fields.items():
            default = UI_DEFAULTS.get(name) if name in UI_DEFAULTS else \
                field.get_default(call_default_factory=True)
            out[_key(part, name)] = _to_state(name, default)
    return out


def spec_from_state(state: MutableMapping, segmenter: Optional[str] = None) -> RunSpec:
    """The RunSpec of the editor's widgets and clicks (InvalidOptionError, one line, if a value is
    bad or something is missing). `segmenter`: the model that will segment (the app may fall back
    to GrabCut), default the chosen one."""
    from core.errors import InvalidOptionError

    prompts = state.get("prompts") or []
    boxes = [p["box"] for p in prompts if p["kind"] == "box"]
    subject = Subject(clicks=tuple((p["x"], p["y"], p["label"]) for p in prompts if p["kind"] == "point"),
                      box=tuple(boxes[-1]) if boxes else None, candidate=state.get("candidate"),
                      segmenter=segmenter or state.get("segmenter"), auto=_found(state))
    values = {part: {name: _from_state(name, state[_key(part, name)])
                     for name in model.model_fields if _key(part, name) in state}
              for part, model in SPEC_PARTS.items()}
    if values["mask"].get("edge") == EDGE_MATTE:
        values["mask"]["edge"] = f"matte:{state.get('edge_method') or EDGE_METHODS[0]}"
    kind = {label: k for k, label in BG_KIND_LABELS.items()}.get(state.get("bg_kind"), "sd")
    if kind == "image" and not state.get("bg_image_path"):
        raise InvalidOptionError("upload a background photo first (Background → Image)")
    background = Background.parse({"sd": "sd", "transparent": "transparent",
                                   "color": f"color:{state.get('bg_color', '#FFFFFF')}",
                                   "blur": f"blur:{float(state.get('blur_radius') or DEFAULT_BLUR)!r}",
                                   "image": f"image:{state.get('bg_image_path')}"}[kind])
    generation = None
    if kind == "sd":
        if not values["generation"].get("prompt"):
            raise InvalidOptionError("describe the new background in the prompt (e.g. 'a sunny beach')")
        generation = Generation(**values["generation"])
    from ui import catalogue
    return RunSpec(subject=subject, mask=MaskOptions(**values["mask"]), background=background,
                   generation=generation, framing=catalogue.framing(state))


def _found(state: MutableMapping) -> bool:
    """The subject was found by "Find the subject" (ui/auto.py): the run finds it again."""
    from ui import auto
    return auto.current(state) is not None


def spec_to_state(state: MutableMapping, spec: RunSpec) -> None:
    """Set the editor's clicks and widgets from a spec ("edit from here", re-run). Generation
    widgets keep their values when the spec has no generation (a colour run)."""
    sub = spec.subject
    prompts: list[dict[str, Any]] = [{"kind": "point", "x": c.x, "y": c.y, "label": c.label}
                                     for c in sub.clicks]
    if sub.box is not None:
        prompts.append({"kind": "box", "box": tuple(sub.box)})
    state["prompts"] = prompts
    state["candidate"] = sub.candidate
    state["auto"], state["auto_redo"] = None, bool(sub.auto)    # found again when the Editor opens
    if sub.segmenter:
        state["segmenter"] = sub.segmenter
    for part, model in SPEC_PARTS.items():
        values = getattr(spec, part)
        if values is None:
            continue
        for name in model.model_fields:
            state[_key(part, name)] = _to_state(name, getattr(values, name))
    if spec.mask.matted:
        state["edge_method"] = spec.mask.edge_method
    bg = spec.background
    state["bg_kind"] = BG_KIND_LABELS[bg.kind]
    from ui import catalogue
    catalogue.to_state(state, spec.framing)
    if bg.kind == "color":
        state["bg_color"] = "#%02X%02X%02X" % tuple(bg.color)
    elif bg.kind == "blur":
        state["blur_radius"] = float(bg.radius)
    elif bg.kind == "image":
        state["bg_image_path"] = bg.path


def _catalogue_defaults() -> dict[str, Any]:
    from ui import catalogue
    return catalogue.defaults()


# Widget-backed keys whose value must survive page switches (not buttons / uploaders).
WIDGET_DEFAULTS: dict[str, Any] = {
    "click_mode": ADD,
    "box_mode": False,
    "auto_on_upload": False,         # "Find the subject on upload" (ui/auto.py)
    **_catalogue_defaults(),         # the Catalogue panel (ui/catalogue.py)
    **{k: v for k, v in spec_defaults().items() if k not in ("inpaint_model", "mode")},
    "edge_method": EDGE_METHODS[0],
    "bg_kind": BG_SD,
    "bg_color": "#FFFFFF",
    "blur_radius": DEFAULT_BLUR,
    "hist_search": "",
    "hist_favourites": False,
    "hist_model": "All",
    "hist_kind": "All",
    "hist_page_size": 12,
}

# Plain (non-widget) state.
STATE_DEFAULTS: dict[str, Any] = {
    "photo": None,            # core.images.LoadedImage of the photo being edited
    "photo_name": "",         # the file name the person gave (display only)
    "preview": None,          # core.images.Preview of the photo (what the browser gets)
    "prompts": [],            # clicks and boxes in ORIGINAL pixels, in the order made (undo pops)
    "canvas_event": None,     # unix_time of the last component event handled (dedupe on rerun)
    "seg_cache": {},          # (key) -> SegmentResult at preview size
    "candidate": None,        # chosen multimask candidate (None = best score)
    "prepare": None,          # ui.tasks.Task computing the image embedding
    "job": None,              # ui.tasks.Task running the generation
    "result": None,           # dict with the last run's outputs (full size) for this session
    "result_view": False,     # the photo area shows the result (else the clickable photo; ui.result)
    "result_pick": 0,         # which variant the result view shows
    "result_seen": None,      # the result dict last taken in (a new one is shown and scrolled to)
    "result_scroll": 0,       # the number of the result taken in (the page scrolls to a new one once)
    "result_prompts": None,   # the clicks the shown result stands for (a change goes back to editing)
    "notice": None,           # (level, one-line text) to show once on the next run
    "job_notice": None,       # (level, one line) how the last generation ended, shown by Generate
    "run_notice": None,       # one line about how the last run was started (a fallback), until the next
    "bg_image": None,         # small preview (JPEG bytes) of the uploaded background photo
    "bg_image_path": None,    # where that background photo is stored for the job
    "upload_id": None,        # file_id of the last upload loaded, so a rerun does not reload it
    "upload_error": None,     # (file_id, one line) while a bad file sits in the uploader
    "bg_upload_id": None,
    "canvas_cache": None,     # (key, JPEG bytes) of the clickable preview with overlay
    "canvas_recent": None,    # the last few (key, JPEG bytes) overlays of this photo
    "subject_drawn": False,   # whether the last whole-page run saw a subject (the canvas fragment
                              # reruns the page when that changes: Undo/Clear/Generate follow)
    "thumb_cache": None,      # (key, [JPEG bytes]) of the candidate thumbnails
    "download": None,         # ui.tasks.Task of a model download (Models page)
    "hist_page": 0,
    "hist_selected": [],      # run ids picked for compare / export
    "hist_open": None,        # run id opened in the detail view
    "hist_confirm_delete": None,
    "hist_compare": False,    # show the compare view for the selected runs
    "hist_filters": None,     # the filters of the last listing (new filters -> page 1)
    "autorun": False,         # "re-run" from History: start generating when the Editor opens
    "session_id": None,       # this page's id in its URL (?s=): its work is kept for a reload (ui.saved)
    "session_saved": None,    # digest of the work last written for a reload
}


def band_stops(current: Any = None) -> list[int]:
    """The band slider's values (0 = auto), with `current` added where a run from the command line
    used a width between the stops, so loading it back shows exactly that width."""
    stops = list(BAND_STOPS)
    if isinstance(current, int) and current not in stops and 0 < current <= MAX_EDGE_BAND:
        stops = sorted(stops + [current])
    return stops


def band_label(px: int) -> str:
    return "Auto" if px == BAND_AUTO else f"{px} px"


def apply_mode(state: MutableMapping, mode: Optional[str] = None) -> None:
    """Set the generation widgets that follow the mode (steps, guidance, sampler) to its defaults:
    what choosing Fast or Quality does; the advanced settings can still be changed after."""
    mode = mode or state.get("mode") or config.default_mode()
    state["mode"] = mode
    for name, value in MODE_DEFAULTS[mode].items():
        state[name] = _to_state(name, value)
    if mode == "quality":
        state["lora"] = _to_state("lora", None)


def init_session(state: MutableMapping) -> None:
    """Fill in every key that is missing (idempotent; the router calls it on every run). On a
    page's first run, its work saved before a reload comes back (ui.saved)."""
    if "segmenter" not in state:
        state["segmenter"] = config.default_segmenter()
    if "inpaint_model" not in state:
        state["inpaint_model"] = config.default_inpaint_model()
    if "mode" not in state:               # fast without a CUDA GPU (decided here, not at import)
        apply_mode(state, config.default_mode())
    for key, value in {**WIDGET_DEFAULTS, **STATE_DEFAULTS}.items():
        if key not in state:
            state[key] = value.copy() if isinstance(value, (list, dict)) else value
    from ui import saved
    saved.attach(state)
