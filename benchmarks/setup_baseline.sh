#!/usr/bin/env bash
# The baseline's own virtual environment (PrivateGPT 0.6.2-style ingestion, ../shared/bench), for
# `python -m benchmarks.run --only scale`. torch must be the local CPU wheel: pip finds it in /opt/wheels.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
[ -x .venv-baseline/bin/python ] || "$PYTHON" -m venv .venv-baseline
.venv-baseline/bin/python -m pip install --quiet --disable-pip-version-check --find-links /opt/wheels \
    -r ../shared/bench/baseline-requirements.txt
