"""Put on PYTHONPATH of a child process: records every non-loopback connect() or DNS lookup.

Python imports `sitecustomize` at start-up, so the audit hook sees the whole process, including
attempts that a library would catch and swallow. Attempts go, one per line, to $EGRESS_LOG.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import sys
from typing import Any


def is_loopback(host: Any) -> bool:
    if host is None or host in ("", "localhost", "localhost.localdomain"):
        return True
    text = host.decode() if isinstance(host, bytes) else str(host)
    try:
        addr = ipaddress.ip_address(text.split("%")[0])
    except ValueError:
        return text.endswith(".localhost")
    return addr.is_loopback or addr.is_unspecified


def egress_attempt(event: str, args: tuple[Any, ...]) -> str | None:
    """A description of the attempt if this audit event leaves loopback, else None."""
    if event == "socket.connect":
        sock, address = args
        if getattr(sock, "family", None) in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
            return f"connect {address}"
    elif event == "socket.getaddrinfo" and not is_loopback(args[0]):
        return f"getaddrinfo {args[0]!r}"
    return None


def _record(event: str, args: tuple[Any, ...]) -> None:
    attempt = egress_attempt(event, args)
    if attempt:
        with open(os.environ["EGRESS_LOG"], "a") as log:
            log.write(f"{os.getpid()} {' '.join(sys.argv)[:120]}: {attempt}\n")


if os.environ.get("EGRESS_LOG"):
    sys.addaudithook(_record)
