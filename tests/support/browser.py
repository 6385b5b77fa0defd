"""Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-features=Translate,OptimizationHints"]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh test does)")
    pytest.importorskip("playwright.sync_api")
    return path
