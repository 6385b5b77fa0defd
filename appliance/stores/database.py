"""Where the appliance keeps its small tables: SQLite files in the data directory (one server), or one
PostgreSQL database shared by every replica and ingest worker (`database.url`).

Stores (users, API keys, conversations, the ingestion manifest) talk to either through the same
sqlite3-shaped connection: `?` parameters, `execute`/`executemany`/`commit`, and `with db:` for a
transaction. Their SQL is the part both dialects share (`INSERT ... ON CONFLICT`, BIGINT, DOUBLE
PRECISION, a quoted "user"). One connection per store, used under the store's own lock.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

from appliance.backends.common import BackendUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection as SAConnection
    from sqlalchemy.engine import Engine

# Several processes may create the tables at once (replicas starting together): one at a time.
_SCHEMA_LOCK = 0x5A6_1A4C


class IntegrityError(Exception):
    """A row breaks a key or constraint (PostgreSQL); SQLite raises its own sqlite3.IntegrityError."""


class TransactionAborted(RuntimeError):
    """A statement after a failed one in the same PostgreSQL transaction, which is rolled back whole."""


class DatabaseUnavailable(BackendUnavailable):
    """PostgreSQL cannot be reached, or refuses this user; the message says which database and why."""


INTEGRITY_ERRORS = (sqlite3.IntegrityError, IntegrityError)


class Cursor(Protocol):
    @property
    def rowcount(self) -> int: ...

    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...


class Connection(Protocol):
    def execute(self, sql: str, params: Sequence[Any] = ..., /) -> Cursor: ...

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> Cursor: ...

    def commit(self) -> None: ...

    def close(self) -> None: ...

    def __enter__(self) -> Any: ...

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> Any: ...


@dataclass(frozen=True)
class Postgres:
    """A PostgreSQL database: its URL (postgresql://USER@HOST:PORT/NAME) and the user's password."""

    url: str
    password: str | None = None

    def engine_url(self) -> Any:
        from sqlalchemy.engine import make_url

        url = make_url(engine_url(self.url))
        return url.set(password=self.password) if self.password is not None else url


Where = Path | Postgres  # a SQLite file, or the shared database


def open_database(where: Where, schema: str) -> Connection:
    """The SQLite file or the PostgreSQL database, with the schema created."""
    if isinstance(where, Postgres):
        return _Postgres.open(where, schema)
    where.parent.mkdir(parents=True, exist_ok=True)
    # WAL: the CLI writes while the server reads. One connection shared by threads: callers serialise.
    db = sqlite3.connect(str(where), timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    db.commit()
    where.chmod(0o600)
    return db


def is_postgres(db: Connection) -> bool:
    return isinstance(db, _Postgres)


def columns(db: Connection, table: str) -> set[str]:
    """The table's column names (for adding the ones an older version did not have)."""
    if isinstance(db, _Postgres):
        rows = db.execute("SELECT column_name FROM information_schema.columns WHERE table_name = ? "
                          "AND table_schema = current_schema()", (table,)).fetchall()
        return {str(r[0]) for r in rows}
    return {str(r[1]) for r in db.execute(f"PRAGMA table_info({table})").fetchall()}


def has_rows(db: Connection, tables: Iterable[str]) -> bool:
    return any(db.execute(f"SELECT 1 FROM {t} LIMIT 1").fetchone() for t in tables)


def engine_url(url: str) -> str:
    """SQLAlchemy's name for the psycopg 3 driver (a plain postgresql:// would ask for psycopg2)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError("database.url must start with postgresql:// (for example "
                     "postgresql://appliance:PASSWORD@db.internal:5432/appliance)")


class _Result:
    def __init__(self, rows: list[Any], rowcount: int) -> None:
        self._rows, self.rowcount = rows, rowcount

    def fetchone(self) -> Any:
        return self._rows[0] if self._rows else None

    def fetchall(self) -> list[Any]:
        return self._rows


class _Postgres:
    """PostgreSQL behind the sqlite3 connection's shape. A read outside a transaction ends its own;
    writes wait for commit(), or the end of `with db:`."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        url = engine.url
        host = url.host or url.query.get("host") or "the local socket"
        self._name = f"PostgreSQL database {url.database!r} at {host}{':' + str(url.port) if url.port else ''}"
        self._conn: SAConnection | None = None  # checked out for the transaction under way
        self._writing = False  # a write is pending: the transaction stays open until commit()
        self._depth = 0  # inside `with db:`
        self._failed = False  # a statement of this `with db:` failed: the transaction is rolled back

    @classmethod
    def open(cls, where: Postgres, schema: str) -> _Postgres:
        from sqlalchemy import create_engine

        # pre_ping: a replica outlives a database restart or fail-over without an error on its next request.
        # Timeouts: a database cut off by the network fails a request in seconds instead of hanging it.
        db = cls(create_engine(where.engine_url(), pool_size=1, max_overflow=2, pool_pre_ping=True,
                               connect_args={"connect_timeout": 10, "options": "-c statement_timeout=60000"}))
        with db:
            db.execute("SELECT pg_advisory_xact_lock(?)", (_SCHEMA_LOCK,))
            for statement in _statements(schema):
                db.execute(statement)
        return db

    def _connection(self) -> SAConnection:
        if self._conn is None:
            self._conn = self._engine.connect()
        return self._conn

    def execute(self, sql: str, params: Sequence[Any] = (), /) -> _Result:
        return self._run(sql, tuple(params))

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]], /) -> _Result:
        batch = [tuple(r) for r in rows]
        if not batch:
            return _Result([], 0)
        return self._run(sql, batch)

    def _run(self, sql: str, params: tuple[Any, ...] | list[tuple[Any, ...]]) -> _Result:
        from sqlalchemy import exc

        if self._failed:  # PostgreSQL rolled the whole transaction back: nothing after may commit alone
            raise TransactionAborted("an earlier statement of this transaction failed: it was rolled back")
        try:
            conn = self._connection()
            # psycopg's placeholders are %s, and a literal % is written %%.
            result = conn.exec_driver_sql(sql.replace("%", "%%").replace("?", "%s"), params)  # type: ignore[arg-type]
            rows = list(result.fetchall()) if result.returns_rows else []
            out = _Result(rows, result.rowcount)
        except exc.IntegrityError as error:
            self._end(commit=False)
            self._failed = self._depth > 0
            raise IntegrityError(str(error.orig)) from None
        except exc.OperationalError as error:  # not reached, refused, or gone away
            self._end(commit=False)
            self._failed = self._depth > 0
            first = str(error.orig).strip().splitlines()[0] if str(error.orig).strip() else type(error.orig).__name__
            raise DatabaseUnavailable(f"{self._name}: {first} (check database.url and database.password)") from None
        except exc.DBAPIError:
            self._end(commit=False)
            self._failed = self._depth > 0
            raise
        if not _WRITES.match(sql) and not self._writing and not self._depth:
            self._end(commit=True)  # a read on its own: no connection idles in a transaction
        else:
            self._writing = True
        return out

    def _end(self, *, commit: bool) -> None:
        """End the transaction and hand the connection back to the pool, which pings it before the
        next use: a database restarted meanwhile costs no request an error."""
        conn, self._conn, self._writing = self._conn, None, False
        if conn is None or conn.closed:
            return
        try:
            if not conn.invalidated:
                conn.commit() if commit else conn.rollback()
        finally:
            conn.close()

    def commit(self) -> None:
        self._end(commit=True)

    def rollback(self) -> None:
        self._end(commit=False)

    def __enter__(self) -> _Postgres:
        self._depth += 1
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None, /) -> None:
        self._depth -= 1
        if not self._depth:
            failed, self._failed = self._failed, False
            self._end(commit=kind is None and not failed)

    def close(self) -> None:
        self._end(commit=False)
        self._engine.dispose()


_WRITES = re.compile(r"\s*(INSERT|UPDATE|DELETE|CREATE|ALTER|DROP|TRUNCATE)\b", re.IGNORECASE)


def _statements(script: str) -> list[str]:
    lines = [line.split("--", 1)[0] for line in script.splitlines()]
    return [s.strip() for s in "\n".join(lines).split(";") if s.strip()]
