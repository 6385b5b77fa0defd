"""The small stores beside the vector store: the SQL connection (SQLite or PostgreSQL),
conversations, feedback, and the job board of ingestion running now."""
