"""Where the appliance keeps its small tables: SQLite files in the data directory (one server), or one
PostgreSQL database shared by every replica and ingest worker (`database.url`).

Both sit behind a SQLAlchemy engine. Stores (users, API keys, conversations, the ingestion manifest,
the replicas' shared counters) write SQL both dialects share (`INSERT ... ON CONFLICT`, BIGINT, DOUBLE
PRECISION, a quoted "user") with named parameters, one `with db.begin() as tx:` per transaction.
Each store's tables belong to its Alembic branch (appliance/stores/migrations), upgraded when the
store is opened and by `appliance db upgrade`.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc

from appliance.backends.common import BackendUnavailable

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection, Engine

# Several processes may upgrade the tables at once (replicas starting together): one at a time.
_SCHEMA_LOCK = 0x5A6_1A4C
MIGRATIONS = Path(__file__).with_name("migrations")
IntegrityError = exc.IntegrityError  # a row breaks a key or constraint, on either database


class DatabaseUnavailable(BackendUnavailable):
    """PostgreSQL cannot be reached, or refuses this user; the message says which database and why."""


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


def engine_url(url: str) -> str:
    """SQLAlchemy's name for the psycopg 3 driver (a plain postgresql:// would ask for psycopg2)."""
    for prefix in ("postgresql+psycopg://", "postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    raise ValueError("database.url must start with postgresql:// (for example "
                     "postgresql://appliance:PASSWORD@db.internal:5432/appliance)")


class Database:
    """One store's database: a SQLite file or the shared PostgreSQL database."""

    def __init__(self, engine: Engine, where: Where) -> None:
        self.engine, self.where = engine, where
        url = engine.url
        if isinstance(where, Postgres):
            host = url.host or url.query.get("host") or "the local socket"
            self.name = f"PostgreSQL database {url.database!r} at {host}{':' + str(url.port) if url.port else ''}"
        else:
            self.name = str(where)

    @property
    def postgres(self) -> bool:
        return isinstance(self.where, Postgres)

    @contextlib.contextmanager
    def begin(self) -> Iterator[Connection]:
        """One transaction: committed when the block ends, rolled back whole when it raises (a failed
        statement included, so nothing after it commits alone)."""
        try:
            with self.engine.begin() as tx:
                yield tx
        except exc.OperationalError as error:
            if not self.postgres:
                raise
            # Not reached, refused, or gone away: say which database, not a driver traceback.
            text = str(error.orig).strip()
            first = text.splitlines()[0] if text else type(error.orig).__name__
            raise DatabaseUnavailable(f"{self.name}: {first} (check database.url and database.password)") from None

    def close(self) -> None:
        self.engine.dispose()


def connect(where: Where) -> Database:
    """The SQLite file or the PostgreSQL database, as it is (open_database upgrades it too)."""
    from sqlalchemy import create_engine, event

    if isinstance(where, Postgres):
        # pre_ping: a replica outlives a database restart or fail-over without an error on its next request.
        # Timeouts: a database cut off by the network fails a request in seconds instead of hanging it.
        engine = create_engine(where.engine_url(), pool_size=1, max_overflow=2, pool_pre_ping=True,
                               connect_args={"connect_timeout": 10, "options": "-c statement_timeout=60000"})
        return Database(engine, where)
    where.parent.mkdir(parents=True, exist_ok=True)
    # The CLI writes while the server reads: WAL, and a writer waits up to 30 s for another's commit.
    engine = create_engine(f"sqlite:///{where}", connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(conn: Any, _record: Any) -> None:
        cur = conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    return Database(engine, where)


def open_database(where: Where, store: str) -> Database:
    """The SQLite file or the PostgreSQL database, with `store`'s tables upgraded to the newest schema."""
    db = connect(where)
    upgrade(db, store)
    if isinstance(where, Path):
        where.chmod(0o600)
    return db


def _alembic(tx: Connection, store: str) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.attributes.update(connection=tx, version_table=version_table(store))
    return cfg


def version_table(store: str) -> str:
    """Each store keeps its own revision: in the shared database, every store's tables sit side by side."""
    return f"alembic_version_{store}"


@contextlib.contextmanager
def _one_process(db: Database) -> Iterator[None]:
    """For a SQLite file: one upgrader at a time, until its transaction has committed (PostgreSQL takes
    an advisory lock inside the transaction instead)."""
    if db.postgres:
        yield
        return
    fd = os.open(Path(str(db.where) + ".migrate.lock"), os.O_CREAT | os.O_RDWR, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def upgrade(db: Database, store: str) -> tuple[str | None, str | None]:
    """Apply the store's migrations not yet applied; (revision before, revision after)."""
    from alembic import command

    with _one_process(db), db.begin() as tx:
        if db.postgres:
            tx.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")  # held until the commit
        before = revision(tx, store)
        if before != head(store):
            command.upgrade(_alembic(tx, store), f"{store}@head")
        return before, revision(tx, store)


def revision(tx: Connection, store: str) -> str | None:
    """The store's revision in this database (None: made before Alembic, or empty)."""
    from sqlalchemy import inspect, text

    if not inspect(tx).has_table(version_table(store)):
        return None
    row = tx.execute(text(f"SELECT version_num FROM {version_table(store)}")).first()
    return None if row is None else str(row[0])


@functools.cache
def _scripts() -> Any:
    from alembic.script import ScriptDirectory

    return ScriptDirectory(str(MIGRATIONS))


def head(store: str) -> str:
    """The newest revision of the store's branch."""
    return str(_scripts().get_revision(f"{store}@head").revision)


def columns(tx: Connection, table: str) -> set[str]:
    from sqlalchemy import inspect

    return {str(c["name"]) for c in inspect(tx).get_columns(table)}
