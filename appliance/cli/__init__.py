"""The command line: `appliance ...` and the `ingest` console script."""

from appliance.cli.main import ingest_main, main

__all__ = ["ingest_main", "main"]
