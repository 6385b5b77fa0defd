#!/usr/bin/env bash
# Install, ingest the sample documents shipped in samples/, and serve the chat UI on
# http://127.0.0.1:7860 (set APPLIANCE_SERVER__PORT / APPLIANCE_DATA_DIR to change).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/setup.sh
# Exit status 1 only means some file failed (the summary says which): serve anyway. Any other
# status is a real error, already explained on stderr.
status=0
.venv/bin/appliance ingest samples --progress || status=$?
[ "$status" -le 1 ] || exit "$status"
exec .venv/bin/appliance serve
