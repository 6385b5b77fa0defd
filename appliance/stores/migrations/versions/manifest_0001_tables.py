"""The ingestion manifest: files, hidden chunks, ingest runs and their leases, as they were before
Alembic (created here, or adopted as they are), with the columns that older manifests lack."""

import sqlalchemy as sa
from alembic import op

revision = "manifest_0001"
down_revision = None
branch_labels = ("manifest",)
depends_on = None


def upgrade() -> None:
    op.execute("""
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
)""")
    op.execute("CREATE INDEX IF NOT EXISTS files_sha256 ON files (sha256)")
    # Chunks in the store that no search may return: "new" ones being written, "stale" ones superseded.
    op.execute("""
CREATE TABLE IF NOT EXISTS hidden (
    point_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    kind TEXT NOT NULL,            -- new | stale | deleting
    since DOUBLE PRECISION NOT NULL,
    owner TEXT                     -- the run that will publish or delete them; NULL: a run of an older version
)""")
    # Ingest runs in progress, and which file each is processing.
    op.execute("""
CREATE TABLE IF NOT EXISTS workers (
    owner TEXT PRIMARY KEY,        -- host:pid:random
    host TEXT NOT NULL,
    pid BIGINT NOT NULL,
    started DOUBLE PRECISION NOT NULL,   -- the process's start time: a reused pid is another process
    expires DOUBLE PRECISION NOT NULL
)""")
    op.execute("CREATE TABLE IF NOT EXISTS leases (path TEXT PRIMARY KEY, owner TEXT NOT NULL)")
    inspector = sa.inspect(op.get_bind())
    if "config" not in {c["name"] for c in inspector.get_columns("files")}:  # rows before settings were recorded
        op.execute("ALTER TABLE files ADD COLUMN config TEXT")
    if "owner" not in {c["name"] for c in inspector.get_columns("hidden")}:  # before runs could share a manifest
        op.execute("ALTER TABLE hidden ADD COLUMN owner TEXT")
