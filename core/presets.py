"""Presets: named bundles of run-spec values for catalogue shots (background, frame, margin, align,
shadow). A preset is only spec values: explicit options override it, and the spec records the
resolved values plus the preset's name (RunSpec.framing.preset), so history, compare, re-run,
export and the API carry it like any other value.

    values = resolve("amazon", {"margin": 4})   # the preset's values, then the given ones on top
    names()                                     # built-ins, then the user's

Built-in: `amazon` (white RGB 255, 2000x2000, the subject's long side filling 86 % of the frame:
Amazon's main image asks for at least 85 %, a contact shadow) and `square-white` (white,
1600x1600, 5 % margin, no shadow). Users add their own in `<data dir>/presets.toml` (read with
tomllib), one table per preset:

    [my-shop]
    background = "color:#f4f4f4"
    frame = "1500x1500"
    margin = 6
    align = "bottom"
    shadow = "drop"
    shadow_strength = 0.4
    shadow_softness = 0.6

A user preset with a built-in's name replaces it. A bad file is refused with one line naming it.
"""
from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, Optional

from core.errors import InvalidOptionError

KEYS = ("background", "frame", "margin", "align", "shadow", "shadow_strength", "shadow_softness")
FILE_NAME = "presets.toml"

BUILT_IN: dict[str, dict[str, Any]] = {
    # margin 7 % each side leaves 86 % of the frame for the subject's long side (>= 85 %)
    "amazon": {"background": "color:#ffffff", "frame": "2000x2000", "margin": 7.0, "align": "center",
               "shadow": "contact", "shadow_strength": 0.4, "shadow_softness": 0.5},
    "square-white": {"background": "color:#ffffff", "frame": "1600x1600", "margin": 5.0,
                     "align": "center", "shadow": "none"},
}


def presets_file() -> Path:
    """Where the user's presets live: `<data dir>/presets.toml`."""
    from core.settings import settings
    return Path(settings().data_dir) / FILE_NAME


def _check(name: str, values: Any, where: str) -> dict[str, Any]:
    if not isinstance(values, dict):
        raise InvalidOptionError(f"{where}: preset {name[:60]!r} must be a table of values")
    unknown = [k for k in values if k not in KEYS]
    if unknown:
        raise InvalidOptionError(f"{where}: preset {name[:60]!r} has unknown key {unknown[0][:40]!r}; "
                                 f"known: {', '.join(KEYS)}")
    from core.spec import Background, Framing
    try:
        if "background" in values:
            Background.parse(values["background"])
        Framing(**{k: v for k, v in values.items() if k != "background"})
    except InvalidOptionError as e:
        raise InvalidOptionError(f"{where}: preset {name[:60]!r}: {e}") from None
    return dict(values)


def user_presets(path: Optional[Path] = None) -> dict[str, dict[str, Any]]:
    """The user's presets from the TOML file ({} when there is none)."""
    path = Path(path) if path is not None else presets_file()
    if not path.is_file():
        return {}
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise InvalidOptionError(f"bad presets file {path}: {str(e).splitlines()[0][:200]}") from None
    return {str(name): _check(str(name), values, f"bad presets file {path}")
            for name, values in data.items()}


def all_presets(path: Optional[Path] = None) -> dict[str, dict[str, Any]]:
    """Built-ins, then the user's (a user preset with a built-in's name replaces it)."""
    return BUILT_IN | user_presets(path)


def names(path: Optional[Path] = None) -> list[str]:
    """Every preset's name."""
    return list(all_presets(path))


def get(name: str, path: Optional[Path] = None) -> dict[str, Any]:
    """One preset's values; a one-line error naming the known presets when there is no such one."""
    found = all_presets(path)
    if name not in found:
        raise InvalidOptionError(f"unknown preset {str(name)[:60]!r}; known: {', '.join(found)}")
    return dict(found[name])


def resolve(name: Optional[str], given: dict[str, Any], path: Optional[Path] = None) -> dict[str, Any]:
    """The values a run uses: the preset's (if `name`), then every value in `given` that is not
    None on top; "preset" is the preset's name (None without one)."""
    values = get(name, path) if name else {}
    values.update({k: v for k, v in given.items() if v is not None})
    values["preset"] = name or None
    return values


def framing_values(values: dict[str, Any]) -> dict[str, Any]:
    """The RunSpec.framing part of resolved values (everything but the background)."""
    return {k: v for k, v in values.items() if k != "background"}
