"""Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).

Chromium is told to resolve no name (only loopback is ever asked for) and to skip its background
services (updates, safe browsing, sync, DNS over HTTPS...): left to itself it looks up Google's
update and account servers and probes 8.8.8.8, which the libc-level egress guard reports. It runs
under that guard like every other process, and every request of the page itself is also checked by
Playwright's routing in the tests, which blocks and fails anything beyond the server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps",
               "--disable-domain-reliability", "--no-pings", "--disable-client-side-phishing-detection",
               "--disable-breakpad", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
               "--disable-features=Translate,OptimizationHints,DnsOverHttps,AsyncDns,NetworkTimeServiceQuerying,"
               "MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater"]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh test does)")
    pytest.importorskip("playwright.sync_api")
    return path


def launch(playwright: Any) -> Any:
    return playwright.chromium.launch(executable_path=chromium(), args=LAUNCH_ARGS, env=dict(os.environ))
