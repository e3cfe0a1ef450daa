"""The editor's widget for a run-spec field, drawn from the field itself (core/spec.py): its label,
step and help from the field's `ui(...)` metadata, its range from the field's bounds, its starting
value from the spec's default (ui/state.py). So the editor offers every value the spec accepts: a
run made on the command line at the spec's limits opens in the editor and re-runs unchanged.

    fields.draw(st, "mask", "grow", state)              # the Grow number box, -10000 to 10000 px
    fields.advanced("generation")                       # ("strength", "scheduler", "lora")
"""
from __future__ import annotations

import typing
from collections.abc import MutableMapping, Sequence
from typing import Any, Callable, Optional

from core.spec import Background, Framing, Generation, MaskOptions, RunSpec, Subject
from ui import state as S

PARTS = {"subject": Subject, "mask": MaskOptions, "background": Background, "generation": Generation,
         "run": RunSpec, "framing": Framing}      # framing: the Catalogue panel (ui/catalogue.py)
SUBMODELS = ("subject", "mask", "background", "generation")       # RunSpec's fields that are parts


def field(part: str, name: str):
    return PARTS[part].model_fields[name]


def meta(part: str, name: str) -> dict[str, Any]:
    """The field's editor metadata (core.spec.ui): label, step, help, widget, advanced, hidden…"""
    return dict((field(part, name).json_schema_extra or {}).get("ui") or {})


def hidden(part: str, name: str) -> Optional[str]:
    """Why the field has no widget of its own (None when it has one)."""
    if part == "run" and name in SUBMODELS:
        return "a part of the spec: its fields have their own widgets"
    return meta(part, name).get("hidden")


def state_key(part: str, name: str) -> str:
    """The session-state key (and widget key) of the field's widget."""
    return meta(part, name).get("key") or S._key(part, name)


def advanced(part: str) -> tuple[str, ...]:
    """The part's fields drawn in the editor's Advanced expander."""
    return tuple(n for n in PARTS[part].model_fields if meta(part, n).get("advanced"))


def _constraints(f) -> list:
    """The field's bound constraints, also those inside Optional[Annotated[..., Field(gt=…)]]."""
    found = list(f.metadata)
    stack = [f.annotation]
    while stack:
        t = stack.pop()
        for extra in getattr(t, "__metadata__", ()):
            found += list(getattr(extra, "metadata", None) or [extra])
        stack += [a for a in typing.get_args(t) if a is not type(None)]
    return found


def bounds(part: str, name: str) -> tuple[Any, Any]:
    """(lowest, highest) the widget offers: the spec's ge/le; where a bound is open (gt/lt) the
    field's ui min/max (the nearest value a widget can show)."""
    ui = meta(part, name)
    lo, hi = ui.get("min"), ui.get("max")
    for c in _constraints(field(part, name)):
        if getattr(c, "ge", None) is not None and lo is None:
            lo = c.ge
        if getattr(c, "le", None) is not None and hi is None:
            hi = c.le
    return lo, hi


def _whole(part: str, name: str) -> bool:
    return "int" in str(field(part, name).annotation)


def draw(where, part: str, name: str, state: MutableMapping, *, options: Optional[Sequence] = None,
         format_func: Optional[Callable[[Any], str]] = None, **extra: Any):
    """Draw the field's widget in `where` (st, a column, an expander) and return its value. The
    state key is the field's (state_key); `extra` goes to the Streamlit call (disabled, help…).
    A value a run brought in beyond the widget's usual range (an open bound's ui min) widens the
    range to it, so the run's value is shown as it is and re-runs unchanged."""
    ui = meta(part, name)
    if ui.get("hidden"):
        raise ValueError(f"{part}.{name} has no widget: {ui['hidden']}")
    key = state_key(part, name)
    value = state.get(key)
    f = field(part, name)
    kind = ui.get("widget") or ("toggle" if "bool" in str(f.annotation) else
                                "slider" if _whole(part, name) or "float" in str(f.annotation) else "text")
    about = f.description or ""
    args: dict[str, Any] = {"key": key, "help": ui.get("help") or about[:1].upper() + about[1:],
                            "persist_state": "session"} | extra
    label = ui["label"]
    if kind == "toggle":
        return where.toggle(label, **args)
    if kind == "text":
        return where.text_input(label, **args)
    if kind == "textarea":
        return where.text_area(label, **args)
    if kind == "select":
        choices = list(options or ())
        if value not in choices:                # e.g. a LoRA given on the command line by folder
            choices.append(value)
        return where.selectbox(label, choices, format_func=format_func or str, **args)
    lo, hi = bounds(part, name)
    step = ui.get("step", 1)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        lo, hi = min(lo, value), max(hi, value)
    if _whole(part, name):
        lo, hi, step = int(lo), int(hi), int(step)
    else:
        lo, hi, step = float(lo), float(hi), float(step)
    if kind == "number":
        return where.number_input(label, min_value=lo, max_value=hi, step=step, **args)
    return where.slider(label, min_value=lo, max_value=hi, step=step, **args)


def choices(name: str, state: MutableMapping) -> dict[str, Any]:
    """What draw() needs besides the field for the generation fields that are a choice: the
    sampler (those the mode can use; "" = the model's own) and Fast mode's LoRA ("" = the one
    for the model's family; only in Fast mode)."""
    if name == "scheduler":
        from core.spec import FAST_SCHEDULERS, SCHEDULERS
        fast = state.get("mode") == "fast"
        names = [n for n in SCHEDULERS if (n in FAST_SCHEDULERS) == fast]
        return {"options": names if fast else ["", *names],
                "format_func": lambda n: n or "The model's own"}
    if name == "lora":
        from core import weights
        loras = [s.name for s in weights.specs("fast") if s.kind.endswith("lora")]
        return {"options": ["", *loras], "disabled": state.get("mode") != "fast",
                "format_func": lambda n: n or "The one for the model's family"}
    return {}
