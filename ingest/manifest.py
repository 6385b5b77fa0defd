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
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, text

from appliance.stores.database import Where, open_database

if TYPE_CHECKING:
    from sqlalchemy.engine import Connection

WORKER_TTL_S = 60.0  # a run whose heartbeat is this old is dead: its leases and hidden chunks are free


_FILES = ("path, size, mtime_ns, sha256, status, error, parser, pages, chunk_ids, acl, notes, ingested_at, config, "
          "meta")
_LIVE = "EXISTS (SELECT 1 FROM workers w WHERE w.owner = {0}.owner AND w.expires >= :now)"


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
    meta: dict[str, Any] = field(default_factory=dict)  # the document's title, author, dates (ingest.metadata)


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
        self._db = open_database(Path(where) if isinstance(where, str) else where, "manifest")
        # The server reads and writes from several threads: one transaction at a time.
        self._lock = threading.RLock()

    @contextmanager
    def _tx(self) -> Iterator[Connection]:
        with self._lock, self._db.begin() as tx:
            yield tx

    def get(self, path: str) -> FileRecord | None:
        with self._tx() as tx:
            row = tx.execute(text(f"SELECT {_FILES} FROM files WHERE path = :path"), {"path": path}).first()
            return _record(tuple(row)) if row else None

    def put(self, rec: FileRecord) -> None:
        with self._tx() as tx:
            self._put(tx, rec)

    @staticmethod
    def _put(tx: Connection, rec: FileRecord) -> None:
        rec.ingested_at = rec.ingested_at or time.time()
        names = _FILES.split(", ")
        updates = ", ".join(f"{c} = excluded.{c}" for c in names[1:])
        tx.execute(text(f"INSERT INTO files ({_FILES}) VALUES ({', '.join(':' + c for c in names)}) "
                        f"ON CONFLICT(path) DO UPDATE SET {updates}"),
                   {"path": rec.path, "size": rec.size, "mtime_ns": rec.mtime_ns, "sha256": rec.sha256,
                    "status": rec.status, "error": rec.error, "parser": rec.parser, "pages": rec.pages,
                    "chunk_ids": json.dumps(rec.chunk_ids), "acl": json.dumps(rec.acl), "notes": json.dumps(rec.notes),
                    "ingested_at": rec.ingested_at, "config": rec.config, "meta": json.dumps(rec.meta)})

    def set_acl(self, path: str, acl: list[str]) -> None:
        with self._tx() as tx:
            tx.execute(text("UPDATE files SET acl = :acl WHERE path = :path"), {"acl": json.dumps(acl), "path": path})

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        with self._tx() as tx:
            tx.execute(text("UPDATE files SET size = :size, mtime_ns = :mtime_ns WHERE path = :path"),
                       {"size": size, "mtime_ns": mtime_ns, "path": path})

    @staticmethod
    def _hold(tx: Connection, path: str, owner: str | None, now: float) -> None:
        """Inside a transaction: the run still holds the file's lease and is alive (LeaseLost otherwise).
        The lease row is written, so it stays locked until the commit: no run can take it meanwhile."""
        if owner is not None and not tx.execute(
                text(f"UPDATE leases SET owner = owner WHERE path = :path AND owner = :owner "
                     f"AND {_LIVE.format('leases')}"), {"path": path, "owner": owner, "now": now}).rowcount:
            raise LeaseLost(f"{path}: another ingest run took this file over")

    def hide_new(self, path: str, ids: list[str], owner: str | None = None) -> list[str]:
        """Before a file's new chunks are written: none of them may be found until published. Returns
        the ids another live run is deleting at this moment (the caller waits and calls again); a row
        of a dead run, or one superseded (stale) and not yet being deleted, is taken over."""
        with self._tx() as tx:
            now = time.time()
            self._hold(tx, path, owner, now)
            _many(tx, "INSERT INTO hidden VALUES (:id, :path, 'new', :now, :owner) ON CONFLICT(point_id) DO UPDATE "
                      "SET path = excluded.path, kind = 'new', since = excluded.since, owner = excluded.owner "
                      f"WHERE hidden.owner IS NULL OR hidden.kind = 'stale' OR NOT {_LIVE.format('hidden')}",
                  [{"id": i, "path": path, "now": now, "owner": owner} for i in ids])
            return self._not_mine(tx, ids, owner)

    def hidden_by_others(self, ids: list[str], owner: str | None) -> list[str]:
        """Those of the ids that another run holds hidden."""
        with self._tx() as tx:
            return self._not_mine(tx, ids, owner)

    @staticmethod
    def _not_mine(tx: Connection, ids: list[str], owner: str | None) -> list[str]:
        found: list[str] = []
        other = "owner IS NOT NULL" if owner is None else "(owner IS NULL OR owner <> :owner)"
        query = text(f"SELECT point_id FROM hidden WHERE point_id IN :ids AND {other}").bindparams(
            bindparam("ids", expanding=True))
        for start in range(0, len(ids), 500):
            params: dict[str, Any] = {"ids": ids[start:start + 500]}
            if owner is not None:
                params["owner"] = owner
            found += [str(r[0]) for r in tx.execute(query, params)]
        return found

    def publish(self, rec: FileRecord, stale: list[str], owner: str | None = None) -> None:
        """In one transaction: the row names its new chunks, which become searchable, and the
        superseded ones are hidden until the writer deletes them. With an owner: only while that run
        is alive and still holds the file's lease (LeaseLost otherwise, and nothing changes)."""
        with self._tx() as tx:
            now = time.time()
            self._hold(tx, rec.path, owner, now)
            mine = "owner IS NULL" if owner is None else "owner = :owner"
            _many(tx, f"DELETE FROM hidden WHERE point_id = :id AND kind = 'new' AND {mine}",
                  [{"id": i, "owner": owner} for i in rec.chunk_ids])
            _many(tx, "INSERT INTO hidden VALUES (:id, :path, 'stale', :now, :owner) ON CONFLICT(point_id) DO UPDATE "
                      "SET kind = 'stale', since = excluded.since, owner = excluded.owner",
                  [{"id": i, "path": rec.path, "now": now, "owner": owner} for i in stale])
            self._put(tx, rec)

    def hidden_ids(self) -> list[str]:
        with self._tx() as tx:
            return [str(r[0]) for r in tx.execute(text("SELECT point_id FROM hidden"))]

    def orphaned_ids(self) -> list[str]:
        """Hidden chunks no live run will publish or delete: left by a run that was killed."""
        with self._tx() as tx:
            rows = tx.execute(text(f"SELECT point_id FROM hidden WHERE owner IS NULL OR NOT {_LIVE.format('hidden')}"),
                              {"now": time.time()})
            return [str(r[0]) for r in rows]

    def start_deleting(self, owner: str | None, ids: list[str] | None = None) -> list[str]:
        """Mark hidden chunks as being deleted by this run, and return them: these superseded ids of its
        own (those another run has not taken over since), or, without ids, every orphaned one. No other
        run takes a row over while this run deletes it (hide_new waits)."""
        mine = "owner IS NULL" if owner is None else "owner = :owner"
        with self._tx() as tx:
            if ids is None:
                tx.execute(text(f"UPDATE hidden SET owner = :owner, kind = 'deleting' WHERE owner IS NULL OR NOT "
                                f"{_LIVE.format('hidden')}"), {"owner": owner, "now": time.time()})
            else:
                _many(tx, f"UPDATE hidden SET kind = 'deleting' WHERE point_id = :id AND kind = 'stale' AND {mine}",
                      [{"id": i, "owner": owner} for i in ids])
            rows = tx.execute(text(f"SELECT point_id FROM hidden WHERE kind = 'deleting' AND {mine}"), {"owner": owner})
            return [str(r[0]) for r in rows]

    def unhide(self, ids: list[str], owner: str | None = None) -> None:
        """After the chunks are deleted from the store (with an owner: only the rows it was deleting)."""
        with self._tx() as tx:
            if owner is None:
                _many(tx, "DELETE FROM hidden WHERE point_id = :id", [{"id": i} for i in ids])
            else:
                _many(tx, "DELETE FROM hidden WHERE point_id = :id AND owner = :owner AND kind = 'deleting'",
                      [{"id": i, "owner": owner} for i in ids])

    # -- runs and leases -------------------------------------------------------------------------
    def register(self, owner: str, host: str, pid: int, started: float) -> None:
        with self._tx() as tx:
            tx.execute(text("INSERT INTO workers VALUES (:owner, :host, :pid, :started, :expires) ON CONFLICT(owner) "
                            "DO UPDATE SET expires = excluded.expires"),
                       {"owner": owner, "host": host, "pid": pid, "started": started,
                        "expires": time.time() + WORKER_TTL_S})

    def heartbeat(self, owner: str) -> bool:
        """Renew the run; False when it was reaped meanwhile (counted dead: it must stop writing)."""
        with self._tx() as tx:
            now = time.time()
            return bool(tx.execute(text("UPDATE workers SET expires = :expires WHERE owner = :owner "
                                        "AND expires >= :now"),
                                   {"expires": now + WORKER_TTL_S, "owner": owner, "now": now}).rowcount)

    def unregister(self, owner: str) -> None:
        """The run ended: its leases go with it (its hidden chunks are its own to delete first)."""
        with self._tx() as tx:
            tx.execute(text("DELETE FROM leases WHERE owner = :owner"), {"owner": owner})
            tx.execute(text("DELETE FROM workers WHERE owner = :owner"), {"owner": owner})

    def workers(self) -> list[Worker]:
        with self._tx() as tx:
            rows = tx.execute(text("SELECT owner, host, pid, started, expires FROM workers ORDER BY owner")).all()
        return [Worker(str(o), str(h), int(p), float(s), float(e)) for o, h, p, s, e in rows]

    def reap(self, dead: list[str]) -> None:
        """Forget runs known to be dead (their process is gone) and those whose heartbeat stopped:
        their leases are free, and their hidden chunks orphaned."""
        with self._tx() as tx:
            _many(tx, "DELETE FROM workers WHERE owner = :owner", [{"owner": o} for o in dead])
            tx.execute(text("DELETE FROM workers WHERE expires < :now"), {"now": time.time()})
            tx.execute(text("DELETE FROM leases WHERE owner NOT IN (SELECT owner FROM workers)"))

    def claim(self, path: str, owner: str) -> bool:
        """Take the file's lease: True when this run holds it now (it was free, its holder dead, or ours)."""
        with self._tx() as tx:
            # Only a live run takes a lease: one counted dead that does not know it yet gets none.
            tx.execute(text(f"INSERT INTO leases SELECT :path, :owner WHERE EXISTS (SELECT 1 FROM workers w "
                            f"WHERE w.owner = :owner AND w.expires >= :now) ON CONFLICT(path) DO UPDATE "
                            f"SET owner = excluded.owner WHERE leases.owner = excluded.owner OR NOT "
                            f"{_LIVE.format('leases')}"), {"path": path, "owner": owner, "now": time.time()})
            row = tx.execute(text("SELECT owner FROM leases WHERE path = :path"), {"path": path}).first()
        return row is not None and row[0] == owner

    def release(self, path: str, owner: str) -> None:
        with self._tx() as tx:
            tx.execute(text("DELETE FROM leases WHERE path = :path AND owner = :owner"), {"path": path, "owner": owner})

    def held_by_live(self, path: str) -> bool:
        """Whether a live run holds the file's lease."""
        with self._tx() as tx:
            return tx.execute(text(f"SELECT 1 FROM leases WHERE path = :path AND {_LIVE.format('leases')}"),
                              {"path": path, "now": time.time()}).first() is not None

    # -- reading -----------------------------------------------------------------------------------
    def with_content(self, sha256: str, config: str) -> FileRecord | None:
        """A published file with this content, processed with these settings (its chunks can be copied)."""
        with self._tx() as tx:
            row = tx.execute(text(f"SELECT {_FILES} FROM files WHERE sha256 = :sha256 AND config = :config "
                                  "AND status = 'ok' LIMIT 1"), {"sha256": sha256, "config": config}).first()
            return _record(tuple(row)) if row else None

    def remove(self, path: str) -> None:
        with self._tx() as tx:
            tx.execute(text("DELETE FROM files WHERE path = :path"), {"path": path})

    def under(self, root: str) -> Iterator[FileRecord]:
        """Rows for files at or below root (a file path or a folder)."""
        prefix = root.rstrip("/") + "/"
        with self._tx() as tx:
            rows = tx.execute(text(f"SELECT {_FILES} FROM files WHERE path = :root OR substr(path, 1, :n) = :prefix "
                                   "ORDER BY path"), {"root": root, "n": len(prefix), "prefix": prefix}).all()
        return (_record(tuple(r)) for r in rows)

    def all(self) -> list[FileRecord]:
        with self._tx() as tx:
            return [_record(tuple(r)) for r in tx.execute(text(f"SELECT {_FILES} FROM files ORDER BY path"))]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _many(tx: Connection, sql: str, rows: list[dict[str, Any]]) -> None:
    """One statement for each row (none for no rows: an empty list would run it once, unbound)."""
    if rows:
        tx.execute(text(sql), rows)


def _record(row: tuple[object, ...]) -> FileRecord:
    (path, size, mtime_ns, sha, status, error, parser, pages, chunk_ids, acl, notes, ingested_at, config, meta) = row
    return FileRecord(
        path=str(path), size=int(size), mtime_ns=int(mtime_ns),  # type: ignore[call-overload]
        sha256=sha if sha is None else str(sha), status=str(status),
        error=None if error is None else str(error), parser=None if parser is None else str(parser),
        pages=None if pages is None else int(pages),  # type: ignore[call-overload]
        chunk_ids=json.loads(str(chunk_ids)), acl=json.loads(str(acl)), notes=json.loads(str(notes)),
        ingested_at=float(ingested_at),  # type: ignore[arg-type]
        config=None if config is None else str(config), meta=json.loads(str(meta or "{}")),
    )
