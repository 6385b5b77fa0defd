"""Small pure parts of ingestion: which watch events count, and how a worker's failure is reported."""

from __future__ import annotations

from concurrent.futures import TimeoutError as FutureTimeout
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path

from pebble import ProcessExpired

from ingest.parse import ParseError
from ingest.watch import relevant
from ingest.workers import failure_reason


def test_watch_events_skip_hidden_paths_and_the_data_directory() -> None:
    root, data = Path("/srv/share"), Path("/srv/share/appliance-data")
    assert relevant(Path("/srv/share/a.pdf"), [root], [data])
    assert relevant(Path("/srv/share/hr/b.docx"), [root], [data])
    assert not relevant(Path("/srv/share/.git/index"), [root], [data])
    assert not relevant(Path("/srv/share/hr/.~lock.b.docx#"), [root], [data])
    assert not relevant(Path("/srv/share/appliance-data/manifest.sqlite"), [root], [data])
    assert not relevant(Path("/elsewhere/c.txt"), [root], [data])
    assert relevant(Path("/srv/one.txt"), [Path("/srv/one.txt")], [])  # a watched file


def test_worker_failures_read_as_one_line_reasons() -> None:
    assert failure_reason(ParseError("no text found"), 300, 2048, set()) == "no text found"
    assert "ingest.file_timeout_s (3 s)" in failure_reason(FutureTimeout(), 3, 2048, set())
    killed = ProcessExpired("Abnormal termination", code=-9, pid=41)
    assert "ingest.file_memory_mb (512 MB)" in failure_reason(killed, 300, 512, {41})
    assert failure_reason(killed, 300, 512, set()) == "the parser crashed (signal SIGKILL)"
    assert "exit code 3" in failure_reason(ProcessExpired("x", code=3, pid=7), 300, 512, set())
    assert "could not start" in failure_reason(BrokenProcessPool(), 300, 512, set())
    assert failure_reason(ValueError("bad"), 300, 512, set()) == "ValueError: bad"
