"""The README and docs/ say what the code does: every link leads to a file, every BACKDROP_* variable is
a setting, every `python -m core …` command and flag is one the CLI accepts, every script and
benchmark named exists (with the flags it is shown with), and the README stays short."""
from __future__ import annotations

import argparse
import re
import shlex
from pathlib import Path

import pytest

from core.cli import build_parser
from core.settings import Settings, env_name

ROOT = Path(__file__).resolve().parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _lines():
    for path in DOCS:
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            yield f"{path.relative_to(ROOT)}:{number}", line


def _subparsers(parser: argparse.ArgumentParser) -> dict:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices
    return {}


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """Every option string of `parser` and of the subcommands under it."""
    found = {s for a in parser._actions for s in a.option_strings}
    for child in _subparsers(parser).values():
        found |= _options(child)
    return found


def _words(text: str) -> list[str]:
    text = text.split("#")[0].replace("`", " ")
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def test_the_readme_reads_in_two_minutes():
    assert len((ROOT / "README.md").read_text(encoding="utf-8").splitlines()) <= 120


def test_every_link_in_the_docs_leads_to_a_file():
    broken = []
    for where, line in _lines():
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", line):
            if "://" in target:
                continue
            base = ROOT if where.startswith("README") else ROOT / "docs"
            if not (base / target).exists():
                broken.append(f"{where}: {target}")
    assert not broken, broken


TEST_ONLY = {"BACKDROP_REQUIRE_BROWSER", "BACKDROP_REQUIRE_POSTGRES"}   # read by tests/conftest.py, not the app


def test_every_backdrop_variable_in_the_docs_is_a_setting():
    known = {env_name(name) for name in Settings.model_fields} | TEST_ONLY
    unknown = [f"{where}: {name}" for where, line in _lines()
               for name in re.findall(r"\bBACKDROP_[A-Z0-9_]*[A-Z0-9]\b", line) if name not in known]
    assert not unknown, unknown


def test_every_cli_command_and_flag_in_the_docs_is_accepted():
    commands = _subparsers(build_parser())
    wrong = []
    for where, line in _lines():
        for match in re.finditer(r"python -m core ([a-z][^`|;&]*)", line):
            words = _words(match.group(1))
            if not words or words[0] not in commands:
                wrong.append(f"{where}: no command {words[:1]}")
                continue
            accepted = _options(commands[words[0]]) | {"-h", "--help"}
            for word in words[1:]:
                flag = word.strip("[](),").split("=")[0]
                if flag.startswith("--") and flag != "--" and flag not in accepted \
                        and f"--{flag[5:]}" not in accepted:          # --no-X of a BooleanOptionalAction
                    wrong.append(f"{where}: {words[0]} has no {flag}")
    assert not wrong, wrong


def test_every_script_and_benchmark_in_the_docs_exists_with_its_flags():
    wrong = []
    for where, line in _lines():
        for match in re.finditer(r"(?:bash|python) ((?:scripts|bench)/[\w./-]+)([^`|;&#]*)", line):
            path = ROOT / match.group(1)
            if not path.is_file():
                wrong.append(f"{where}: {match.group(1)} does not exist")
                continue
            source = path.read_text(encoding="utf-8")
            for flag in re.findall(r"(?<![\w-])--[a-z][\w-]*", match.group(2)):
                if flag not in source:
                    wrong.append(f"{where}: {match.group(1)} knows no {flag}")
    assert not wrong, wrong


@pytest.mark.parametrize("page", ["cli.md", "configuration.md", "models.md", "edges.md", "fast-quality.md",
                                  "history.md", "team.md", "benchmarks.md"])
def test_the_readme_links_each_topic(page):
    assert f"(docs/{page})" in (ROOT / "README.md").read_text(encoding="utf-8")
