"""Users of the identity provider are bound to the provider's (issuer, subject) of their first sign-in, so
a name given again or renamed at the provider does not open the earlier person's account; a session opened
there keeps where the browser signs out at the provider (its end_session_endpoint, with the session's ID
token as id_token_hint)."""

from alembic import op

revision = "users_0002"
down_revision = "users_0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL in rows made before: such a user adopts the subject of their next sign-in.
    op.execute("ALTER TABLE users ADD COLUMN oidc_issuer TEXT")
    op.execute("ALTER TABLE users ADD COLUMN oidc_subject TEXT")  # the ID token's `sub`, unique per issuer
    op.execute("ALTER TABLE sessions ADD COLUMN sign_out_url TEXT")  # NULL: sign out here only
