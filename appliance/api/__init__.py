"""HTTP app: health endpoints now; the OpenAI-compatible and document APIs mount here too."""
