#!/usr/bin/env bash
# Set up (if needed) and run the end-to-end demo on built-in data. The output folder (default demo_out) is
# relative to the folder you run this from, and so are the commands the demo prints at the end.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
bash "$repo/scripts/setup.sh"
exec "$repo/.venv/bin/wai-demo" "${1:-demo_out}"
