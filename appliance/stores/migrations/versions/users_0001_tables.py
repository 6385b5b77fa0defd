"""Users, their sessions, and retired names: the tables as they were before Alembic (created here, or
adopted as they are in a database made by an earlier version)."""

from alembic import op

revision = "users_0001"
down_revision = None
branch_labels = ("users",)
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password TEXT,               -- Argon2id hash; NULL for users of the identity provider (OIDC)
    groups TEXT NOT NULL,        -- JSON list
    admin INTEGER NOT NULL,
    source TEXT NOT NULL,        -- local | oidc
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    last_sign_in DOUBLE PRECISION
)""")
    op.execute("""
CREATE TABLE IF NOT EXISTS sessions (
    sha256 TEXT PRIMARY KEY,     -- of the cookie: a copy of the database opens no session
    "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    csrf TEXT NOT NULL
)""")
    op.execute('CREATE INDEX IF NOT EXISTS sessions_user ON sessions("user")')
    op.execute("""
CREATE TABLE IF NOT EXISTS retired (   -- removed users' names: never given to someone else
    name TEXT PRIMARY KEY,
    removed_at DOUBLE PRECISION NOT NULL
)""")
