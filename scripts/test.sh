#!/usr/bin/env bash
# Run the test suite: creates/reuses .venv, installs requirements-test.txt, runs pytest.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -k images`, or `-m "not postgres"` to leave
# out the PostgreSQL history tests, which start one server per session: see tests/conftest.py).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh requirements-test.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Any non-zero exit fails, 5 ("no tests collected") included: it means a broken collection or a
# selection that matches nothing. `--durations=15` comes from pyproject's addopts.
exec python -m pytest "$@"
