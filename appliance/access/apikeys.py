"""API keys for programmatic clients of the HTTP API, kept as SHA-256 hashes.

A key is 32 random bytes, shown once when created. A fast hash is enough here: a key is never
guessable from its hash (unlike a password, it has 256 bits of entropy), and lookups stay O(1).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
import time
from dataclasses import dataclass

from sqlalchemy import text

from appliance.stores.database import IntegrityError, Where, open_database

PREFIX = "rag-"


class ApiKeyError(ValueError):
    """A key name is taken, unknown or malformed; the message says which."""


@dataclass
class ApiKeyInfo:
    name: str
    hint: str
    created_at: float
    last_used_at: float | None
    user: str | None = None
    admin: bool = False


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class ApiKeys:
    def __init__(self, path: Where) -> None:
        self._db = open_database(path, "api_keys")
        self._lock = threading.Lock()

    def create(self, name: str, user: str | None = None, admin: bool = False) -> str:
        """A new key under `name`; the returned token is the only copy of it. A key for a user reads what
        that user may read; a service key (no user) reads what everyone may, and manages documents if admin."""
        name = name.strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}", name):
            raise ApiKeyError("a key name is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit")
        token = PREFIX + secrets.token_urlsafe(32)
        try:
            with self._lock, self._db.begin() as tx:
                tx.execute(text("INSERT INTO api_keys VALUES (:name, :sha256, :hint, :now, NULL, :user, :admin)"),
                           {"name": name, "sha256": _digest(token), "hint": token[:10], "now": time.time(),
                            "user": user, "admin": int(admin)})
        except IntegrityError:
            raise ApiKeyError(f"a key named {name!r} exists: revoke it first or choose another name") from None
        return token

    def verify(self, token: str) -> ApiKeyInfo | None:
        """The key, or None when the token is not a live key."""
        if not token.startswith(PREFIX):
            return None
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text(f"SELECT {_COLUMNS} FROM api_keys WHERE sha256 = :sha256"),
                             {"sha256": _digest(token)}).first()
            if row is None:
                return None
            now = time.time()
            if row[3] is None or now - row[3] > 30:  # not a write per request
                tx.execute(text("UPDATE api_keys SET last_used_at = :now WHERE name = :name"),
                           {"now": now, "name": row[0]})
        return _info(tuple(row))

    def list(self) -> list[ApiKeyInfo]:
        with self._lock, self._db.begin() as tx:
            rows = tx.execute(text(f"SELECT {_COLUMNS} FROM api_keys ORDER BY name")).all()
        return [_info(tuple(r)) for r in rows]

    def revoke(self, name: str) -> None:
        with self._lock, self._db.begin() as tx:
            cur = tx.execute(text("DELETE FROM api_keys WHERE name = :name"), {"name": name})
        if cur.rowcount == 0:
            raise ApiKeyError(f"no key named {name!r}")

    def close(self) -> None:
        with self._lock:
            self._db.close()


_COLUMNS = 'name, hint, created_at, last_used_at, "user", admin'


def _info(row: tuple[object, ...]) -> ApiKeyInfo:
    name, hint, created, used, user, admin = row
    return ApiKeyInfo(str(name), str(hint), float(created), None if used is None else float(used),  # type: ignore[arg-type]
                      None if user is None else str(user), bool(admin))
