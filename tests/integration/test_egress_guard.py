"""The libc-level egress guard records what Python's audit hook cannot see: a connect() or a name
lookup from native code, in any process that loads it."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, without_egress_guard

SOURCE = ROOT / "tests" / "egress_probe" / "egress_guard.c"
# Native-level calls the audit hook never sees: libc's functions called through the process's global
# symbols, as a C library linked against libc calls them.
PROBE = """
import ctypes, socket, struct
libc = ctypes.CDLL(None, use_errno=True)
def sockaddr(ip, port):  # sin_family in the host's byte order, the port and address in the network's
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H4s8x", port, socket.inet_aton(ip))
addr = sockaddr("192.0.2.1", 53)  # TEST-NET-1: never routed
tcp = socket.socket()
tcp.setblocking(False)  # the connect returns at once (EINPROGRESS)
libc.connect(tcp.detach(), addr, len(addr))  # recorded
udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM).detach()
libc.connect(udp, addr, len(addr))  # not recorded: a UDP connect sends nothing
libc.send(udp, b"x", 1, 0)  # recorded: now it does
loop = sockaddr("127.0.0.1", 9)
libc.connect(socket.socket().detach(), loop, len(loop))
res = ctypes.c_void_p()
libc.getaddrinfo(b"telemetry.example.invalid", None, None, ctypes.byref(res))
libc.getaddrinfo(b"localhost", None, None, ctypes.byref(res))
"""


@pytest.fixture(scope="module")
def guard(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("no gcc: the libc-level guard is not built (the audit hook still runs)")
    out = tmp_path_factory.mktemp("guard") / "egress_guard.so"
    subprocess.run(["gcc", "-shared", "-fPIC", "-O2", "-o", str(out), str(SOURCE), "-ldl"], check=True, timeout=120)
    return out


def test_native_connects_and_lookups_beyond_loopback_are_recorded(guard: Path, tmp_path: Path) -> None:
    log = tmp_path / "attempts.log"
    env = {**without_egress_guard(dict(os.environ)), "LD_PRELOAD": str(guard), "EGRESS_SYSCALL_LOG": str(log)}
    subprocess.run([sys.executable, "-c", PROBE], env=env, check=True, timeout=60)
    lines = log.read_text().splitlines()
    assert len(lines) == 3, lines  # loopback and localhost are not recorded
    assert lines[0].startswith("connect 192.0.2.1 (pid ")
    assert lines[1].startswith("send 192.0.2.1 (pid ")
    assert lines[2].startswith("lookup telemetry.example.invalid (pid ")
    assert "python" in lines[0]  # which program tried


def test_this_run_is_watched_when_scripts_test_sh_started_it() -> None:
    if "egress_guard" not in os.environ.get("LD_PRELOAD", ""):
        pytest.skip("not started by scripts/test.sh with gcc: only the audit hook watches this run")
    assert os.environ.get("EGRESS_SYSCALL_LOG")
    assert any("egress_guard" in line for line in Path("/proc/self/maps").read_text().splitlines())
