"""What a conversation asks about (its scope: folders, documents, file types, dates), kept with it so a
reopened conversation searches where it did: a JSON object as Scope.to_dict gives it, empty for all."""

from alembic import op

revision = "conversations_0002"
down_revision = "conversations_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("ALTER TABLE conversations ADD COLUMN scope TEXT NOT NULL DEFAULT '{}'")
