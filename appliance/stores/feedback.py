"""Employees' thumbs up/down on answers, kept as JSON lines in <data_dir>/feedback.jsonl.

Each line holds the question, the answer and the sources the user was shown, so that a later eval
run can turn the thumbs-down into a regression set without looking anything up. A rating of the same
answer again (a changed mind, a comment added) is a new line: the export keeps the last one.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal, TextIO

Rating = Literal["up", "down", "withdrawn"]  # withdrawn: the user took their thumb back
MAX_COMMENT = 2000


class FeedbackLog:
    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path.with_suffix(".lock"), os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)  # the server's workers and the CLI never interleave lines
            yield
        finally:
            os.close(fd)

    def record(self, user: str, rating: Rating, question: str, answer: str, sources: list[dict[str, Any]],
               comment: str = "", conversation: str = "", turn: int | None = None) -> dict[str, Any]:
        if rating not in ("up", "down", "withdrawn"):
            raise ValueError(f"rating must be 'up', 'down' or 'withdrawn', not {rating!r}")
        entry = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "user": user, "rating": rating,
                 "comment": " ".join((comment or "").split())[:MAX_COMMENT], "question": question,
                 "answer": answer, "sources": sources, "conversation": conversation or None, "turn": turn}
        line = json.dumps(entry, ensure_ascii=False) + "\n"
        with self._locked():
            fd = os.open(self.path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            with os.fdopen(fd, "a", encoding="utf-8") as f:
                f.write(line)
        return entry

    def entries(self, latest_only: bool = True) -> list[dict[str, Any]]:
        """Oldest first; with latest_only, one entry per rated answer (user, conversation, turn): its last,
        unless that was a withdrawal. A line cut short (a full disk, a crash) is skipped."""
        if not self.path.exists():
            return []
        rows = []
        with self._locked(), self.path.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    rows.append(json.loads(line))
                except ValueError:
                    continue
        if not latest_only:
            return rows
        last: dict[tuple[Any, ...], dict[str, Any]] = {}
        for row in rows:
            key = (row["user"], row.get("conversation"), row.get("turn"), row["question"], row["answer"])
            last.pop(key, None)  # re-inserted at the end: the order is that of the last rating
            last[key] = row
        return [row for row in last.values() if row["rating"] != "withdrawn"]

    def export(self, out: TextIO, rating: Rating | None = None) -> int:
        n = 0
        for row in self.entries():
            if rating is None or row["rating"] == rating:
                out.write(json.dumps(row, ensure_ascii=False) + "\n")
                n += 1
        return n
