"""What replicas must count together: rate limits, failed sign-ins, and identity-provider sign-ins
under way (a callback may reach another replica than the one that started it).

With database.url set, these live in the shared PostgreSQL database; otherwise each process keeps
them in memory (appliance.access.limits, appliance.api.oidc). Wall-clock times: replicas on several
machines share no monotonic clock.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from sqlalchemy import text

from appliance.stores.database import Postgres, open_database

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

_SWEEP_EVERY = 500  # events older than an hour are swept this often (in calls), by whichever replica


class SharedState:
    def __init__(self, where: Postgres) -> None:
        self._db = open_database(where, "shared_state")
        self._lock = threading.Lock()
        self._calls = 0

    def _sweep(self, tx: Connection, now: float) -> None:
        self._calls += 1
        if self._calls % _SWEEP_EVERY == 0:
            tx.execute(text("DELETE FROM events WHERE at < :before"), {"before": now - 3600})
            tx.execute(text("DELETE FROM pending_sign_ins WHERE at < :before"), {"before": now - 3600})

    def hit(self, kind: str, key: str, limit: int, window_s: float) -> float | None:
        """Count one event unless `limit` were counted in the last window_s: then the seconds to wait."""
        now = time.time()
        with self._lock, self._db.begin() as tx:
            # One key's count and insert at a time across replicas (the lock ends with the transaction).
            tx.execute(text("SELECT pg_advisory_xact_lock(hashtext(:name))"), {"name": f"{kind} {key}"})
            self._sweep(tx, now)
            seen, oldest = tx.execute(text("SELECT count(*), min(at) FROM events WHERE kind = :kind AND key = :key "
                                           "AND at > :since"),
                                      {"kind": kind, "key": key, "since": now - window_s}).one()
            if seen >= limit:
                return max(0.0, window_s - (now - float(oldest)))
            tx.execute(text("INSERT INTO events VALUES (:kind, :key, :now)"), {"kind": kind, "key": key, "now": now})
        return None

    def count(self, kind: str, key: str, window_s: float) -> int:
        with self._lock, self._db.begin() as tx:
            return int(tx.execute(text("SELECT count(*) FROM events WHERE kind = :kind AND key = :key AND at > :since"),
                                  {"kind": kind, "key": key, "since": time.time() - window_s}).scalar_one())

    def add(self, kind: str, key: str) -> None:
        with self._lock, self._db.begin() as tx:
            tx.execute(text("INSERT INTO events VALUES (:kind, :key, :now)"),
                       {"kind": kind, "key": key, "now": time.time()})

    def clear(self, kind: str, key: str) -> None:
        with self._lock, self._db.begin() as tx:
            tx.execute(text("DELETE FROM events WHERE kind = :kind AND key = :key"), {"kind": kind, "key": key})

    def put_sign_in(self, state: str, nonce: str, verifier: str, next_path: str) -> None:
        with self._lock, self._db.begin() as tx:
            tx.execute(text("INSERT INTO pending_sign_ins VALUES (:state, :now, :nonce, :verifier, :next_path)"),
                       {"state": state, "now": time.time(), "nonce": nonce, "verifier": verifier,
                        "next_path": next_path})

    def pop_sign_in(self, state: str, max_age_s: float) -> tuple[str, str, str] | None:
        """(nonce, verifier, next path) of a sign-in started within max_age_s; each is taken once."""
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text("DELETE FROM pending_sign_ins WHERE state = :state RETURNING at, nonce, verifier, "
                                  "next_path"), {"state": state}).first()
        if row is None or float(row[0]) < time.time() - max_age_s:
            return None
        return str(row[1]), str(row[2]), str(row[3])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SharedRateLimiter:
    """RateLimiter's interface, counted across replicas."""

    def __init__(self, shared: SharedState, kind: str, per_minute: int) -> None:
        self._shared, self._kind, self.per_minute = shared, kind, per_minute

    def hit(self, key: str) -> float | None:
        return self._shared.hit(self._kind, key, self.per_minute, 60.0)


class SharedSignInThrottle:
    """SignInThrottle's interface, counted across replicas."""

    KIND = "failed_sign_in"

    def __init__(self, shared: SharedState, attempts: int) -> None:
        self._shared, self.attempts = shared, attempts

    def blocked(self, *keys: str) -> bool:
        return any(self._shared.count(self.KIND, k, 900) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        for k in keys:
            self._shared.add(self.KIND, k)

    def succeeded(self, *keys: str) -> None:
        for k in keys:
            self._shared.clear(self.KIND, k)
