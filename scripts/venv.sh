#!/usr/bin/env bash
# Create (or reuse) .venv and install the given requirements file when it changed.
# Usage: source scripts/venv.sh requirements-test.txt
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
req=${1:-requirements.txt}
venv=${BACKDROP_VENV:-$root/.venv}
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install -q --upgrade pip
fi
stamp="$venv/.installed-$(basename "$req")"
want=$(cat "$root/requirements.txt" "$root/$req" | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "Installing $req into $venv (first run takes a few minutes)..." >&2
  # opencv-contrib-python-headless replaced opencv-python-headless: both own cv2, keep only one
  "$venv/bin/python" -m pip uninstall -q -y opencv-python-headless >/dev/null 2>&1 || true
  "$venv/bin/python" -m pip install -q -r "$root/$req"
  echo "$want" > "$stamp"
fi
export PATH="$venv/bin:$PATH"
