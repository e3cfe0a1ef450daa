#!/usr/bin/env bash
# One-command GPU check (issue 12): Quality (30 steps, fp16) and Fast (4 LCM steps) end to end through
# core.inpaint at 512x384 and 1024x768, eager and torch.compile'd (compile warm-up reported apart), on
# the real-size SD 1.5 inpainting architecture with random weights. The last line is JSON.
# Without CUDA it prints "no GPU" and exits 0.   Usage: bash bench/gpu.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-.venv/bin/python}"
[ -x "$PY" ] || PY=python3
exec "$PY" bench/generate.py --gpu "$@"
