"""The catalogue options of `segment`, `replace` and `batch` (core/cli.py is past its size, so they
live here): --auto (the subject found without clicks), --preset, --frame, --margin, --align,
--shadow, --shadow-strength, --shadow-softness, and batch's --review-below.

A preset is only spec values (core/presets.py): what the command line gives explicitly wins, and
the spec records the resolved values plus the preset's name.
"""
from __future__ import annotations

import argparse

from core.spec import Framing

from core.auto import REVIEW_BELOW as DEFAULT_REVIEW_BELOW  # batch --auto lists photos below it


def _percent(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text[:24]!r} is not a number") from None


def add_auto(parser) -> None:
    """--auto: find the subject without clicks (clicks, if any, refine it)."""
    parser.add_argument("--auto", action="store_true", default=False,
                        help="find the subject without clicks (points or a box, if given, refine it); "
                             "no plain backdrop or no subject -> one line")


def add_arguments(parser, batch: bool = False) -> None:
    """--auto, --preset and the framing/shadow flags (each defaults to the preset's value, else the
    spec's default); batch also gets --review-below."""
    add_auto(parser)
    g = parser.add_argument_group("catalogue (framing and shadow)")
    g.add_argument("--preset", metavar="NAME",
                   help="named values for background, frame, margin, align and shadow: amazon, "
                        "square-white, or one of <data dir>/presets.toml; explicit flags win")
    f = Framing.model_fields
    g.add_argument("--frame", metavar="WxH", help=f["frame"].description + " (default: none)")
    g.add_argument("--margin", type=_percent, metavar="PCT",
                   help=f["margin"].description.replace("%", "%%") + " (default: 5)")
    g.add_argument("--align", choices=("center", "bottom"), help=f["align"].description
                   + " (default: center)")
    g.add_argument("--shadow", choices=("none", "contact", "drop", "reflection"),
                   help="a shadow made from the subject's silhouette (default: none)")
    g.add_argument("--shadow-strength", type=_percent, metavar="X",
                   help=f["shadow_strength"].description + " (default: 0.5)")
    g.add_argument("--shadow-softness", type=_percent, metavar="X",
                   help=f["shadow_softness"].description + " (default: 0.5)")
    if batch:
        g.add_argument("--review-below", type=_percent, metavar="X", default=DEFAULT_REVIEW_BELOW,
                       help="with --auto: photos whose automatic subject's confidence is below this "
                            f"are listed for review at the end (default: {DEFAULT_REVIEW_BELOW})")


def resolve(args) -> dict:
    """The preset's values with the explicit flags on top; sets args.background from the preset
    when --background was not given (then "sd")."""
    from core import presets
    given = {k: getattr(args, k, None) for k in ("frame", "margin", "align", "shadow",
                                                  "shadow_strength", "shadow_softness")}
    given["background"] = getattr(args, "background", None)
    values = presets.resolve(getattr(args, "preset", None), given)
    args.background = values.pop("background", None) or "sd"
    return values


def framing(args) -> Framing:
    """The spec's framing part from the arguments (the preset resolved)."""
    return Framing(**resolve(args))
