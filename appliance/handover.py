"""How `ingest` reaches a running `serve` that holds the embedded store.

`serve` writes <data_dir>/server.json (mode 0600): its pid, a loopback URL and a token made at
start-up. Whoever can read the data directory may already change the store directly, so the file
grants nothing new; the token only lets such a local user hand an ingest job to the server, which
runs it with the store it holds. The file is removed when the server stops; a stale one (its pid
gone) is ignored.
"""

from __future__ import annotations

import ipaddress
import json
import os
import secrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

FILE = "server.json"


@dataclass
class RunningServer:
    pid: int
    url: str
    token: str


def announce(data_dir: Path, host: str, port: int) -> RunningServer:
    local = {"0.0.0.0": "127.0.0.1", "": "127.0.0.1", "::": "::1"}.get(host, host)
    server = RunningServer(os.getpid(), f"http://{'[' + local + ']' if ':' in local else local}:{port}",
                           secrets.token_urlsafe(32))
    # A fresh file of our own (never one planted in advance, nor a symlink), readable by us alone.
    fd, tmp = tempfile.mkstemp(dir=data_dir, prefix=".server-", suffix=".json")
    os.fchmod(fd, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(server.__dict__, out)
    os.replace(tmp, data_dir / FILE)
    return server


def is_local_client(client: str, server_address: str | None) -> bool:
    """A request from this machine: loopback, or the very address the server listens on."""
    if client == "testclient":  # Starlette's in-process test client
        return True
    try:
        if ipaddress.ip_address(client).is_loopback:
            return True
        mapped = ipaddress.ip_address(client)
        if isinstance(mapped, ipaddress.IPv6Address) and mapped.ipv4_mapped and mapped.ipv4_mapped.is_loopback:
            return True
    except ValueError:
        return False
    return server_address is not None and client == server_address


def withdraw(data_dir: Path, server: RunningServer) -> None:
    found = find(data_dir)
    if found is not None and found.token == server.token:
        (data_dir / FILE).unlink(missing_ok=True)


def find(data_dir: Path) -> RunningServer | None:
    """The server running on this data directory, if its file is there and its process alive."""
    try:
        raw = json.loads((data_dir / FILE).read_text())
        server = RunningServer(int(raw["pid"]), str(raw["url"]), str(raw["token"]))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    try:
        os.kill(server.pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:  # alive, another user's
        pass
    return server


def os_actor() -> str:
    """The operating-system user running this command, as the audit trail names them."""
    import getpass

    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli"


def handover_headers(server: RunningServer) -> dict[str, str]:
    """The token, and the OS user handing the job over (the server's audit trail names them)."""
    return {"Authorization": f"Bearer {server.token}", "X-Appliance-Actor": os_actor()}
