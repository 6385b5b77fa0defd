"""Ingestion: discover, parse, chunk, embed, upsert; incremental through a SQLite manifest."""
