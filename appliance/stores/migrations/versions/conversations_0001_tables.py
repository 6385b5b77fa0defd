"""Each user's conversations and their turns: the tables as they were before Alembic (created here, or
adopted as they are in a database made by an earlier version)."""

from alembic import op

revision = "conversations_0001"
down_revision = None
branch_labels = ("conversations",)
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS conversations (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    title TEXT NOT NULL,
    created_at DOUBLE PRECISION NOT NULL,
    updated_at DOUBLE PRECISION NOT NULL
)""")
    op.execute("CREATE INDEX IF NOT EXISTS conversations_owner ON conversations(owner, updated_at)")
    op.execute("""
CREATE TABLE IF NOT EXISTS turns (
    conversation TEXT NOT NULL REFERENCES conversations(id) ON DELETE CASCADE,
    n INTEGER NOT NULL,
    question TEXT NOT NULL,
    answer TEXT NOT NULL,
    sources TEXT NOT NULL,       -- JSON: file, page, doc_id of each source (what the user was shown)
    at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (conversation, n)
)""")
