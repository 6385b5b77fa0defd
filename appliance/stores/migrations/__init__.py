"""Alembic migrations of the appliance's small tables (see README.md here); loaded by Alembic, not imported."""
