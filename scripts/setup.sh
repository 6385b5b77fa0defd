#!/usr/bin/env bash
# Create .venv and install the appliance with everything it needs, from the package registries only.
# Usage: scripts/setup.sh [extra]   (extra: "test" adds the test and lint tools)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-$(command -v python3.11 || command -v python3)}
if ! "$PYTHON" -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    echo "error: Python 3.11 is required (found $("$PYTHON" --version 2>&1)); set PYTHON=/path/to/python3.11" >&2
    exit 2
fi
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# llama-cpp-python ships only as source: build it portably (no -march=native) so the wheel runs on
# any x86-64 machine with AVX2; pip caches the built wheel, so only the first install compiles (~5 min).
export CMAKE_ARGS="${CMAKE_ARGS:--DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON}"
export CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}"
# Legacy .doc/.ppt are converted by LibreOffice (Debian's packages); without it they are reported per file.
if ! command -v soffice >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing LibreOffice (headless) for legacy .doc/.ppt files..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            libreoffice-writer-nogui libreoffice-impress-nogui; } >/dev/null \
            || echo "note: LibreOffice could not be installed; .doc/.ppt files will be reported, not read" >&2
    else
        echo "note: no LibreOffice (soffice); .doc/.ppt files will be reported, not read." \
             "Install libreoffice-writer-nogui and libreoffice-impress-nogui to read them." >&2
    fi
fi
# Scanned PDF pages and images are read by Tesseract (Debian's packages, 23 MB); without it they are reported.
if ! command -v tesseract >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing Tesseract OCR for scanned PDF pages and images..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            tesseract-ocr tesseract-ocr-eng; } >/dev/null \
            || echo "note: Tesseract could not be installed; scanned pages and images will be reported, not read" >&2
    else
        echo "note: no Tesseract (tesseract); scanned pages and images will be reported, not read." \
             "Install tesseract-ocr and tesseract-ocr-eng to read them." >&2
    fi
fi
spec="."
[ "${1:-}" = "test" ] && spec=".[test]"
# The tests validate deploy/compose*.yaml with `docker compose config` when a compose binary exists.
if [ "${1:-}" = "test" ] && ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        docker-compose; } >/dev/null 2>&1 || echo "note: docker-compose not installed; its check will be skipped" >&2
fi
# The browser tests drive Debian's Chromium with Playwright (Playwright never downloads a browser here).
if [ "${1:-}" = "test" ] && ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    echo "installing Chromium (Debian's package) for the browser tests..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        chromium; } >/dev/null 2>&1 || echo "note: chromium not installed; the browser tests will be skipped" >&2
fi
# The shared-database tests (several replicas, several ingest runs) start a throwaway PostgreSQL server.
if [ "${1:-}" = "test" ] && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    echo "installing PostgreSQL (Debian's package) for the shared-database tests..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        postgresql; } >/dev/null 2>&1 || echo "note: PostgreSQL not installed; its tests will be skipped" >&2
fi
# The reverse-proxy test runs deploy/nginx/appliance.conf in Debian's nginx (TLS in front of `appliance serve`).
if [ "${1:-}" = "test" ] && ! command -v nginx >/dev/null 2>&1 && ! [ -x /usr/sbin/nginx ] && [ "$(id -u)" = 0 ] \
        && command -v apt-get >/dev/null 2>&1; then
    echo "installing nginx (Debian's package) for the reverse-proxy test..." >&2
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx; } >/dev/null 2>&1 || echo "note: nginx not installed; the reverse-proxy test will be skipped" >&2
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check --upgrade pip
echo "installing the appliance into .venv (the first time compiles llama.cpp: about 5 minutes)..." >&2
.venv/bin/python -m pip install --quiet --disable-pip-version-check -e "$spec" ./packages/en_core_web_sm
