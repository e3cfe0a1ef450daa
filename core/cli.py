"""Command-line interface (the contract in DESIGN.md). Exit 0 on success; on bad input exit 2 with one
line `error: <what and why>` on stderr, never a traceback."""
from __future__ import annotations

import argparse
import sys

from core.errors import BackdropError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m core", description="Backdrop: replace a photo's background.")
    parser.add_subparsers(dest="command", metavar="COMMAND")
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 0
    try:
        return args.func(args) or 0
    except BackdropError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        return 130
