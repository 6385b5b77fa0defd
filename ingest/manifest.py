"""The ingestion manifest: one row per source file, the truth of what the store holds.

A file's row names the chunks that are published (searchable). Chunks in the store that are not
published yet, or no longer, are listed in the `hidden` table and every search excludes them in
the store query itself: the new version of a file is written while hidden, then one transaction
publishes it and hides the old version, whose chunks are deleted a moment later (see
ingest.pipeline). So a question sees a file's old or new version, never both or neither, and a run
killed at any moment leaves only hidden chunks behind, which a later run deletes.

Several ingest runs may share one manifest and store (processes on one machine, or workers on
several with the manifest in PostgreSQL). Each run is a row of `workers`, kept alive by a
heartbeat; a run processes a file only while it holds the file's lease, and publishes only if it
still does. Hidden chunks are deleted by another run only once their writer is dead.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from appliance.stores.database import Where, columns, open_database

WORKER_TTL_S = 60.0  # a run whose heartbeat is this old is dead: its leases and hidden chunks are free

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    mtime_ns BIGINT NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL,          -- ok | failed | skipped
    error TEXT,
    parser TEXT,
    pages INTEGER,
    chunk_ids TEXT NOT NULL DEFAULT '[]',
    acl TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    ingested_at DOUBLE PRECISION NOT NULL,
    config TEXT                    -- what the file was processed with (IngestPipeline.config); NULL: unknown
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256);
-- Chunks in the store that no search may return: "new" ones being written, "stale" ones superseded.
CREATE TABLE IF NOT EXISTS hidden (
    point_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,            -- new | stale | deleting
    since DOUBLE PRECISION NOT NULL,
    owner TEXT                     -- the run that will publish or delete them; NULL: a run of an older version
);
-- Ingest runs in progress, and which file each is processing.
CREATE TABLE IF NOT EXISTS workers (
    owner TEXT PRIMARY KEY,        -- host:pid:random
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started DOUBLE PRECISION NOT NULL,   -- the process's start time: a reused pid is another process
    expires DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS leases (
    path TEXT PRIMARY KEY,
    owner TEXT NOT NULL
);
"""

_FILES = "path, size, mtime_ns, sha256, status, error, parser, pages, chunk_ids, acl, notes, ingested_at, config"
_LIVE = "EXISTS (SELECT 1 FROM workers w WHERE w.owner = {0}.owner AND w.expires >= ?)"


class LeaseLost(RuntimeError):
    """Another run took the file over (this one was thought dead): nothing of this run is published."""


@dataclass
class FileRecord:
    path: str
    size: int
    mtime_ns: int
    sha256: str | None
    status: str
    error: str | None = None
    parser: str | None = None
    pages: int | None = None
    chunk_ids: list[str] = field(default_factory=list)
    acl: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    ingested_at: float = 0.0
    config: str | None = None


@dataclass
class Worker:
    owner: str
    host: str
    pid: int
    started: float
    expires: float


class Manifest:
    def __init__(self, where: Where | str) -> None:
        # A str is a SQLite path too (tests and tools that name the file).
        self._db = open_database(Path(where) if isinstance(where, str) else where, SCHEMA)
        # The server reads and writes from several threads: one statement (and its commit) at a time.
        self._lock = threading.RLock()
        with self._lock, self._db:
            have = columns(self._db, "files")
            if "config" not in have:  # a manifest written before rows recorded their settings
                self._db.execute("ALTER TABLE files ADD COLUMN config TEXT")
            if "owner" not in columns(self._db, "hidden"):  # before several runs could share a manifest
                self._db.execute("ALTER TABLE hidden ADD COLUMN owner TEXT")

    def get(self, path: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute(f"SELECT {_FILES} FROM files WHERE path = ?", (path,)).fetchone()
            return _record(row) if row else None

    def put(self, rec: FileRecord) -> None:
        with self._lock, self._db:
            self._put(rec)

    def _put(self, rec: FileRecord) -> None:
        rec.ingested_at = rec.ingested_at or time.time()
        updates = ", ".join(f"{c} = excluded.{c}" for c in _FILES.split(", ")[1:])
        self._db.execute(
            f"INSERT INTO files ({_FILES}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?) "
            f"ON CONFLICT(path) DO UPDATE SET {updates}",
            (rec.path, rec.size, rec.mtime_ns, rec.sha256, rec.status, rec.error, rec.parser, rec.pages,
             json.dumps(rec.chunk_ids), json.dumps(rec.acl), json.dumps(rec.notes), rec.ingested_at, rec.config),
        )

    def set_acl(self, path: str, acl: list[str]) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE files SET acl = ? WHERE path = ?", (json.dumps(acl), path))

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        with self._lock, self._db:
            self._db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))

    def _hold(self, path: str, owner: str | None, now: float) -> None:
        """Inside a transaction: the run still holds the file's lease and is alive (LeaseLost otherwise).
        The lease row is written, so it stays locked until the commit: no run can take it meanwhile."""
        if owner is not None and not self._db.execute(
                f"UPDATE leases SET owner = owner WHERE path = ? AND owner = ? AND {_LIVE.format('leases')}",
                (path, owner, now)).rowcount:
            raise LeaseLost(f"{path}: another ingest run took this file over")

    def hide_new(self, path: str, ids: list[str], owner: str | None = None) -> list[str]:
        """Before a file's new chunks are written: none of them may be found until published. Returns
        the ids another live run is deleting at this moment (the caller waits and calls again); a row
        of a dead run, or one superseded (stale) and not yet being deleted, is taken over."""
        with self._lock, self._db:
            now = time.time()
            self._hold(path, owner, now)
            self._db.executemany(
                "INSERT INTO hidden VALUES (?, ?, 'new', ?, ?) ON CONFLICT(point_id) DO UPDATE "
                "SET path = excluded.path, kind = 'new', since = excluded.since, owner = excluded.owner "
                f"WHERE hidden.owner IS NULL OR hidden.kind = 'stale' OR NOT {_LIVE.format('hidden')}",
                [(i, path, now, owner, now) for i in ids])
            return self._not_mine(ids, owner)

    def hidden_by_others(self, ids: list[str], owner: str | None) -> list[str]:
        """Those of the ids that another run holds hidden."""
        with self._lock:
            return self._not_mine(ids, owner)

    def _not_mine(self, ids: list[str], owner: str | None) -> list[str]:
        found: list[str] = []
        other = "owner IS NOT NULL" if owner is None else "(owner IS NULL OR owner <> ?)"
        for start in range(0, len(ids), 500):
            part = ids[start:start + 500]
            marks = ",".join("?" * len(part))
            found += [str(r[0]) for r in self._db.execute(
                f"SELECT point_id FROM hidden WHERE point_id IN ({marks}) AND {other}",
                (*part, *(() if owner is None else (owner,)))).fetchall()]
        return found

    def publish(self, rec: FileRecord, stale: list[str], owner: str | None = None) -> None:
        """In one transaction: the row names its new chunks, which become searchable, and the
        superseded ones are hidden until the writer deletes them. With an owner: only while that run
        is alive and still holds the file's lease (LeaseLost otherwise, and nothing changes)."""
        with self._lock, self._db:
            now = time.time()
            self._hold(rec.path, owner, now)
            mine = "owner IS NULL" if owner is None else "owner = ?"
            self._db.executemany(f"DELETE FROM hidden WHERE point_id = ? AND kind = 'new' AND {mine}",
                                 [(i,) if owner is None else (i, owner) for i in rec.chunk_ids])
            self._db.executemany("INSERT INTO hidden VALUES (?, ?, 'stale', ?, ?) ON CONFLICT(point_id) DO UPDATE "
                                 "SET kind = 'stale', since = excluded.since, owner = excluded.owner",
                                 [(i, rec.path, now, owner) for i in stale])
            self._put(rec)

    def hidden_ids(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._db.execute("SELECT point_id FROM hidden").fetchall()]

    def orphaned_ids(self) -> list[str]:
        """Hidden chunks no live run will publish or delete: left by a run that was killed."""
        with self._lock:
            rows = self._db.execute(f"SELECT point_id FROM hidden WHERE owner IS NULL OR NOT {_LIVE.format('hidden')}",
                                    (time.time(),)).fetchall()
            return [str(r[0]) for r in rows]

    def start_deleting(self, owner: str | None, ids: list[str] | None = None) -> list[str]:
        """Mark hidden chunks as being deleted by this run, and return them: these superseded ids of its
        own (those another run has not taken over since), or, without ids, every orphaned one. No other
        run takes a row over while this run deletes it (hide_new waits)."""
        mine = "owner IS NULL" if owner is None else "owner = ?"
        with self._lock, self._db:
            if ids is None:
                self._db.execute(f"UPDATE hidden SET owner = ?, kind = 'deleting' WHERE owner IS NULL OR NOT "
                                 f"{_LIVE.format('hidden')}", (owner, time.time()))
            else:
                self._db.executemany(f"UPDATE hidden SET kind = 'deleting' WHERE point_id = ? AND kind = 'stale' "
                                     f"AND {mine}", [(i,) if owner is None else (i, owner) for i in ids])
            return [str(r[0]) for r in self._db.execute(f"SELECT point_id FROM hidden WHERE kind = 'deleting' AND "
                                                        f"{mine}", () if owner is None else (owner,)).fetchall()]

    def unhide(self, ids: list[str], owner: str | None = None) -> None:
        """After the chunks are deleted from the store (with an owner: only the rows it was deleting)."""
        with self._lock, self._db:
            if owner is None:
                self._db.executemany("DELETE FROM hidden WHERE point_id = ?", [(i,) for i in ids])
            else:
                self._db.executemany("DELETE FROM hidden WHERE point_id = ? AND owner = ? AND kind = 'deleting'",
                                     [(i, owner) for i in ids])

    # -- runs and leases -------------------------------------------------------------------------
    def register(self, owner: str, host: str, pid: int, started: float) -> None:
        with self._lock, self._db:
            self._db.execute("INSERT INTO workers VALUES (?, ?, ?, ?, ?) ON CONFLICT(owner) DO UPDATE "
                             "SET expires = excluded.expires", (owner, host, pid, started, time.time() + WORKER_TTL_S))

    def heartbeat(self, owner: str) -> bool:
        """Renew the run; False when it was reaped meanwhile (counted dead: it must stop writing)."""
        with self._lock, self._db:
            return bool(self._db.execute("UPDATE workers SET expires = ? WHERE owner = ? AND expires >= ?",
                                         (time.time() + WORKER_TTL_S, owner, time.time())).rowcount)

    def unregister(self, owner: str) -> None:
        """The run ended: its leases go with it (its hidden chunks are its own to delete first)."""
        with self._lock, self._db:
            self._db.execute("DELETE FROM leases WHERE owner = ?", (owner,))
            self._db.execute("DELETE FROM workers WHERE owner = ?", (owner,))

    def workers(self) -> list[Worker]:
        with self._lock:
            rows = self._db.execute("SELECT owner, host, pid, started, expires FROM workers ORDER BY owner").fetchall()
        return [Worker(str(o), str(h), int(p), float(s), float(e)) for o, h, p, s, e in rows]

    def reap(self, dead: list[str]) -> None:
        """Forget runs known to be dead (their process is gone) and those whose heartbeat stopped:
        their leases are free, and their hidden chunks orphaned."""
        with self._lock, self._db:
            self._db.executemany("DELETE FROM workers WHERE owner = ?", [(o,) for o in dead])
            self._db.execute("DELETE FROM workers WHERE expires < ?", (time.time(),))
            self._db.execute("DELETE FROM leases WHERE owner NOT IN (SELECT owner FROM workers)")

    def claim(self, path: str, owner: str) -> bool:
        """Take the file's lease: True when this run holds it now (it was free, its holder dead, or ours)."""
        with self._lock, self._db:
            now = time.time()
            # Only a live run takes a lease: one counted dead that does not know it yet gets none.
            self._db.execute(f"INSERT INTO leases SELECT ?, ? WHERE EXISTS (SELECT 1 FROM workers w WHERE w.owner = ? "
                             f"AND w.expires >= ?) ON CONFLICT(path) DO UPDATE SET owner = excluded.owner "
                             f"WHERE leases.owner = excluded.owner OR NOT {_LIVE.format('leases')}",
                             (path, owner, owner, now, now))
            row = self._db.execute("SELECT owner FROM leases WHERE path = ?", (path,)).fetchone()
        return row is not None and row[0] == owner

    def release(self, path: str, owner: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM leases WHERE path = ? AND owner = ?", (path, owner))

    def held_by_live(self, path: str) -> bool:
        """Whether a live run holds the file's lease."""
        with self._lock:
            return self._db.execute(f"SELECT 1 FROM leases WHERE path = ? AND {_LIVE.format('leases')}",
                                    (path, time.time())).fetchone() is not None

    # -- reading -----------------------------------------------------------------------------------
    def with_content(self, sha256: str, config: str) -> FileRecord | None:
        """A published file with this content, processed with these settings (its chunks can be copied)."""
        with self._lock:
            row = self._db.execute(
                f"SELECT {_FILES} FROM files WHERE sha256 = ? AND config = ? AND status = 'ok' LIMIT 1",
                (sha256, config),
            ).fetchone()
            return _record(row) if row else None

    def remove(self, path: str) -> None:
        with self._lock, self._db:
            self._db.execute("DELETE FROM files WHERE path = ?", (path,))

    def under(self, root: str) -> Iterator[FileRecord]:
        """Rows for files at or below root (a file path or a folder)."""
        with self._lock:
            prefix = root.rstrip("/") + "/"
            rows = self._db.execute(
                f"SELECT {_FILES} FROM files WHERE path = ? OR substr(path, 1, ?) = ? ORDER BY path",
                (root, len(prefix), prefix),
            ).fetchall()
            return (_record(r) for r in rows)

    def all(self) -> list[FileRecord]:
        with self._lock:
            return [_record(r) for r in self._db.execute(f"SELECT {_FILES} FROM files ORDER BY path").fetchall()]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _record(row: tuple[object, ...]) -> FileRecord:
    (path, size, mtime_ns, sha, status, error, parser, pages, chunk_ids, acl, notes, ingested_at, config) = row
    return FileRecord(
        path=str(path), size=int(size), mtime_ns=int(mtime_ns),  # type: ignore[call-overload]
        sha256=sha if sha is None else str(sha), status=str(status),
        error=None if error is None else str(error), parser=None if parser is None else str(parser),
        pages=None if pages is None else int(pages),  # type: ignore[call-overload]
        chunk_ids=json.loads(str(chunk_ids)), acl=json.loads(str(acl)), notes=json.loads(str(notes)),
        ingested_at=float(ingested_at),  # type: ignore[arg-type]
        config=None if config is None else str(config),
    )
