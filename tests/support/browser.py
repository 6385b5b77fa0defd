"""Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).

Chromium is told to resolve no name (only loopback is ever asked for) and to skip its background
services. Its own network probes (it sends to the resolver and to 8.8.8.8 to learn the network)
are not the page's: Chromium runs without the libc-level egress guard, and every request of the
page itself is checked by Playwright's routing in the tests, which blocks and fails anything beyond
the server."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

LAUNCH_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
               "--disable-sync", "--no-first-run", "--disable-quic", "--disable-default-apps",
               "--disable-domain-reliability", "--no-pings", "--disable-client-side-phishing-detection",
               "--disable-breakpad", "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost",
               "--disable-features=Translate,OptimizationHints,DnsOverHttps,AsyncDns,NetworkTimeServiceQuerying,"
               "MediaRouter,AutofillServerCommunication,CertificateTransparencyComponentUpdater"]


def chromium() -> str:
    path = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(path).exists():
        pytest.skip("Debian's chromium is not installed (apt-get install chromium; scripts/setup.sh test does)")
    pytest.importorskip("playwright.sync_api")
    return path


def launch(playwright: Any) -> Any:
    from tests.conftest import without_egress_guard

    return playwright.chromium.launch(executable_path=chromium(), args=LAUNCH_ARGS,
                                      env=without_egress_guard(dict(os.environ)))
