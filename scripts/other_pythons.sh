#!/usr/bin/env bash
# Run the whole test suite on other Python versions than the checkout's .venv (3.11).
#
# Usage: scripts/other_pythons.sh [PYTHON ...]   (default: python3.12 python3.13; each must run)
#
# For each interpreter: a copy of the tracked files in a temporary folder, a fresh venv with `.[test]`
# (which builds the C extension for that version), the npm packages and ../shared linked in, then pytest
# over tests/. asyncio changes between versions (3.12 gave the socket transport its own `writelines`, for
# one), so what passes on 3.11 is checked here too. Not part of `./run test`: CI's machine has one Python.
# Needs ./run install all first (for the npm packages), and the interpreters (pyenv's, or Debian's).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PYTHONS=("$@")
[ ${#PYTHONS[@]} -gt 0 ] || PYTHONS=(python3.12 python3.13)
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

for python in "${PYTHONS[@]}"; do
  if ! "$python" -c "" 2>/dev/null; then
    echo "other_pythons: $python does not run here; pass interpreters by path" \
      "(e.g. ~/.pyenv/versions/3.12.1/bin/python)" >&2
    exit 1
  fi
  version="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
  copy="$WORK/$version/main"
  mkdir -p "$copy"
  (cd "$REPO" && git ls-files | tar -cf - -T - | tar -xf - -C "$copy")
  rm -f "$copy"/upwire/*.so
  ln -s "$REPO/tests/interop/node/node_modules" "$copy/tests/interop/node/node_modules"
  [ -d "$REPO/../shared" ] && ln -s "$(cd "$REPO/.." && pwd)/shared" "$WORK/$version/shared"
  echo "other_pythons: Python $version ($("$python" -c 'import sys; print(sys.version.split()[0])'))"
  "$python" -m venv "$WORK/$version/venv"
  if ! log="$("$WORK/$version/venv/bin/pip" install -q -e "$copy[test]" 2>&1)"; then
    echo "$log" >&2
    exit 1
  fi
  (cd "$copy" && "$WORK/$version/venv/bin/python" -m pytest tests -q -p no:cacheprovider)
done
