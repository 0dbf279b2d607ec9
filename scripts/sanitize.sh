#!/usr/bin/env bash
# Run the C extension's tests with AddressSanitizer and UndefinedBehaviorSanitizer (gcc).
#
# Usage: scripts/sanitize.sh [FUZZ_FACTOR]   (default 10: ten times the property tests' examples)
#
# The extension is built with -fsanitize=address,undefined into a copy of upwire/ and tests/ in a temporary
# folder (the checkout's own build stays as it is), then tests/protocol and the C send loop's tests run there
# with the sanitizer runtimes preloaded into Python. Any out-of-bounds access, use after free or undefined
# behaviour in upwire/_speedups.c stops the run with a report. Needs gcc and ./run install all (.venv).
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
FACTOR="${1:-10}"
PY="$REPO/.venv/bin/python"
WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT

cd "$REPO"
git ls-files upwire tests setup.py pyproject.toml README.md | tar -cf - -T - | tar -xf - -C "$WORK"
rm -f "$WORK"/upwire/*.so
(
  cd "$WORK"
  CFLAGS="-fsanitize=address,undefined -fno-omit-frame-pointer -O1 -g" \
    LDFLAGS="-fsanitize=address,undefined" "$PY" setup.py -q build_ext --inplace
) >/dev/null
ls "$WORK"/upwire/_speedups*.so >/dev/null

export LD_PRELOAD="$(gcc -print-file-name=libasan.so):$(gcc -print-file-name=libubsan.so)"
export ASAN_OPTIONS=detect_leaks=0  # CPython's own allocations would be reported as leaks at exit
export PYTHONMALLOC=malloc  # every object from malloc, so that ASan knows the bounds of small ones too
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
export PYTHONPATH="$WORK" UPWIRE_FUZZ_FACTOR="$FACTOR"
cd "$WORK"
"$PY" -c 'import upwire._speedups as s, sys; sys.exit(0 if s.__file__.startswith(sys.argv[1]) else 1)' "$WORK"
echo "sanitize.sh: extension built with ASan and UBSan in $WORK; running the tests (fuzz factor $FACTOR)"
"$PY" -m pytest -p no:cacheprovider --capture=sys -q tests/protocol tests/integration/test_send_each.py \
  tests/integration/test_broadcast.py tests/integration/test_large_messages.py
