#!/usr/bin/env bash
# Create .venv (once) and install wai with every extra. torch is installed first at its pinned CPU
# version so that no requirement can pull the CUDA build from the registry.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
# open3d's wheel links libusb-1.0, which minimal Debian images lack.
if ! ldconfig -p 2>/dev/null | grep -q "libusb-1.0.so.0"; then
  if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = "0" ]; then
    (apt-get update -qq && apt-get install -y -qq libusb-1.0-0) >/dev/null 2>&1 \
      || echo "warning: could not install libusb-1.0-0; 'import open3d' (OPV2V) may fail" >&2
  else
    echo "warning: libusb-1.0 missing; install it (e.g. apt-get install libusb-1.0-0) for open3d/OPV2V" >&2
  fi
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q "torch==2.13.0"
.venv/bin/python -m pip install -q -e ".[all]"
