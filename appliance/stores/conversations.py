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
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

from appliance.stores.database import IntegrityError, Where, open_database

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection


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
    scope: dict[str, Any] = field(default_factory=dict)  # Scope.to_dict(): what it asks about ({}: everything)


class Conversations:
    def __init__(self, path: Where) -> None:
        self._db = open_database(path, "conversations")
        self._lock = threading.Lock()

    def create(self, owner: str, title: str, scope: dict[str, Any] | None = None) -> str:
        cid = secrets.token_hex(16)
        now = time.time()
        with self._lock, self._db.begin() as tx:
            tx.execute(text("INSERT INTO conversations (id, owner, title, created_at, updated_at, scope) "
                            "VALUES (:id, :owner, :title, :now, :now, :scope)"),
                       {"id": cid, "owner": owner, "title": _title(title), "now": now,
                        "scope": json.dumps(scope or {})})
        return cid

    def set_scope(self, owner: str, cid: str, scope: dict[str, Any]) -> bool:
        """What the conversation asks about from now on (the page's picker; Scope.to_dict)."""
        with self._lock, self._db.begin() as tx:
            cur = tx.execute(text("UPDATE conversations SET scope = :scope WHERE id = :cid AND owner = :owner"),
                             {"scope": json.dumps(scope), "cid": cid, "owner": owner})
        return cur.rowcount > 0

    def add_turn(self, owner: str, cid: str, turn: Turn) -> bool:
        """False when the conversation is not the owner's (or is gone)."""
        for _ in range(3):  # two replicas adding a turn at once pick the same number: the second tries again
            try:
                return self._add_turn(owner, cid, turn)
            except IntegrityError:
                time.sleep(0.05)
        return self._add_turn(owner, cid, turn)

    def _add_turn(self, owner: str, cid: str, turn: Turn) -> bool:
        with self._lock, self._db.begin() as tx:
            if not self._owns(tx, owner, cid):
                return False
            n = tx.execute(text("SELECT coalesce(max(n), -1) + 1 FROM turns WHERE conversation = :cid"),
                           {"cid": cid}).scalar_one()
            now = time.time()
            tx.execute(text("INSERT INTO turns VALUES (:cid, :n, :question, :answer, :sources, :now)"),
                       {"cid": cid, "n": n, "question": turn.question, "answer": turn.answer,
                        "sources": json.dumps(turn.sources), "now": now})
            tx.execute(text("UPDATE conversations SET updated_at = :now WHERE id = :cid"), {"now": now, "cid": cid})
        return True

    @staticmethod
    def _owns(tx: Connection, owner: str, cid: str) -> bool:
        return tx.execute(text("SELECT 1 FROM conversations WHERE id = :cid AND owner = :owner"),
                          {"cid": cid, "owner": owner}).first() is not None

    def drop_turn(self, owner: str, cid: str, n: int) -> bool:
        """Forget turn n (its answer is being regenerated); False when the owner has no such turn."""
        with self._lock, self._db.begin() as tx:
            if not self._owns(tx, owner, cid):
                return False
            cur = tx.execute(text("DELETE FROM turns WHERE conversation = :cid AND n = :n"), {"cid": cid, "n": n})
        return cur.rowcount > 0

    def list(self, owner: str) -> list[Conversation]:
        with self._lock, self._db.begin() as tx:
            rows = tx.execute(text("SELECT id, title, created_at, updated_at FROM conversations WHERE owner = :owner "
                                   "ORDER BY updated_at DESC"), {"owner": owner}).all()
        return [Conversation(str(i), str(t), float(c), float(u)) for i, t, c, u in rows]

    def get(self, owner: str, cid: str) -> Conversation | None:
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text("SELECT id, title, created_at, updated_at, scope FROM conversations "
                                  "WHERE id = :cid AND owner = :owner"), {"cid": cid, "owner": owner}).first()
            if row is None:
                return None
            turns = tx.execute(text("SELECT question, answer, sources, at FROM turns WHERE conversation = :cid "
                                    "ORDER BY n"), {"cid": cid}).all()
        return Conversation(str(row[0]), str(row[1]), float(row[2]), float(row[3]),
                            [Turn(str(q), str(a), json.loads(str(s)), float(at)) for q, a, s, at in turns],
                            json.loads(str(row[4] or "{}")))

    def rename(self, owner: str, cid: str, title: str) -> bool:
        with self._lock, self._db.begin() as tx:
            cur = tx.execute(text("UPDATE conversations SET title = :title WHERE id = :cid AND owner = :owner"),
                             {"title": _title(title), "cid": cid, "owner": owner})
        return cur.rowcount > 0

    def delete(self, owner: str, cid: str) -> bool:
        with self._lock, self._db.begin() as tx:
            cur = tx.execute(text("DELETE FROM conversations WHERE id = :cid AND owner = :owner"),
                             {"cid": cid, "owner": owner})
        return cur.rowcount > 0

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _title(title: str) -> str:
    return " ".join(title.split())[:120] or "Conversation"
