"""How `ingest` reaches a running `serve` that holds the embedded store.

`serve` writes <data_dir>/server.json (mode 0600): its pid, a loopback URL and a token made at
start-up. Whoever can read the data directory may already change the store directly, so the file
grants nothing new; the token only lets such a local user hand an ingest job to the server, which
runs it with the store it holds. The file is removed when the server stops; a stale one (its pid
gone) is ignored.
"""

from __future__ import annotations

import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path

FILE = "server.json"


@dataclass
class RunningServer:
    pid: int
    url: str
    token: str


def announce(data_dir: Path, host: str, port: int) -> RunningServer:
    local = "127.0.0.1" if host in ("0.0.0.0", "::", "") or not host else host
    server = RunningServer(os.getpid(), f"http://{'[' + local + ']' if ':' in local else local}:{port}",
                           secrets.token_urlsafe(32))
    path = data_dir / FILE
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(server.__dict__, out)
    tmp.replace(path)
    return server


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
