#!/usr/bin/env bash
# Install with the test tools, lint, type-check, and run every test (real parser, models and store).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh test
.venv/bin/ruff check .
.venv/bin/mypy
exec .venv/bin/python -m pytest "$@"
