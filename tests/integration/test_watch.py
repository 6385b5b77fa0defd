"""Watch mode: created, changed, moved and deleted files are reflected within seconds."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_services

pytestmark = pytest.mark.slow


def _eventually(check: Callable[[], bool], timeout: float = 30.0) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    raise AssertionError("not reflected in time")


def test_the_watcher_keeps_the_index_in_sync(tmp_path: Path) -> None:
    from ingest.watch import Watcher, watch_folders

    docs = tmp_path / "share"
    docs.mkdir()
    services = make_services(tmp_path / "data", ingest={"watch_debounce_ms": 300})
    jobs: list[list[Path]] = []

    def job(paths: list[Path]) -> Any:
        jobs.append(paths)
        with services.write_lock:
            return services.ingest_pipeline.run(paths, prune=True)

    def names() -> set[str]:
        return {Path(r.path).relative_to(docs).as_posix() for r in services.manifest.all() if r.status == "ok"}

    watcher = Watcher([docs], debounce_ms=300, exclude=(tmp_path / "data",))
    worker = threading.Thread(target=watch_folders, args=(watcher, job))
    worker.start()
    try:
        (docs / "leave.txt").write_text("Employees accrue 25 days of paid annual leave per year.")
        (docs / ".~lock.leave.txt#").write_text("an editor's lock file: hidden, never ingested")
        _eventually(lambda: names() == {"leave.txt"})
        (docs / "leave.txt").write_text("Employees accrue 30 days of paid annual leave per year.")
        _eventually(lambda: any("30 days" in s.text for s in services.rag.retrieve("days of annual leave")))
        (docs / "policies").mkdir()
        (docs / "leave.txt").rename(docs / "policies" / "leave.txt")
        _eventually(lambda: names() == {"policies/leave.txt"})
        (docs / "policies" / "leave.txt").unlink()
        _eventually(lambda: names() == set())
        assert services.store.count() == 0
        # Several changes inside the debounce window make one job.
        for i in range(5):
            (docs / f"note-{i}.md").write_text(f"# Note {i}\n\nMeeting room {i} has a projector.")
        _eventually(lambda: len(names()) == 5)
        assert any(len(batch) >= 2 for batch in jobs)
    finally:
        watcher.stop()
        worker.join(timeout=30)
        services.close()
    assert not worker.is_alive()
