"""The audit trail: append-only JSON lines under <data_dir>/audit/, rotated by size, hash-chained.

Each line carries the SHA-256 of the line before it and of itself, so an edited, inserted or removed
line breaks the chain (`appliance audit verify`). The app has no route that changes the trail; the
server and the CLI both append, under an fcntl lock, so lines of two processes never interleave.
Document text is not written unless audit.include_text is set: a question's sources are named by
file and page only.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

CURRENT = "audit.jsonl"
GENESIS = "0" * 64


def _hash(prev: str, entry: dict[str, Any]) -> str:
    body = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode("utf-8")).hexdigest()


@dataclass
class Verification:
    lines: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


class AuditLog:
    def __init__(self, folder: Path, max_bytes: int = 50 << 20, keep: int = 50, include_text: bool = False) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        self.include_text = include_text
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def record(self, event: str, actor: str, **fields: Any) -> None:
        """Append one event. An answer and the sources' text are dropped unless include_text."""
        entry: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
                                 "actor": actor}
        entry.update({k: v for k, v in fields.items() if v is not None})
        if not self.include_text:
            entry.pop("answer", None)
            for source in entry.get("sources") or []:
                if isinstance(source, dict):
                    source.pop("text", None)
        with self._locked():
            path = self.folder / CURRENT
            if path.exists() and path.stat().st_size >= self.max_bytes:
                self._rotate(path)
            prev = _last_hash(self.folder)
            entry["prev"] = prev
            entry["hash"] = _hash(prev, {k: v for k, v in entry.items() if k != "hash"})
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as out:
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")

    def _rotate(self, path: Path) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.folder / f"audit-{stamp}-{time.time_ns() % 10**9:09d}.jsonl"
        os.replace(path, target)
        rotated = self.files()  # the current file was just moved: all of these are rotated ones
        for old in rotated[: max(0, len(rotated) - self.keep)]:
            old.unlink(missing_ok=True)

    def files(self) -> list[Path]:
        """Oldest first; the current file last."""
        return _files(self.folder)

    def entries(self) -> Iterator[dict[str, Any]]:
        for path in self.files():
            with path.open(encoding="utf-8") as lines:
                for line in lines:
                    if line.strip():
                        yield json.loads(line)

    def search(self, text: str = "", actor: str | None = None, event: str | None = None,
               since: str | None = None, until: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first. `text` matches anywhere in the line (case-insensitive); times are ISO 8601 prefixes."""
        found: list[dict[str, Any]] = []
        needle = text.lower().strip()
        for entry in self.entries():
            if actor and entry.get("actor") != actor:
                continue
            if event and entry.get("event") != event:
                continue
            ts = str(entry.get("ts", ""))
            if (since and ts < since) or (until and ts[: len(until)] > until):
                continue
            if needle and needle not in json.dumps(entry, ensure_ascii=False).lower():
                continue
            found.append(entry)
        return found[::-1][:limit]

    def export(self, out: TextIO, **filters: Any) -> int:
        rows = self.search(limit=10**9, **filters)[::-1]
        for entry in rows:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return len(rows)

    def verify(self) -> Verification:
        """Walk the chain; the oldest kept line anchors it (older files may have been rotated away)."""
        problems: list[str] = []
        prev: str | None = None
        count = 0
        for path in self.files():
            with path.open(encoding="utf-8") as lines:
                for number, line in enumerate(lines, start=1):
                    if not line.strip():
                        continue
                    count += 1
                    where = f"{path.name}:{number}"
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        problems.append(f"{where}: not JSON")
                        prev = None
                        continue
                    if prev is not None and entry.get("prev") != prev:
                        problems.append(f"{where}: does not follow the line before it (a line was removed or added)")
                    if entry.get("hash") != _hash(str(entry.get("prev")), {k: v for k, v in entry.items()
                                                                          if k != "hash"}):
                        problems.append(f"{where}: its content was changed")
                    prev = str(entry.get("hash"))
        return Verification(count, problems)


def _last_hash(folder: Path) -> str:
    for path in reversed(_files(folder)):
        with path.open("rb") as f:
            f.seek(0, os.SEEK_END)
            size = f.tell()
            f.seek(max(0, size - 65536))
            tail = f.read().splitlines()
        for line in reversed(tail):
            if line.strip():
                try:
                    return str(json.loads(line)["hash"])
                except (ValueError, KeyError):
                    return GENESIS  # a damaged last line: verify reports it; the chain goes on from here
    return GENESIS


def _files(folder: Path) -> list[Path]:
    rotated = sorted(folder.glob("audit-*.jsonl"))
    current = folder / CURRENT
    return [*rotated, current] if current.exists() else rotated
