"""Each user's conversations, kept in <data_dir>/conversations.sqlite (or the shared database).

Every read and write names the owner, so an id alone never reaches a conversation: another
user's id answers exactly as an id that does not exist. Ids are random (128 bits), not counters.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from appliance.stores.database import INTEGRITY_ERRORS, Where, open_database

SCHEMA = """
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
);
CREATE INDEX IF NOT EXISTS conversations_owner ON conversations(owner, updated_at);
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,       -- JSON: file, page, doc_id of each source (what the user was shown)
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (conversation, n)
);
"""


@dataclass
class Turn:
    question: str
    answer: str
    sources: list[dict[str, Any]] = field(default_factory=list)
    at: float = 0.0


@dataclass
class Conversation:
    id: str
    title: str
    created_at: float
    updated_at: float
    turns: list[Turn] = field(default_factory=list)


class Conversations:
    def __init__(self, path: Where) -> None:
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()

    def create(self, owner: str, title: str) -> str:
        cid = secrets.token_hex(16)
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO conversations VALUES (?, ?, ?, ?, ?)",
                             (cid, owner, " ".join(title.split())[:120] or "Conversation", now, now))
            self._db.commit()
        return cid

    def add_turn(self, owner: str, cid: str, turn: Turn) -> bool:
        """False when the conversation is not the owner's (or is gone)."""
        for _ in range(3):  # two replicas adding a turn at once pick the same number: the second tries again
            try:
                return self._add_turn(owner, cid, turn)
            except INTEGRITY_ERRORS:
                time.sleep(0.05)
        return self._add_turn(owner, cid, turn)

    def _add_turn(self, owner: str, cid: str, turn: Turn) -> bool:
        with self._lock, self._db:
            if self._db.execute("SELECT 1 FROM conversations WHERE id = ? AND owner = ?", (cid, owner)).fetchone() \
                    is None:
                return False
            n = self._db.execute("SELECT coalesce(max(n), -1) + 1 FROM turns WHERE conversation = ?",
                                 (cid,)).fetchone()[0]
            now = time.time()
            self._db.execute("INSERT INTO turns VALUES (?, ?, ?, ?, ?, ?)",
                             (cid, n, turn.question, turn.answer, json.dumps(turn.sources), now))
            self._db.execute("UPDATE conversations SET updated_at = ? WHERE id = ?", (now, cid))
        return True

    def drop_turn(self, owner: str, cid: str, n: int) -> bool:
        """Forget turn n (its answer is being regenerated); False when the owner has no such turn."""
        with self._lock, self._db:
            if self._db.execute("SELECT 1 FROM conversations WHERE id = ? AND owner = ?", (cid, owner)).fetchone() \
                    is None:
                return False
            cur = self._db.execute("DELETE FROM turns WHERE conversation = ? AND n = ?", (cid, n))
        return bool(cur.rowcount > 0)

    def list(self, owner: str) -> list[Conversation]:
        with self._lock:
            rows = self._db.execute("SELECT id, title, created_at, updated_at FROM conversations WHERE owner = ? "
                                    "ORDER BY updated_at DESC", (owner,)).fetchall()
        return [Conversation(str(i), str(t), float(c), float(u)) for i, t, c, u in rows]

    def get(self, owner: str, cid: str) -> Conversation | None:
        with self._lock:
            row = self._db.execute("SELECT id, title, created_at, updated_at FROM conversations "
                                   "WHERE id = ? AND owner = ?", (cid, owner)).fetchone()
            if row is None:
                return None
            turns = self._db.execute("SELECT question, answer, sources, at FROM turns WHERE conversation = ? "
                                     "ORDER BY n", (cid,)).fetchall()
        return Conversation(str(row[0]), str(row[1]), float(row[2]), float(row[3]),
                            [Turn(str(q), str(a), json.loads(str(s)), float(at)) for q, a, s, at in turns])

    def rename(self, owner: str, cid: str, title: str) -> bool:
        with self._lock, self._db:
            cur = self._db.execute("UPDATE conversations SET title = ? WHERE id = ? AND owner = ?",
                                   (" ".join(title.split())[:120] or "Conversation", cid, owner))
        return bool(cur.rowcount > 0)

    def delete(self, owner: str, cid: str) -> bool:
        with self._lock, self._db:
            cur = self._db.execute("DELETE FROM conversations WHERE id = ? AND owner = ?", (cid, owner))
        return bool(cur.rowcount > 0)

    def close(self) -> None:
        with self._lock:
            self._db.close()
