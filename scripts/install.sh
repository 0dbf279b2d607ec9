#!/usr/bin/env bash
# Install what upwire needs, idempotently; a second run on a ready machine takes seconds.
#
# Usage: scripts/install.sh demo   .venv (python3.11 -m venv) + `pip install -e .`
#        scripts/install.sh all    demo + Debian packages the tests need (chromium, tinyproxy, nginx), `pip install -e '.[test]'`,
#                                  tshark (tests/wire), npm packages of tests/interop/node/, and the Autobahn testsuite
#                                  (../shared/autobahn/setup.sh, only where that folder exists)
# Environment: PYTHON (default python3.11), AUTOBAHN_HOME (where the Autobahn venv lives, default
# ${XDG_CACHE_HOME:-~/.cache}/autobahn-py3, so that shared/ stays untouched and the build is reused).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODE="${1:-}"
case "$MODE" in
  demo|all) ;;
  *) echo "usage: scripts/install.sh demo|all" >&2; exit 2 ;;
esac
cd "$REPO"

say() { echo "install.sh: $*"; }

# --- Debian packages (only when something is missing; `apt-get update` at most once) ---------------
APT_UPDATED=0
apt_ensure() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  [[ ${#missing[@]} -eq 0 ]] && return 0
  if ! command -v apt-get >/dev/null; then
    [[ "${APT_OPTIONAL:-0}" == 1 ]] && { say "note: no apt-get: ${missing[*]} not installed"; return 1; }
    echo "install.sh: missing ${missing[*]} and no apt-get" >&2; exit 1
  fi
  local sudo=()
  if [[ "$(id -u)" -ne 0 ]]; then
    if ! command -v sudo >/dev/null; then
      # What only speeds things up (the C extension's compiler and headers, for the demo) is skipped.
      [[ "${APT_OPTIONAL:-0}" == 1 ]] && { say "note: not root and no sudo: ${missing[*]} not installed"; return 1; }
      echo "install.sh: need root (or sudo) to install ${missing[*]}" >&2; exit 1
    fi
    sudo=(sudo)
  fi
  say "apt-get install ${missing[*]}"
  if [[ $APT_UPDATED -eq 0 ]]; then
    "${sudo[@]}" apt-get update -q >/dev/null
    APT_UPDATED=1
  fi
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
}

# --- Python 3.11+ and the venv ---------------------------------------------------------------------
PY="${PYTHON:-python3.11}"
if ! command -v "$PY" >/dev/null; then
  PY=python3
fi
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null ||
  { echo "install.sh: upwire needs Python >= 3.11 (tried $PY; set PYTHON=...)" >&2; exit 1; }
# Debian's own python3 ships venv/ensurepip separately
"$PY" -c 'import ensurepip, venv' 2>/dev/null || apt_ensure python3-venv

VENV="$REPO/.venv"
if ! "$VENV/bin/python" -c 'import sys; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
  say "creating .venv with $PY"
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
fi

# pip only when pyproject.toml, setup.py or the C extension's source changed since the last install of this
# mode (an `all` install covers `demo`), or when the package appeared since (the editable install maps only
# the packages it found; the C extension is compiled by pip, so a changed source needs a new install)
if [[ "$MODE" == all ]]; then target=".[test]"; else target="."; fi
hash="$({ cat pyproject.toml setup.py upwire/*.c 2>/dev/null; [[ -f upwire/__init__.py ]] && echo "package: upwire"; } | sha256sum | cut -d' ' -f1)"
installed() { [[ "$(cat "$VENV/.upwire-install-$1" 2>/dev/null)" == "$hash" ]]; }
if installed all || { [[ "$MODE" == demo ]] && installed demo; }; then
  say ".venv is up to date"
else
  # The C extension (upwire/_speedups.c) needs a C compiler and Python's headers; pip builds it as an
  # optional extension, so without them it quietly installs the pure-Python twin alone.
  # (The demo goes on without them when they cannot be installed; the tests need them.)
  optional=0; [[ "$MODE" == demo ]] && optional=1
  command -v cc >/dev/null || command -v gcc >/dev/null || APT_OPTIONAL=$optional apt_ensure gcc ||
    [[ $optional == 1 ]]
  "$PY" -c 'import os, sys, sysconfig; sys.exit(not os.path.exists(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' ||
    APT_OPTIONAL=$optional apt_ensure python3-dev || [[ $optional == 1 ]]
  say "pip install -e '$target'"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -e "$target"
  if "$VENV/bin/python" -c 'import upwire._speedups' 2>/dev/null; then
    echo "$hash" > "$VENV/.upwire-install-$MODE"
  elif [[ "$MODE" == all ]]; then
    echo "install.sh: the C extension upwire._speedups did not build (it needs a C compiler and the" \
      "headers of $PY); the tests require it. See: $VENV/bin/python -m pip install -v -e ." >&2
    exit 1
  else
    # No stamp: the next install tries again (once a compiler is there).
    say "note: the C extension did not build; upwire runs on its pure-Python twin (slower)"
  fi
fi

[[ "$MODE" == demo ]] && { say "demo ready"; exit 0; }

# --- everything the tests need ---------------------------------------------------------------------
debs=(chromium)                      # browser tests: Debian's /usr/bin/chromium, driven by playwright
debs+=(tinyproxy nginx)              # client through a forward proxy; server behind a reverse proxy
debs+=(tshark)                       # tests/wire: captures with dumpcap, the reference dissector
command -v npm >/dev/null || debs+=(nodejs npm)
# tshark's package asks whether non-root users may capture; answer "no" so the install needs no terminal.
if ! dpkg-query -W -f='${Status}' tshark 2>/dev/null | grep -q "install ok installed"; then
  if command -v debconf-set-selections >/dev/null; then
    echo "wireshark-common wireshark-common/install-setuid boolean false" |
      { if [[ "$(id -u)" -ne 0 ]]; then sudo debconf-set-selections; else debconf-set-selections; fi; }
  fi
fi
apt_ensure "${debs[@]}"

NODE_DIR="$REPO/tests/interop/node"
if [[ -f "$NODE_DIR/package.json" ]]; then
  node_stamp="$NODE_DIR/node_modules/.upwire-stamp"
  node_want="$(cat "$NODE_DIR/package.json" "$NODE_DIR/package-lock.json" 2>/dev/null | sha256sum | cut -d' ' -f1)"
  if [[ ! -f "$node_stamp" || "$(cat "$node_stamp")" != "$node_want" ]]; then
    if [[ -f "$NODE_DIR/package-lock.json" ]]; then
      say "npm ci in tests/interop/node"
      (cd "$NODE_DIR" && npm ci --no-audit --no-fund --loglevel=error)
    else
      say "npm install in tests/interop/node"
      (cd "$NODE_DIR" && npm install --no-audit --no-fund --loglevel=error)
    fi
    echo "$node_want" > "$node_stamp"
  else
    say "tests/interop/node/node_modules is up to date"
  fi
fi

# The CI checkout has a read-only shared/ beside the repo; a plain clone elsewhere may not.
AUTOBAHN_DIR="$REPO/../shared/autobahn"
if [[ -x "$AUTOBAHN_DIR/setup.sh" ]]; then
  export AUTOBAHN_HOME="${AUTOBAHN_HOME:-${XDG_CACHE_HOME:-${HOME:-/tmp}/.cache}/autobahn-py3}"
  say "Autobahn testsuite in $AUTOBAHN_HOME"
  PYTHON="$PY" "$AUTOBAHN_DIR/setup.sh" | tail -1
else
  say "../shared/autobahn not found: Autobahn conformance tests will be skipped"
fi
say "all ready"
