#!/usr/bin/env bash
# Serve the app: creates/reuses .venv, installs requirements.txt, runs `streamlit run streamlit_app.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh requirements.txt
exec streamlit run streamlit_app.py "$@"
