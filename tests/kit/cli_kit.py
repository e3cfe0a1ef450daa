"""The command line as a user runs it: `python -m core ...` in a real subprocess, and the one-line
error every refused command must print."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def cli(*args, check: bool = True, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """Run `python -m core ARGS` from the repository with the test's environment (plus `env`);
    `check`: a non-zero exit fails the test with the command's stderr."""
    proc = subprocess.run([sys.executable, "-m", "core", *map(str, args)], cwd=ROOT,
                          env={**os.environ, **(env or {})}, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}: {proc.stderr}")
    return proc


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, limit: int = 0) -> str:
    """The command exited 2 with exactly one `error: ...` line on stderr (no traceback) holding every
    fragment (and at most `limit` characters when given); returns that line."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not limit or len(lines[0]) <= limit, lines[0][:400]
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def run_cli(*args, env: dict | None = None, timeout: int = 600) -> subprocess.CompletedProcess:
    """`cli` for a test that looks at the exit code itself."""
    return cli(*args, check=False, env=env, timeout=timeout)
