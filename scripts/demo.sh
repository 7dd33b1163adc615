#!/usr/bin/env bash
# Set up (if needed) and run the end-to-end demo on built-in data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/wai-demo "${1:-demo_out}"
