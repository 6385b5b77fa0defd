"""API keys: the table as it was before Alembic (created here, or adopted as it is), with the columns
that keys made before users existed lack."""

import sqlalchemy as sa
from alembic import op

revision = "api_keys_0001"
down_revision = None
branch_labels = ("api_keys",)
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS api_keys (
    name TEXT PRIMARY KEY,
    sha256 TEXT NOT NULL UNIQUE,
    hint TEXT NOT NULL,          -- the first characters, to tell keys apart in a list
    created_at DOUBLE PRECISION NOT NULL,
    last_used_at DOUBLE PRECISION,
    "user" TEXT,                 -- the key acts as this user (their groups); NULL: a service key
    admin INTEGER NOT NULL DEFAULT 0
)""")
    have = {c["name"] for c in sa.inspect(op.get_bind()).get_columns("api_keys")}
    if "user" not in have:  # keys made before users existed: service keys, not admins
        op.execute('ALTER TABLE api_keys ADD COLUMN "user" TEXT')
        op.execute("ALTER TABLE api_keys ADD COLUMN admin INTEGER NOT NULL DEFAULT 0")
