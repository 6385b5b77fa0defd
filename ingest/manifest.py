"""The ingestion manifest: one SQLite row per source file, the truth of what the store holds.

A file's row names the chunks that are published (searchable). Chunks in the store that are not
published yet, or no longer, are listed in the `hidden` table and every search excludes them in
the store query itself: the new version of a file is written while hidden, then one SQLite
transaction publishes it and hides the old version, whose chunks are deleted a moment later
(see ingest.pipeline). So a question sees a file's old or new version, never both or neither,
and a run killed at any moment leaves only hidden chunks behind, which the next run deletes.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT,
    status TEXT NOT NULL,          -- ok | failed | skipped
    error TEXT,
    parser TEXT,
    pages INTEGER,
    chunk_ids TEXT NOT NULL DEFAULT '[]',
    acl TEXT NOT NULL DEFAULT '[]',
    notes TEXT NOT NULL DEFAULT '[]',
    ingested_at REAL NOT NULL,
    config TEXT                    -- what the file was processed with (IngestPipeline.config); NULL: unknown
);
CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256);
-- Chunks in the store that no search may return: "new" ones being written, "stale" ones superseded.
CREATE TABLE IF NOT EXISTS hidden (
    point_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,            -- new | stale
    since REAL NOT NULL
);
"""


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


class Manifest:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
        # The server reads and writes from several threads: one statement (and its commit) at a time.
        self._lock = threading.RLock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(files)")}
        if "config" not in columns:  # a manifest written before rows recorded their settings
            self._db.execute("ALTER TABLE files ADD COLUMN config TEXT")
        self._db.commit()

    def get(self, path: str) -> FileRecord | None:
        with self._lock:
            row = self._db.execute("SELECT * FROM files WHERE path = ?", (path,)).fetchone()
            return _record(row) if row else None

    def put(self, rec: FileRecord) -> None:
        with self._lock, self._db:
            self._put(rec)

    def _put(self, rec: FileRecord) -> None:
        rec.ingested_at = rec.ingested_at or time.time()
        self._db.execute(
            "INSERT OR REPLACE INTO files VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
            (rec.path, rec.size, rec.mtime_ns, rec.sha256, rec.status, rec.error, rec.parser, rec.pages,
             json.dumps(rec.chunk_ids), json.dumps(rec.acl), json.dumps(rec.notes), rec.ingested_at, rec.config),
        )

    def set_acl(self, path: str, acl: list[str]) -> None:
        with self._lock:
            self._db.execute("UPDATE files SET acl = ? WHERE path = ?", (json.dumps(acl), path))
            self._db.commit()

    def touch(self, path: str, size: int, mtime_ns: int) -> None:
        with self._lock:
            self._db.execute("UPDATE files SET size = ?, mtime_ns = ? WHERE path = ?", (size, mtime_ns, path))
            self._db.commit()

    def hide_new(self, path: str, ids: list[str]) -> None:
        """Before a file's new chunks are written: none of them may be found until published."""
        with self._lock:
            now = time.time()
            self._db.executemany("INSERT OR REPLACE INTO hidden VALUES (?, ?, 'new', ?)",
                                 [(i, path, now) for i in ids])
            self._db.commit()

    def publish(self, rec: FileRecord, stale: list[str]) -> None:
        """In one transaction: the row names its new chunks, which become searchable, and the
        superseded ones are hidden until the writer deletes them."""
        with self._lock, self._db:
            now = time.time()
            self._db.execute("DELETE FROM hidden WHERE path = ? AND kind = 'new'", (rec.path,))
            self._db.executemany("INSERT OR REPLACE INTO hidden VALUES (?, ?, 'stale', ?)",
                                 [(i, rec.path, now) for i in stale])
            self._put(rec)

    def hidden_ids(self) -> list[str]:
        with self._lock:
            return [str(r[0]) for r in self._db.execute("SELECT point_id FROM hidden")]

    def unhide(self, ids: list[str]) -> None:
        """After the chunks are deleted from the store."""
        with self._lock, self._db:
            self._db.executemany("DELETE FROM hidden WHERE point_id = ?", [(i,) for i in ids])

    def with_content(self, sha256: str, config: str) -> FileRecord | None:
        """A published file with this content, processed with these settings (its chunks can be copied)."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM files WHERE sha256 = ? AND config = ? AND status = 'ok' LIMIT 1", (sha256, config)
            ).fetchone()
            return _record(row) if row else None

    def remove(self, path: str) -> None:
        with self._lock:
            self._db.execute("DELETE FROM files WHERE path = ?", (path,))
            self._db.commit()

    def under(self, root: str) -> Iterator[FileRecord]:
        """Rows for files at or below root (a file path or a folder)."""
        with self._lock:
            prefix = root.rstrip("/") + "/"
            rows = self._db.execute(
                "SELECT * FROM files WHERE path = ? OR substr(path, 1, ?) = ? ORDER BY path",
                (root, len(prefix), prefix),
            ).fetchall()
            return (_record(r) for r in rows)

    def all(self) -> list[FileRecord]:
        with self._lock:
            return [_record(r) for r in self._db.execute("SELECT * FROM files ORDER BY path").fetchall()]

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
