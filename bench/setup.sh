#!/usr/bin/env bash
# Create the benchmark venv (bench/.venv, git-ignored) with the measured peers and upwire from this checkout.
set -euo pipefail
cd "$(dirname "$0")"
PY=${PYTHON:-python3}
# A venv without pip (made where python3-venv was missing) is made again.
[ -x .venv/bin/python ] && .venv/bin/python -m pip --version >/dev/null 2>&1 || { rm -rf .venv; "$PY" -m venv .venv; }
.venv/bin/pip install -q -r requirements.txt
.venv/bin/pip install -q -e ..
# instructions.py counts instructions with valgrind's callgrind and system calls with strace (Debian
# packages; installed when root)
if ! { command -v valgrind && command -v strace; } >/dev/null && command -v apt-get >/dev/null \
  && [ "$(id -u)" -eq 0 ]; then
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q valgrind strace >/dev/null
fi
.venv/bin/python - <<'PY'
import websockets.frames, websockets.speedups as s
assert websockets.frames.apply_mask is s.apply_mask, "websockets C speedups not loaded"
from aiohttp._websocket import reader
assert reader.WebSocketReader.__module__.endswith("reader_c"), "aiohttp C websocket reader not loaded"
import upwire
print(f"ok: websockets speedups and aiohttp C reader loaded; upwire {upwire.__version__} from {upwire.__file__}")
PY
