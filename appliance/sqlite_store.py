"""Opening the appliance's small SQLite databases (users, conversations, API keys) the same way."""

from __future__ import annotations

import sqlite3
from pathlib import Path


def open_database(path: Path, schema: str) -> sqlite3.Connection:
    """WAL (the CLI writes while the server reads), foreign keys on, the schema created, and the file
    readable by its owner only. One connection shared by threads: callers serialise with a lock."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(str(path), timeout=30, check_same_thread=False)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA foreign_keys=ON")
    db.executescript(schema)
    db.commit()
    path.chmod(0o600)
    return db
