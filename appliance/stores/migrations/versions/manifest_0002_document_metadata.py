"""Each file's own metadata (title, author, dates, an e-mail's headers) beside its row, for `docs list`
and /v1/documents: a JSON object, empty for files ingested before it was read."""

from alembic import op

revision = "manifest_0002"
down_revision = "manifest_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE files ADD COLUMN meta TEXT NOT NULL DEFAULT '{}'")
