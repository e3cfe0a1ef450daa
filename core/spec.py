"""What a run *is*: the one typed definition of its parameters, shared by every layer.

Why one file (~700 lines): the one definition of a run, every part's fields and checks, which the CLI,
the editor, history, compare and the API all read; split, they would have to be read together anyway.

    RunSpec(version=1,
            subject=Subject(clicks=(Click(x, y, label), ...), box=(x1, y1, x2, y2), candidate, segmenter),
            mask=MaskOptions(grow, feather, fill_holes, min_area, invert, edge, edge_band),
            background=Background("sd" | "color" | "blur" | "image" | "transparent", ...),
            generation=Generation(prompt, negative, steps, guidance, strength, seed, variants,
                                  scheduler, model)            # only with background "sd")

Pydantic v2 models, frozen. This module is the one place that validates run parameters and says
what each means: a bad value raises core.errors.InvalidOptionError with one line ("steps must be
from 1 to 150, got 0"). Everything else derives from it: the CLI builds a spec from its arguments,
the editor from its widgets (and back, for "edit from here"), the history stores it as JSON
(`RunSpec.to_json()` / `RunSpec.from_json()`, with `version`) plus a few indexed columns made by
`index_columns()`, compare is `diff()`, export writes `flat()` and `a1111_parameters()`.

Adding a parameter = one field here: its default is the default of the CLI, the API and the editor
alike, its bounds are the editor widget's range, and `ui(...)` in its json_schema_extra gives the
widget's label, step and help, "advanced" (drawn in the editor's Advanced expander) or "hidden"
(no widget of its own, and why); tests/integration/test_spec_widgets.py checks that every field has one or the
other. Coordinates are original-image pixels, (x, y). Never imports torch, numpy-free except for
accepting numpy scalars.
"""
from __future__ import annotations

import json
import math
import re
from typing import Annotated, Any, ClassVar, Literal, Optional

from pydantic import (BaseModel, BeforeValidator, ConfigDict, Field, ValidationError,
                      field_validator, model_validator)

from core import config
from core.errors import InvalidOptionError

SCHEMA_VERSION = 1

MAX_STEPS = 150
MAX_VARIANTS = 8
MAX_GUIDANCE = 30.0
MAX_SEED = 2**63 - 1 - MAX_VARIANTS
MAX_PROMPT_CHARS = 2000
MAX_EDGE_PX = 10_000         # grow: far beyond any photo's needs, far below overflow
MAX_FEATHER = 256
MAX_EDGE_BAND = 256          # matted border, px on each side of the mask edge
EDGE_METHODS = ("guided", "cf", "vitmatte")   # the first is what "matte" alone means
MAX_AREA = 2**40
DEFAULT_BLUR = 20.0
MAX_BLUR = 500.0
MAX_CLICKS = 256
MAX_NAME_CHARS = 500
MAX_FRAME_SIDE = 12000       # framing: the same bounds as core/framing.py
MAX_MARGIN = 45.0

# Scheduler names a user may pick -> diffusers class name. None keeps the model's own scheduler.
SCHEDULERS: dict[str, str] = {
    "euler": "EulerDiscreteScheduler",
    "euler_a": "EulerAncestralDiscreteScheduler",
    "dpm++": "DPMSolverMultistepScheduler",
    "ddim": "DDIMScheduler",
    "pndm": "PNDMScheduler",
    "lms": "LMSDiscreteScheduler",
    "unipc": "UniPCMultistepScheduler",
    "lcm": "LCMScheduler",          # fast mode: what LCM-LoRA was distilled for
    "tcd": "TCDScheduler",          # fast mode: what TCD-LoRA was distilled for
}
FAST_SCHEDULERS = ("lcm", "tcd")
FAST_MAX_STEPS = 50           # LCM/TCD sample from the 50 steps they were distilled with, no more
# What a mode starts from when a value is not given (the CLI and the editor fill these in;
# anything given explicitly wins). Fast: 4 steps of a few-step LoRA without classifier-free guidance
# (one UNet pass per step); quality: the full model.
MODE_DEFAULTS: dict[str, dict[str, Any]] = {
    "fast": {"steps": 4, "guidance": 1.0, "scheduler": "lcm"},
    "quality": {"steps": 30, "guidance": 7.5, "scheduler": None},
}
KINDS = ("sd", "color", "blur", "image", "transparent")
_USAGE = "use sd, color:#RRGGBB, blur:RADIUS, image:PATH or transparent"
_HEX = re.compile(r"^#?([0-9a-fA-F]{3}|[0-9a-fA-F]{6})$")


def ui(label: str = "", **how: Any) -> dict[str, Any]:
    """A field's editor widget (json_schema_extra={"ui": ...}), read by ui/fields.py: label; step;
    help (default: the field's description); widget "slider" | "number" | "text" | "textarea" |
    "select" | "toggle" (default by type); min/max where the spec's bound is open (gt/lt); default
    where the editor starts a field the spec leaves empty (a blur's radius); key where the
    widget's session-state key is not the field's name; advanced=True: in the Advanced expander;
    hidden="why": no widget of its own."""
    return {"ui": {"label": label, **how}}


# ------------------------------------------------------------------------------ value types --
def _plain(v: Any, what: str = "a number") -> Any:
    """numpy scalars -> Python numbers; a bool is never taken for a number."""
    if type(v).__module__ == "numpy" and hasattr(v, "item"):
        v = v.item()
    if isinstance(v, bool):
        raise ValueError(f"must be {what}, got {v!r}")
    return v


def _whole(v: Any) -> Any:
    v = _plain(v, "a whole number")
    if not isinstance(v, int):
        raise ValueError(f"must be a whole number, got {v!r}")
    return v


def _finite(v: Any) -> Any:
    v = _plain(v)
    if not isinstance(v, (int, float)) or not math.isfinite(v):
        raise ValueError(f"must be a finite number, got {v!r}")
    return float(v)


def _flag(v: Any) -> Any:
    if type(v).__module__ == "numpy" and hasattr(v, "item"):
        v = v.item()
    if not isinstance(v, bool):
        raise ValueError(f"must be true or false, got {v!r}")
    return v


Int = Annotated[int, BeforeValidator(_whole)]
Num = Annotated[float, BeforeValidator(_finite)]
Flag = Annotated[bool, BeforeValidator(_flag)]


def parse_color(text: str) -> tuple[int, int, int]:
    """'#RRGGBB', '#RGB' (the '#' optional) or a CSS colour name -> (r, g, b); InvalidOptionError."""
    t = str(text).strip()
    m = _HEX.match(t)
    if m:
        h = m.group(1)
        if len(h) == 3:
            h = "".join(c * 2 for c in h)
        return int(h[0:2], 16), int(h[2:4], 16), int(h[4:6], 16)
    if re.fullmatch(r"[A-Za-z]{3,30}", t):
        from PIL import ImageColor
        try:
            return tuple(ImageColor.getrgb(t)[:3])  # type: ignore[return-value]
        except ValueError:
            pass
    raise InvalidOptionError(f"bad colour {text!r}: use #RRGGBB, #RGB or a colour name like white")


# ------------------------------------------------------------------------------------ errors --
def _bound(name: str, err: dict) -> str:
    ctx = err.get("ctx") or {}
    word = {"greater_than_equal": "at least", "greater_than": "more than",
            "less_than_equal": "at most", "less_than": "less than"}[err["type"]]
    limit = next(iter(ctx.values()), "?")
    bounds = _BOUNDS.get(name) or _BOUNDS.get(name.split()[-1])
    if bounds:
        return f"{name} must be {bounds}, got {err.get('input')!r}"
    return f"{name} must be {word} {limit:g}, got {err.get('input')!r}" if isinstance(limit, (int, float)) \
        else f"{name} must be {word} {limit}, got {err.get('input')!r}"


# How the ranged fields are described in errors (the same words the CLI help uses).
_NAMES = {"radius": "blur radius"}
_BOUNDS = {
    "margin": f"from 0 to {MAX_MARGIN:g}", "shadow_strength": "from 0 to 1", "shadow_softness": "from 0 to 1",
    "steps": f"from 1 to {MAX_STEPS}", "guidance": f"from 0 to {MAX_GUIDANCE:g}",
    "strength": "more than 0 and at most 1", "seed": f"from 0 to {MAX_SEED}",
    "variants": f"from 1 to {MAX_VARIANTS}", "feather": f"from 0 to {MAX_FEATHER}",
    "grow": f"from -{MAX_EDGE_PX} to {MAX_EDGE_PX}", "min_area": f"from 0 to {MAX_AREA}",
    "radius": f"above 0 and at most {MAX_BLUR:g}", "candidate": "from 0 to 2",
    "edge_band": f"from 1 to {MAX_EDGE_BAND}",
}


def one_line(e: ValidationError) -> str:
    """The first problem of a pydantic ValidationError as one line a person can act on."""
    err = e.errors(include_url=False)[0]
    loc = [str(p) for p in err.get("loc", ()) if not isinstance(p, int)]
    name = loc[-1] if loc else "value"
    name = _NAMES.get(name, name)
    kind, msg = err["type"], err.get("msg", "")
    if kind == "value_error":
        text = msg.removeprefix("Value error, ")
        return text if not text.startswith("must ") else f"{name} {text}"
    if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
        return _bound(name, err)
    if kind == "missing":
        return f"{name} is required"
    if kind == "extra_forbidden":
        return f"unknown option {name!r}"
    if kind == "literal_error":
        return f"{name} must be {(err.get('ctx') or {}).get('expected', '?')}, got {err.get('input')!r}"
    if kind in ("string_type", "string_too_long"):
        if kind == "string_too_long":
            return f"{name} too long: at most {(err.get('ctx') or {}).get('max_length')} characters"
        return f"{name} must be text, got {type(err.get('input')).__name__}"
    if kind.startswith("tuple") or kind.startswith("too_") or kind == "model_type":
        return f"{name}: {msg.lower()}"
    return f"{name}: {msg}"


class Spec(BaseModel):
    """Base of the spec models: frozen, unknown fields refused, errors as one-line
    InvalidOptionError. `_positional` names the fields that may be given positionally."""

    model_config = ConfigDict(frozen=True, extra="forbid", validate_default=False)
    _positional: ClassVar[tuple[str, ...]] = ()

    def __init__(self, *args: Any, **data: Any) -> None:
        if args:
            if len(args) > len(self._positional):
                raise InvalidOptionError(f"{type(self).__name__} takes at most "
                                         f"{len(self._positional)} positional values")
            data.update(zip(self._positional, args))
        try:
            super().__init__(**data)
        except ValidationError as e:
            raise InvalidOptionError(one_line(e)) from None

    @classmethod
    def load(cls, data: Any):
        """Validate a mapping (e.g. parsed JSON) into this model; InvalidOptionError if it is bad."""
        if isinstance(data, cls):
            return data
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise InvalidOptionError(one_line(e)) from None

    def replace(self, **changes: Any):
        """A copy with `changes` applied, validated again (model_copy would skip validation)."""
        return type(self).load(self.model_dump() | changes)


# ------------------------------------------------------------------------------------ models --
class Click(Spec):
    """One click in original-image pixels: (x, y); label 1 = subject (positive), 0 = not subject."""

    _positional: ClassVar[tuple[str, ...]] = ("x", "y", "label")
    x: Num = Field(description="horizontal pixel position from the left edge of the original")
    y: Num = Field(description="vertical pixel position from the top edge of the original")
    label: Literal[0, 1] = Field(1, description="1 = subject (keep), 0 = not subject")

    @model_validator(mode="before")
    @classmethod
    def _from_tuple(cls, v):
        """(x, y) or (x, y, label) is a click too (how the CLI, the editor and JSON write one)."""
        if isinstance(v, (tuple, list)):
            if len(v) not in (2, 3):
                raise ValueError(f"a click is (x, y) or (x, y, label), got {len(v)} values")
            return dict(zip(("x", "y", "label"), v))
        return v

    @field_validator("label", mode="before")
    @classmethod
    def _label(cls, v):
        v = _plain(v) if not isinstance(v, bool) else v
        if isinstance(v, bool) or v not in (0, 1):
            raise ValueError(f"click label must be 1 (subject) or 0 (not subject), got {v!r}")
        return int(v)


Box = tuple[Num, Num, Num, Num]


class Prompts(Spec):
    """Clicks and/or a box on the subject, original-image pixels (what a segmenter is given)."""

    clicks: tuple[Click, ...] = Field((), max_length=MAX_CLICKS,
                                      description="clicks in original pixels, in the order made",
                                      json_schema_extra=ui(hidden="made by clicking on the photo"))
    box: Optional[Box] = Field(None, description="(x1, y1, x2, y2) around the subject, original pixels",
                               json_schema_extra=ui(hidden="drawn by dragging on the photo"))

    @field_validator("box", mode="before")
    @classmethod
    def _four(cls, box):
        if box is not None and (isinstance(box, (str, bytes)) or not hasattr(box, "__len__")
                                or len(box) != 4):
            raise ValueError(f"box must be four numbers (x1, y1, x2, y2), got {box!r}")
        return box

    @field_validator("box")
    @classmethod
    def _box(cls, box):
        if box is not None and (box[2] <= box[0] or box[3] <= box[1]):
            raise ValueError(f"box {tuple(box)} is empty: x2 must be > x1 and y2 > y1")
        return box


class Subject(Prompts):
    """How the subject is found: clicks and/or a box given to `segmenter`, the multimask
    `candidate` picked in the editor (None = the model's best), or a mask given as is
    (`segmenter` None)."""

    candidate: Optional[Int] = Field(None, ge=0, le=2,
                                     description="multimask candidate chosen (None = best score)",
                                     json_schema_extra=ui(hidden="picked under the photo when the model "
                                                                 "offers several masks"))
    segmenter: Optional[str] = Field(None, max_length=200,
                                     description="segmentation model name; None = a mask was given",
                                     json_schema_extra=ui("Segmentation model", key="seg_pick"))
    auto: Flag = Field(False, description="find the subject without clicks (core.catalogue."
                                          "auto_subject); clicks or a box, if any, then refine it",
                       json_schema_extra=ui(hidden="set by the editor's Find the subject button"))


class MaskOptions(Spec):
    """How the segmentation mask is cleaned up before compositing (core.masks.refine applies
    fill_holes, min_area, grow, invert in that order; compose applies feather)."""

    grow: Int = Field(0, ge=-MAX_EDGE_PX, le=MAX_EDGE_PX,
                      description="grow the subject by this many pixels (negative shrinks it)",
                      json_schema_extra=ui("Grow (+) / shrink (−) the mask, px", widget="number", step=1,
                                           help="In pixels of the full-resolution photo; a negative "
                                                "number shrinks the subject."))
    feather: Int = Field(0, ge=0, le=MAX_FEATHER, description="soft edge radius in pixels, inward",
                         json_schema_extra=ui("Feather (soft edge), px", step=1,
                                              help="Fades the subject's edge inward over this many "
                                                   "pixels of the full-resolution photo (hard edge)."))
    fill_holes: Flag = Field(False, description="fill background regions enclosed by the subject",
                             json_schema_extra=ui("Fill holes inside the subject", advanced=True,
                                                  help="Background wholly enclosed by the subject "
                                                       "(the gap in a handle) becomes subject."))
    min_area: Int = Field(0, ge=0, le=MAX_AREA, description="drop subject specks smaller than this (px)",
                          json_schema_extra=ui("Drop specks smaller than, px", widget="number", step=10,
                                               advanced=True,
                                               help="Separate bits of the mask with fewer pixels than "
                                                    "this (of the full-resolution photo) are dropped. "
                                                    "0 keeps every bit."))
    invert: Flag = Field(False, description="swap subject and background (keep the background)",
                         json_schema_extra=ui("Invert (keep the background, replace the subject)"))
    edge: str = Field("hard", json_schema_extra=ui("Edge"), description="hard: the mask's own edge (feathered inward); "
                                          "matte[:METHOD]: a soft alpha matte at the border with the old "
                                          "background's colour removed; METHOD guided (default, no "
                                          "weights), cf (closed-form, slower) or vitmatte (learned, "
                                          "needs its weights)")
    edge_band: Optional[Int] = Field(None, ge=1, le=MAX_EDGE_BAND,
                                     description="matte: width in px of the border worked on, each side "
                                                 "of the mask edge; none = from the image size",
                                     json_schema_extra=ui("Band width"))

    @field_validator("edge", mode="before")
    @classmethod
    def _edge(cls, v):
        text = v.strip().lower() if isinstance(v, str) else v
        if text == "matte":
            return f"matte:{EDGE_METHODS[0]}"
        if text == "hard" or (isinstance(text, str) and text.removeprefix("matte:") in EDGE_METHODS
                              and text.startswith("matte:")):
            return text
        raise ValueError(f"edge must be hard or matte[:METHOD] with METHOD "
                         f"{', '.join(EDGE_METHODS)}, got {v!r}")

    @property
    def matted(self) -> bool:
        """True when the border is an alpha matte (edge "matte:…")."""
        return self.edge != "hard"

    @property
    def edge_method(self) -> Optional[str]:
        """The matting method ("guided", "cf", "vitmatte"), None for a hard edge."""
        return self.edge.removeprefix("matte:") if self.matted else None


class Background(Spec):
    """What goes behind the subject. kind "sd" (painted by the model, see Generation), "color"
    (color = (r, g, b)), "blur" (radius = Gaussian sigma in px of the original), "image" (path of
    a photo, cover-fitted), "transparent" (RGBA cut-out). str() round-trips through parse()."""

    _positional: ClassVar[tuple[str, ...]] = ("kind",)
    kind: Literal["sd", "color", "blur", "image", "transparent"] = Field(
        description="sd | color | blur | image | transparent",
        json_schema_extra=ui("Background", key="bg_kind"))
    color: Optional[tuple[Annotated[Int, Field(ge=0, le=255)], ...]] = Field(
        None, description="(r, g, b) 0-255, kind color", json_schema_extra=ui("Colour", key="bg_color"))
    radius: Optional[Annotated[Num, Field(gt=0, le=MAX_BLUR)]] = Field(
        None, description="blur sigma in pixels, kind blur",
        json_schema_extra=ui("Blur radius, px", key="blur_radius", widget="slider", step=0.5, min=0.5,
                             default=DEFAULT_BLUR,
                             help="How strongly the old background is blurred: the blur's sigma in "
                                  "pixels of the full-resolution photo."))
    path: Optional[str] = Field(None, max_length=4096, description="background photo, kind image",
                                json_schema_extra=ui("Background photo", key="bg_upload"))

    @field_validator("kind", mode="before")
    @classmethod
    def _kind(cls, v):
        if v not in KINDS:
            raise ValueError(f"unknown background {v!r}; {_USAGE}")
        return v

    @model_validator(mode="after")
    def _fields_of_kind(self):
        if self.kind == "color" and (self.color is None or len(self.color) != 3):
            raise ValueError(f"bad colour {self.color!r}: need three values 0-255")
        if self.kind == "blur" and self.radius is None:
            raise ValueError(f"blur radius must be a number above 0 and at most {MAX_BLUR:g}")
        if self.kind == "image" and (not self.path or not self.path.strip()):
            raise ValueError("image background needs a path: image:PATH")
        extra = [f for f, k in (("color", "color"), ("radius", "blur"), ("path", "image"))
                 if getattr(self, f) is not None and self.kind != k]
        if extra:
            raise ValueError(f"background {self.kind!r} takes no {extra[0]}")
        return self

    @classmethod
    def parse(cls, text: "str | Background") -> "Background":
        """Parse sd | color:#RRGGBB (#RGB, names) | blur[:RADIUS] | image:PATH | transparent."""
        if isinstance(text, Background):
            return text
        if not isinstance(text, str) or not text.strip():
            raise InvalidOptionError(f"empty background; {_USAGE}")
        kind, _, arg = text.strip().partition(":")
        kind = kind.strip().lower()
        if kind in ("sd", "transparent"):
            if arg.strip():
                raise InvalidOptionError(f"background {kind!r} takes no value, got {text!r}")
            return cls(kind)
        if kind in ("color", "colour"):
            if not arg.strip():
                raise InvalidOptionError("color background needs a value: color:#RRGGBB")
            return cls("color", color=parse_color(arg))
        if kind == "blur":
            if not arg.strip():
                return cls("blur", radius=DEFAULT_BLUR)
            try:
                radius = float(arg) if len(arg) <= 40 else float("nan")
            except ValueError:
                raise InvalidOptionError(f"blur radius must be a number, got {arg.strip()[:40]!r}") from None
            return cls("blur", radius=radius)
        if kind == "image":
            return cls("image", path=arg.strip())
        raise InvalidOptionError(f"unknown background {text.strip()[:60]!r}; {_USAGE}")

    def __str__(self) -> str:
        if self.kind == "color":
            return "color:#%02x%02x%02x" % tuple(int(v) for v in self.color)
        if self.kind == "blur":
            return f"blur:{self.radius:g}"
        if self.kind == "image":
            return f"image:{self.path}"
        return self.kind

    @property
    def generative(self) -> bool:
        """True when the background must be painted by a model first (kind "sd")."""
        return self.kind == "sd"


class Generation(Spec):
    """What the inpainting model paints behind the subject (background "sd")."""

    _positional: ClassVar[tuple[str, ...]] = ("prompt",)
    prompt: str = Field(max_length=MAX_PROMPT_CHARS, description="the new background, in words",
                        json_schema_extra=ui("Prompt: describe the new scene", widget="textarea"))
    negative: str = Field("", max_length=MAX_PROMPT_CHARS, description="what not to paint",
                          json_schema_extra=ui("Negative prompt (what to avoid)", widget="text",
                                               help="Words the model steers away from (only with "
                                                    "guidance above 1: Quality mode)."))
    steps: Int = Field(30, ge=1, le=MAX_STEPS, description="denoising steps",
                       json_schema_extra=ui("Steps", step=1, help="More steps: finer detail, slower."))
    guidance: Num = Field(7.5, ge=0, le=MAX_GUIDANCE,
                          description="classifier-free guidance scale (<= 1 disables it)",
                          json_schema_extra=ui("Guidance", step=0.5,
                                               help="How closely to follow the prompt (1 or less: no "
                                                    "classifier-free guidance)."))
    strength: Num = Field(1.0, gt=0, le=1, description="1 = ignore the old background entirely",
                          json_schema_extra=ui("Strength", step=0.05, min=0.05, advanced=True,
                                               help="How much of the old background is painted over: "
                                                    "1 ignores it entirely, lower keeps more of its "
                                                    "layout (steps × strength are run)."))
    seed: Optional[Int] = Field(None, ge=0, le=MAX_SEED,
                                description="seed of the first variant (variant i uses seed + i); None = random",
                                json_schema_extra=ui("Seed (empty = random)", widget="text",
                                                     help=f"A whole number from 0 to {MAX_SEED}: the same "
                                                          "seed and settings paint the same picture. "
                                                          "Variant i uses seed + i."))
    variants: Int = Field(1, ge=1, le=MAX_VARIANTS, description="how many pictures to paint",
                          json_schema_extra=ui("Variants", widget="number", step=1))
    scheduler: Optional[str] = Field(None, description=f"sampler: {', '.join(SCHEDULERS)}; "
                                                       "none = the model's own",
                                     json_schema_extra=ui("Sampler", widget="select", advanced=True,
                                                          help="The sampling method. Fast mode samples "
                                                               "with LCM or TCD (what its LoRA was "
                                                               "made for); Quality with any other."))
    model: str = Field(default_factory=config.default_inpaint_model, max_length=MAX_NAME_CHARS,
                       description="inpainting model: registry name, local folder or HF repo id",
                       json_schema_extra=ui("Model", key="inpaint_pick"))
    mode: Literal["fast", "quality"] = Field(
        "quality", description="fast: a few-step LoRA (LCM/TCD) and the tiny autoencoder; quality: "
                               "the full model and VAE", json_schema_extra=ui("Mode"))
    lora: Optional[str] = Field(None, max_length=MAX_NAME_CHARS,
                                description="few-step LoRA (weights registry name) for fast mode; "
                                            "none = the one for the model's family",
                                json_schema_extra=ui("Few-step LoRA (Fast mode)", widget="select",
                                                     advanced=True,
                                                     help="Which distilled LoRA Fast mode loads; the "
                                                          "default is the one made for the model's "
                                                          "family. Not used in Quality mode."))

    @field_validator("scheduler")
    @classmethod
    def _scheduler(cls, v):
        if v is not None and v not in SCHEDULERS:
            raise ValueError(f"unknown scheduler {v!r}; known: {', '.join(SCHEDULERS)}")
        return v

    @classmethod
    def for_mode(cls, mode: Optional[str] = None, **given: Any) -> "Generation":
        """A Generation whose unset steps/guidance/scheduler follow `mode` (MODE_DEFAULTS)."""
        mode = mode or config.default_mode()
        if mode not in MODE_DEFAULTS:
            raise InvalidOptionError(f"mode must be fast or quality, got {mode!r}")
        values = {k: v for k, v in given.items() if v is not None}
        return cls(mode=mode, **(MODE_DEFAULTS[mode] | values))

    @model_validator(mode="after")
    def _fits_mode(self):
        if self.mode == "fast" and self.scheduler not in FAST_SCHEDULERS:
            raise ValueError(f"fast mode samples with {' or '.join(FAST_SCHEDULERS)}, not "
                             f"{self.scheduler or 'the model default'}")
        if self.mode == "fast" and self.steps > FAST_MAX_STEPS:
            raise ValueError(f"fast mode takes at most {FAST_MAX_STEPS} steps (its {self.scheduler} "
                             f"sampler was distilled from {FAST_MAX_STEPS}), got {self.steps}: use "
                             "mode quality for more")
        if self.mode == "quality" and self.scheduler in FAST_SCHEDULERS:
            raise ValueError(f"the {self.scheduler} scheduler needs its LoRA: use mode fast")
        if self.mode == "quality" and self.lora is not None:
            raise ValueError("a few-step LoRA is only used in fast mode")
        return self

    @model_validator(mode="after")
    def _denoises(self):
        if int(self.steps * self.strength) < 1:
            raise ValueError(f"steps x strength must be at least 1 ({self.steps} x "
                             f"{self.strength:g} leaves no denoising step)")
        return self

    def seeds(self) -> list[int]:
        """One seed per variant: seed + i, or a random base drawn from the OS (global RNGs untouched)."""
        import secrets
        base = self.seed if self.seed is not None else secrets.randbelow(2**32)
        return [int(base) + i for i in range(self.variants)]


_FRAME = re.compile(r"\s*(\d{1,6})\s*[xX×]\s*(\d{1,6})\s*")


class Framing(Spec):
    """Catalogue framing and shadow (core/framing.py, core/catalogue.py): the subject placed on a
    `frame` of WIDTHxHEIGHT px (None: the photo's own size, nothing moved) with `margin` percent
    free each side of its box and `align`ed center or bottom; a `shadow` made from its silhouette
    drawn under it. `preset` names the preset these values came from (core/presets.py). The
    defaults (no frame, no shadow) leave the output as it was without framing."""

    frame: Optional[str] = Field(None, max_length=40,
                                 description="output size WIDTHxHEIGHT in px, e.g. 2000x2000; none = "
                                             "the photo's size",
                                 json_schema_extra=ui("Frame (WxH, empty = photo size)", key="cat_frame",
                                                      widget="text"))
    margin: Num = Field(5.0, ge=0, le=MAX_MARGIN,
                        description="percent of the frame left free each side of the subject's box "
                                    "(on the tighter side); only with a frame",
                        json_schema_extra=ui("Margin, % of the frame", key="cat_margin", step=0.5))
    align: Literal["center", "bottom"] = Field("center", description="center, or bottom: the subject's "
                                                                      "base one margin above the frame's "
                                                                      "bottom",
                                               json_schema_extra=ui("Align", key="cat_align"))
    shadow: Literal["none", "contact", "drop", "reflection"] = Field(
        "none", description="none | contact (under the base) | drop (offset) | reflection (mirrored)",
        json_schema_extra=ui("Shadow", key="cat_shadow"))
    shadow_strength: Num = Field(0.5, ge=0, le=1, description="how dark the shadow is, 0 to 1",
                                 json_schema_extra=ui("Shadow strength", key="cat_shadow_strength",
                                                      step=0.05))
    shadow_softness: Num = Field(0.5, ge=0, le=1, description="how blurred the shadow is, 0 to 1",
                                 json_schema_extra=ui("Shadow softness", key="cat_shadow_softness",
                                                      step=0.05))
    preset: Optional[str] = Field(None, max_length=100,
                                  description="the preset these values came from (core/presets.py)",
                                  json_schema_extra=ui("Preset", key="cat_preset", widget="select"))

    @field_validator("frame", mode="before")
    @classmethod
    def _frame(cls, v):
        if v is None or (isinstance(v, str) and not v.strip()):
            return None
        m = _FRAME.fullmatch(v) if isinstance(v, str) else None
        if not m:
            raise ValueError(f"a frame is WIDTHxHEIGHT in pixels (e.g. 2000x2000), got {str(v)[:40]!r}")
        w, h = int(m.group(1)), int(m.group(2))
        if not (1 <= w <= MAX_FRAME_SIDE and 1 <= h <= MAX_FRAME_SIDE):
            raise ValueError(f"a frame side must be from 1 to {MAX_FRAME_SIDE} px, got {w}x{h}")
        return f"{w}x{h}"

    @field_validator("shadow", "align", mode="before")
    @classmethod
    def _word(cls, v):
        return v.strip().lower() if isinstance(v, str) else v

    @property
    def size(self) -> Optional[tuple[int, int]]:
        """(width, height) of the frame, None without one."""
        if self.frame is None:
            return None
        w, h = self.frame.split("x")
        return int(w), int(h)

    @property
    def active(self) -> bool:
        """True when the run is framed or shadowed (core/catalogue.py makes its output)."""
        return self.frame is not None or self.shadow != "none"


class RunSpec(Spec):
    """Everything that defines one run, apart from the photo itself (a content hash in history)."""

    version: Literal[1] = Field(SCHEMA_VERSION, description="schema version of this spec",
                                json_schema_extra=ui(hidden="the schema's version, set by the app"))
    subject: Subject = Field(default_factory=Subject)
    mask: MaskOptions = Field(default_factory=MaskOptions)
    background: Background
    generation: Optional[Generation] = Field(None, description="required with background sd, else None")
    framing: Framing = Field(default_factory=Framing,
                             json_schema_extra=ui(hidden="the editor's Catalogue panel draws its fields"))

    @field_validator("background", mode="before")
    @classmethod
    def _background(cls, v):
        return Background.parse(v) if isinstance(v, str) else v

    @model_validator(mode="after")
    def _generation_fits(self):
        if self.background.kind == "sd" and self.generation is None:
            raise ValueError("a Stable Diffusion background needs a prompt")
        if self.background.kind != "sd" and self.generation is not None:
            raise ValueError(f"a prompt is only used with the sd background, not {self.background.kind}")
        return self

    # -- storage -------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (what history stores)."""
        return self.model_dump(mode="json")

    @classmethod
    def from_json(cls, data: "dict[str, Any] | str") -> "RunSpec":
        """A stored spec back; InvalidOptionError if it is not a spec this version understands."""
        if isinstance(data, str):
            try:
                data = json.loads(data)
            except ValueError as e:
                raise InvalidOptionError(f"a run spec must be JSON: {e}") from None
        return cls.load(data)

    def index_columns(self) -> dict[str, Any]:
        """The few values history keeps as indexed columns for search and filters."""
        gen = self.generation
        return {"background_kind": self.background.kind,
                "model": gen.model if gen else None,
                "search_text": f"{gen.prompt if gen else ''}\n{gen.negative if gen else ''}".casefold()}

    # -- reading -------------------------------------------------------------------------------
    def flat(self) -> dict[str, Any]:
        """One level of keys ("mask.grow", "generation.prompt", "background", ...), JSON values:
        what compare puts side by side and the export manifest lists."""
        data = self.to_json()
        out: dict[str, Any] = {"background": str(self.background)}
        for part in ("subject", "mask", "generation", "framing"):
            for key, value in (data.get(part) or {}).items():
                out[f"{part}.{key}"] = value
        return out

    def diff(self, other: "RunSpec") -> dict[str, tuple[Any, Any]]:
        """{key: (mine, theirs)} for every flat() key whose value differs."""
        a, b = self.flat(), other.flat()
        return {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b), key=_order)
                if json.dumps(a.get(k), sort_keys=True) != json.dumps(b.get(k), sort_keys=True)}


def _order(key: str) -> tuple[int, str]:
    for i, part in enumerate(("subject.", "mask.", "background", "generation.", "framing.")):
        if key.startswith(part):
            return i, key
    return 9, key


def flat_keys() -> tuple[str, ...]:
    """Every key RunSpec.flat() can have, in display order (columns of tables and manifests)."""
    return ("background", *(f"{part}.{name}" for part, model in
                            (("subject", Subject), ("mask", MaskOptions), ("generation", Generation),
                             ("framing", Framing))
                            for name in model.model_fields))


def a1111_parameters(spec: RunSpec, seed: Optional[int] = None,
                     size: Optional[tuple[int, int]] = None) -> str:
    """The AUTOMATIC1111 `parameters` text of an output: the prompt, "Negative prompt: …", then
    "Steps: 30, Sampler: …, CFG scale: …, Seed: …, Size: WxH, Model: …, Denoising strength: …";
    a background that was not painted is named instead ("Background: color:#00ff00")."""
    def clean(s: Optional[str]) -> str:   # no control characters except newlines inside prompts
        return "".join(ch if ch in "\n\t" or ch >= " " else " " for ch in (s or ""))

    def value(v: Any) -> str:
        v = clean(str(v)).replace("\n", " ")
        return json.dumps(v, ensure_ascii=False) if any(c in v for c in ',:"') else v

    gen = spec.generation
    lines = [clean(gen.prompt if gen else "")]
    if gen and gen.negative:
        lines.append(f"Negative prompt: {clean(gen.negative)}")
    pairs = [("Steps", gen and gen.steps), ("Sampler", gen and (gen.scheduler or "default")),
             ("CFG scale", gen and gen.guidance),
             ("Seed", seed if seed is not None else gen and gen.seed),
             ("Size", f"{size[0]}x{size[1]}" if size else None), ("Model", gen and gen.model),
             ("Denoising strength", gen and gen.strength),
             ("Background", None if gen else str(spec.background))]
    lines.append(", ".join(f"{k}: {value(v)}" for k, v in pairs if v not in (None, "")))
    return "\n".join(lines)
