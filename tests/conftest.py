"""Shared fixtures, and the guard that fails any test opening a non-loopback connection."""

from __future__ import annotations

import os
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.offline import enforce_offline
from tests.egress_probe.sitecustomize import egress_attempt

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"

_violations: list[str] = []


def _network_guard(event: str, args: tuple[Any, ...]) -> None:
    attempt = egress_attempt(event, args)
    if attempt:
        _violations.append(attempt)
        if event == "socket.getaddrinfo":
            raise socket.gaierror(f"test guard: {attempt}")
        raise ConnectionRefusedError(f"test guard: {attempt}")


def pytest_configure(config: pytest.Config) -> None:
    enforce_offline()
    # Audit hooks cannot be removed: installed once, they watch every test in this process.
    sys.addaudithook(_network_guard)


@pytest.fixture(autouse=True)
def _no_egress() -> Iterator[None]:
    before = len(_violations)
    yield
    new = _violations[before:]
    assert not new, f"test attempted non-loopback network access: {new}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


def make_services(data_dir: Path, **overrides: Any) -> Any:
    from appliance.services import build_services
    from appliance.settings import load_settings

    return build_services(load_settings(None, {"data_dir": data_dir, **overrides}))


def is_root_with_unshare() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and any(
        (Path(d) / "unshare").exists() for d in os.environ.get("PATH", "").split(os.pathsep)
    )
