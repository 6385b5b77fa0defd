"""Alembic's entry: run the migrations on the connection and version table that
appliance.stores.database.upgrade hands over (no alembic.ini, no logging set-up of its own)."""

from alembic import context

config = context.config
context.configure(connection=config.attributes["connection"], version_table=config.attributes["version_table"])
with context.begin_transaction():
    context.run_migrations()
