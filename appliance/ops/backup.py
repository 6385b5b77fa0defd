"""`appliance backup DEST` and `appliance restore SRC`: the store's points with the manifest and the
appliance's own databases, in one folder, restorable into a fresh data directory and an empty
collection, embedded or on a Qdrant server alike.

Points are written as they are stored (id, dense vector, text, payload), so a restore needs no
parsing or embedding; the BM25 side is recomputed from the text by the target store. The SQLite
databases are copied with SQLite's online backup, so a consistent copy is taken even while another
process reads them; with the shared PostgreSQL database (database.url), its tables are copied into
SQLite files of the same shape, so either kind of site restores either kind of backup. Every
file's SHA-256 is in backup.json and checked before anything is restored. A Qdrant cluster can
instead be snapshotted node by node (docs/deployment.md).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from appliance.stores.database import Database, Postgres, Where, columns, open_database

if TYPE_CHECKING:
    from appliance.backends.store import StorePoint
    from appliance.services import Services

FORMAT = 1
POINTS = "points.jsonl"


class BackupError(Exception):
    """A backup or restore that cannot go on; the message says why and what to do."""


@dataclass
class BackupReport:
    folder: Path
    points: int
    files: list[str]
    seconds: float


@dataclass
class _Database:
    sqlite: Path  # the file of a one-server site, and the name of its copy in a backup
    where: Where  # that file, or the shared database
    store: str  # its tables' Alembic branch
    tables: list[str]  # in the order rows can be inserted (a table before those that reference it)


def _databases(services: Services) -> dict[str, _Database]:
    s = services.settings

    def db(path: Path, store: str, tables: list[str]) -> _Database:
        return _Database(path, s.database_for(path), store, tables)

    # Not the ingest runs' workers and leases: they describe processes, which a restore does not bring back.
    return {"manifest.sqlite": db(s.manifest_path, "manifest", ["files", "hidden"]),
            "users.sqlite": db(s.users_path, "users", ["users", "sessions", "retired"]),
            "conversations.sqlite": db(s.conversations_path, "conversations", ["conversations", "turns"]),
            "api_keys.sqlite": db(s.api_keys_path, "api_keys", ["api_keys"])}


def _copy_rows(src: Database, dst: Database, tables: list[str]) -> None:
    """Every row of the tables, in one transaction on each side, by column name (both sides are at the
    newest schema: opening a database upgrades it)."""
    from sqlalchemy import text

    with src.begin() as read, dst.begin() as write:
        if src.postgres:  # one snapshot of every table, as SQLite's backup takes
            read.execute(text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"))
        for table in tables:
            names = sorted(columns(read, table) & columns(write, table))
            quoted = ", ".join(f'"{n}"' for n in names)
            rows = [dict(zip(names, r, strict=True)) for r in read.execute(text(f"SELECT {quoted} FROM {table}"))]
            if rows:
                binds = ", ".join(f":{n}" for n in names)
                write.execute(text(f"INSERT INTO {table} ({quoted}) VALUES ({binds})"), rows)


def _transfer(db: _Database, source: Where, target: Where) -> None:
    """The database's tables from one place to the other (the shared database and a SQLite file)."""
    src, dst = open_database(source, db.store), open_database(target, db.store)
    try:
        _copy_rows(src, dst, db.tables)
    finally:
        src.close()
        dst.close()


def _export(db: _Database, target: Path) -> None:
    if isinstance(db.where, Postgres):
        _transfer(db, db.where, target)
    elif db.sqlite.exists():
        _copy_database(db.sqlite, target)


def _import(source: Path, db: _Database) -> None:
    if isinstance(db.where, Postgres):
        _transfer(db, source, db.where)
        return
    path = db.sqlite
    for stale in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        stale.unlink(missing_ok=True)
    _copy_database(source, path)


def _holds_rows(db: _Database) -> bool:
    if not isinstance(db.where, Postgres) and not db.sqlite.exists():
        return False
    from sqlalchemy import text

    conn = open_database(db.where, db.store)
    try:
        with conn.begin() as tx:
            return any(tx.execute(text(f"SELECT 1 FROM {t} LIMIT 1")).first() for t in db.tables)
    finally:
        conn.close()


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _copy_database(source: Path, target: Path) -> None:
    src = sqlite3.connect(f"file:{source}?mode=ro", uri=True, timeout=30)
    dst = sqlite3.connect(str(target))
    try:
        src.backup(dst)
    finally:
        dst.close()
        src.close()
    target.chmod(0o600)


def backup(services: Services, dest: Path, progress: Callable[[int], object] | None = None) -> BackupReport:
    """Every file is created readable by its owner only: the backup holds all text and the password hashes."""
    old = os.umask(0o077)
    try:
        return _backup(services, dest, progress)
    finally:
        os.umask(old)


def _backup(services: Services, dest: Path, progress: Callable[[int], object] | None) -> BackupReport:
    started = time.monotonic()
    if dest.exists() and any(dest.iterdir()):
        raise BackupError(f"{dest} is not empty: give a new folder")
    dest.mkdir(parents=True, exist_ok=True, mode=0o700)
    store = services.store
    store.flush()
    written = 0
    with (dest / POINTS).open("w", encoding="utf-8") as out:
        for batch in store.scroll(512):
            for p in batch:
                out.write(json.dumps({"id": p.id, "vector": p.vector, "text": p.text, "payload": p.payload},
                                     ensure_ascii=False) + "\n")
            written += len(batch)
            if progress is not None:
                progress(len(batch))
    (dest / POINTS).chmod(0o600)
    for name, db in _databases(services).items():
        _export(db, dest / name)
    if services.settings.feedback_path.exists():
        shutil.copy2(services.settings.feedback_path, dest / "feedback.jsonl")
    if services.settings.audit_dir.is_dir():
        shutil.copytree(services.settings.audit_dir, dest / "audit", ignore=shutil.ignore_patterns(".lock"))
    if services.settings.upload_dir.is_dir():  # the uploaded originals: nowhere else to find them again
        shutil.copytree(services.settings.upload_dir, dest / "uploads", ignore=shutil.ignore_patterns("*.part"))
    files = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    hidden = services.manifest.hidden_ids()
    meta: dict[str, Any] = {
        "format": FORMAT, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "points": written,
        "hidden_points": len(hidden), "documents": len(services.manifest.all()),
        "embedding_model": getattr(services.embedding, "model_name", "?"), "dimension": services.embedding.dimension,
        "files": {f: sha256_file(dest / f) for f in files}}
    (dest / "backup.json").write_text(json.dumps(meta, indent=2) + "\n")
    return BackupReport(dest, written, files, time.monotonic() - started)


def verify(src: Path) -> dict[str, Any]:
    """The backup's description, after checking every file against its SHA-256."""
    try:
        meta: dict[str, Any] = json.loads((src / "backup.json").read_text())
    except (OSError, ValueError) as exc:
        raise BackupError(f"{src} is not a backup made by `appliance backup` (backup.json: {exc})") from None
    if meta.get("format") != FORMAT:
        raise BackupError(f"backup format {meta.get('format')!r} is not {FORMAT}: restore it with the version that "
                          "made it")
    for name, digest in meta["files"].items():
        path = src / name
        if not path.is_file() or sha256_file(path) != digest:
            raise BackupError(f"{name} is missing or changed since the backup was made: nothing was restored")
    return meta


class _BackupPoints:
    """points.jsonl read as the source store of a migration: scroll() and count()."""

    def __init__(self, path: Path, count: int) -> None:
        self._path, self._count = path, count

    def count(self) -> int:
        return self._count

    def scroll(self, batch: int = 256) -> Iterator[list[StorePoint]]:
        from appliance.backends.store import StorePoint

        points: list[StorePoint] = []
        with self._path.open(encoding="utf-8") as f:
            for line in f:
                row = json.loads(line)
                points.append(StorePoint(row["id"], row["vector"], row["text"], row["payload"]))
                if len(points) == batch:
                    yield points
                    points = []
        if points:
            yield points


def restore(services: Services, src: Path, progress: Callable[[int], object] | None = None) -> BackupReport:
    """Into a data directory with no documents and an empty collection (a fresh site, or after a wipe)."""
    started = time.monotonic()
    meta = verify(src)
    model = getattr(services.embedding, "model_name", "?")
    if meta["embedding_model"] != model or meta["dimension"] != services.embedding.dimension:
        raise BackupError(f"the backup's vectors are from {meta['embedding_model']} ({meta['dimension']} dims); "
                          f"this appliance embeds with {model} ({services.embedding.dimension}): restore with the "
                          "same embedding settings")
    s = services.settings
    if (s.shared_database or s.manifest_path.exists()) and services.manifest.all():
        raise BackupError(f"{s.data_dir} already holds documents: restore into a fresh data directory")
    for name, db in _databases(services).items():
        if name != "manifest.sqlite" and _holds_rows(db):
            where = "the shared database" if s.shared_database else db.sqlite
            raise BackupError(f"{where} already holds {name.removesuffix('.sqlite')}: restore into a fresh data "
                              "directory and an empty database (nothing was changed)")
    if s.feedback_path.exists() or any(s.audit_dir.glob("audit*.jsonl")):
        raise BackupError(f"{s.data_dir} already holds feedback or an audit trail: restore into a fresh data "
                          "directory (nothing was changed)")
    store = services.store
    if store.count():
        raise BackupError("the collection is not empty: restore into an empty one (a new collection name in "
                          "`store.collection`; nothing was changed)")
    if "manifest" in services.__dict__:  # opened by the check above: closed before its file is replaced
        services.manifest.close()
        del services.__dict__["manifest"]
    from appliance.ops.migrate import MigrationError, migrate

    try:  # the backup's points into the empty collection, as `store migrate` copies a store
        restored = migrate(_BackupPoints(src / POINTS, int(meta["points"])), store, progress, batch=512)
    except MigrationError:
        found = store.count()
        store.delete([p.id for batch in store.scroll(512) for p in batch])  # empty again: a re-run just works
        store.flush()
        raise BackupError(f"restored {found} points of {meta['points']}: another process wrote to the collection "
                          "meanwhile; it is empty again: stop the writers and restore again") from None
    s.data_dir.mkdir(parents=True, exist_ok=True)
    for name, db in _databases(services).items():
        if (src / name).exists():
            _import(src / name, db)
    if (src / "feedback.jsonl").exists():
        s.feedback_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src / "feedback.jsonl", s.feedback_path)
    if (src / "audit").is_dir():
        shutil.copytree(src / "audit", s.audit_dir, dirs_exist_ok=True)
    if (src / "uploads").is_dir():
        shutil.copytree(src / "uploads", s.upload_dir, dirs_exist_ok=True)
    files = sorted(meta["files"])
    return BackupReport(src, restored, files, time.monotonic() - started)
