#!/usr/bin/env bash
# Install with the test tools, lint, type-check, and run every test (real parser, models and store).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/mypy
# The egress guard at the libc level, beside the tests' Python audit hook: every process of the run
# (servers, CLI, parse workers, Chromium) records its non-loopback connects and lookups.
if [[ "$PWD" == *" "* ]]; then
    echo "note: the checkout's path holds a space: the libc-level egress guard is not loaded" >&2
elif command -v gcc >/dev/null 2>&1; then
    mkdir -p build
    gcc -shared -fPIC -O2 -o build/egress_guard.so tests/egress_probe/egress_guard.c -ldl
    export LD_PRELOAD="$PWD/build/egress_guard.so" EGRESS_SYSCALL_LOG="$PWD/build/egress-attempts.log"
    rm -f "$EGRESS_SYSCALL_LOG"
fi
# -m "": every test, not only the fast suite that plain `pytest` runs (pyproject.toml addopts).
# --durations: the slowest tests, in CI's log too (where to cut its time).
exec .venv/bin/python -m pytest -m "" --durations=25 "$@"
