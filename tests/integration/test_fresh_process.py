"""What only a fresh Python process shows: which libraries a command imports, and a bad setting
met before anything else runs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from cli_kit import run_cli

ROOT = Path(__file__).resolve().parents[2]


def python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'tests' / 'kit'}", **env})


def test_history_package_does_not_import_torch():
    proc = python("import sys, core.history, core.export; core.history.open_store(); "
                  "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_embedded_image_store_never_imports_boto3(tmp_path, monkeypatch):
    monkeypatch.delenv("BACKDROP_BLOB_URL", raising=False)
    proc = python("import sys, numpy as np\n"
                  "from core.history import open_store\n"
                  "from runs import record\n"
                  "s = open_store(); record(s, source=np.zeros((8, 8, 3), np.uint8))\n"
                  "s.read_file(s.get_run(1).source.path)\n"
                  "assert 'boto3' not in sys.modules and 'botocore' not in sys.modules, 'boto3 imported'\n",
                  BACKDROP_DATA_DIR=str(tmp_path / "sub"))
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_the_cli_says_a_bad_setting_in_one_line_whatever_the_command():
    for command in (["models", "list"], ["segment", "--help"]):
        proc = run_cli(*command, env={"BACKDROP_SWEEP_GRACE_S": "1h"})
        lines = [line for line in proc.stderr.splitlines() if line.strip()]
        assert proc.returncode == 2 and lines == [
            "error: BACKDROP_SWEEP_GRACE_S must be a number, got '1h'"], proc.stderr
