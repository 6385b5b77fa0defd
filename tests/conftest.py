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

pytest_plugins = ["tests.support.postgres"]  # postgres_server, postgres_url

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
    # The Q8_0 copy of the shipped chat model (llm.shipped_weights) is made once for the whole run, not in
    # every test's data dir; servers and CLI runs the tests start inherit it.
    os.environ.setdefault("APPLIANCE_MODEL_CACHE_DIR", str(ROOT / "build" / "model-cache"))
    # Audit hooks cannot be removed: installed once, they watch every test in this process.
    sys.addaudithook(_network_guard)


def _syscall_attempts() -> list[str]:
    """What the libc-level guard (tests/egress_probe/egress_guard.c, loaded by scripts/test.sh with
    LD_PRELOAD into this process and every one it starts) recorded so far."""
    path = os.environ.get("EGRESS_SYSCALL_LOG")
    if not path or not os.path.exists(path):
        return []
    with open(path, encoding="utf-8", errors="replace") as f:
        return f.read().splitlines()


@pytest.fixture(autouse=True)
def _no_egress() -> Iterator[None]:
    before, native = len(_violations), len(_syscall_attempts())
    yield
    new = _violations[before:]
    assert not new, f"test attempted non-loopback network access: {new}"
    calls = _syscall_attempts()[native:]
    assert not calls, f"a process of this test tried to reach beyond loopback (libc-level guard): {calls}"


def pytest_report_header(config: pytest.Config) -> str:
    preload = os.environ.get("LD_PRELOAD", "")
    if "egress_guard" in preload and os.environ.get("EGRESS_SYSCALL_LOG"):
        return f"egress guard: Python audit hook, and libc-level ({preload})"
    return "egress guard: Python audit hook (the libc-level one is loaded by scripts/test.sh where gcc exists)"


def without_egress_guard(env: dict[str, str]) -> dict[str, str]:
    """The environment for a child that must use the network on purpose (building the bundle from the
    package registry): the libc-level guard is not loaded into it."""
    return {k: v for k, v in env.items() if k not in ("LD_PRELOAD", "EGRESS_SYSCALL_LOG")}


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
