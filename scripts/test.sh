#!/usr/bin/env bash
# Run the test suite: creates/reuses .venv, installs requirements-test.txt, runs pytest (all tiers:
# tests/unit, tests/integration, tests/browser; docs/testing.md). Extra arguments go to pytest
# (e.g. `bash scripts/test.sh tests/unit -k images`).
# `--quick` runs the unit tier only, on two workers, without its PostgreSQL/S3 cases: no Ray, no
# database server, no browser, no subprocess (well under 90 s on two cores).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh requirements-test.txt
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# Any non-zero exit fails, 5 ("no tests collected") included: it means a broken collection or a
# selection that matches nothing. `--durations=15` comes from pyproject's addopts.
if [ "${1:-}" = "--quick" ]; then
  shift
  exec python -m pytest tests/unit -n 2 -m "not postgres and not s3 and not service" "$@"
fi
exec python -m pytest "$@"
