"""What replicas count together (rate limits, failed sign-ins) and identity-provider sign-ins under way:
the tables as they were before Alembic (created here, or adopted as they are)."""

from alembic import op

revision = "shared_state_0001"
down_revision = None
branch_labels = ("shared_state",)
depends_on = None


def upgrade() -> None:
    op.execute("""
CREATE TABLE IF NOT EXISTS events (
    kind TEXT NOT NULL,            -- requests | questions | failed_sign_in
    key TEXT NOT NULL,             -- the user, key or client address
    at DOUBLE PRECISION NOT NULL
)""")
    op.execute("CREATE INDEX IF NOT EXISTS events_kind_key ON events (kind, key, at)")
    op.execute("""
CREATE TABLE IF NOT EXISTS pending_sign_ins (
    state TEXT PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    nonce TEXT NOT NULL,
    verifier TEXT NOT NULL,
    next_path TEXT NOT NULL
)""")
