"""SIGKILL an `appliance ingest` at several points; the run after converges to an uninterrupted run's state."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLES, make_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

# Every format that parses without LibreOffice, plus a long file whose chunks take a few batches.
FILES = ["fake-memo.pdf", "layout-parser-paper-fast.pdf", "simple.docx", "sample-presentation.pptx",
         "vodafone.xlsx", "example-10k-1p.html", "rust-book-installation.md", "family-day.eml",
         "udhr-article-1.epub", "fake.odt", "fake-doc.rtf", "stanley-cups.csv", "book-war-and-peace-1p.txt"]


def _docs(root: Path) -> Path:
    docs = root / "share"
    (docs / "nested").mkdir(parents=True)
    for i, name in enumerate(FILES):
        shutil.copy(SAMPLES / name, (docs / "nested" if i % 3 == 0 else docs) / name)
    paragraphs = [f"Section {i}. The maintenance log records inspection {i} of pump {i % 7} on line {i % 3}, "
                  f"with pressure readings of {100 + i} kPa and no fault found." for i in range(600)]
    (docs / "long-log.txt").write_text("\n\n".join(paragraphs))
    return docs


def _ingest(docs: Path, data: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "appliance.cli", "ingest", str(docs), "--data-dir", str(data), "--no-progress"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)


def _query(data: Path, sql: str) -> int:
    try:
        db = sqlite3.connect(f"file:{data / 'manifest.sqlite'}?mode=ro", uri=True, timeout=1)
        try:
            return int(db.execute(sql).fetchone()[0])
        finally:
            db.close()
    except sqlite3.Error:
        return 0  # not created yet, or its schema not written yet


def _kill_when(proc: subprocess.Popen[bytes], ready: Callable[[], bool], timeout: float = 300) -> bool:
    """SIGKILL the run and its parse workers once `ready()` holds; False if the run ended first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if ready():
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            return True
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    raise AssertionError("the run neither reached the kill point nor ended")


def _state(data: Path) -> dict[str, Any]:
    services = make_services(data)
    try:
        rows = {r.path: (r.size, r.mtime_ns, r.sha256, r.status, r.error, r.parser, r.pages, tuple(r.chunk_ids),
                         tuple(r.acl), tuple(r.notes), r.config) for r in services.manifest.all()}
        points = [(p.id, p.text, p.payload["path"], p.payload["chunk_index"])
                  for page in services.store.scroll() for p in page]
        return {"rows": rows, "points": sorted(points), "hidden": services.manifest.hidden_ids()}
    finally:
        services.close()


def test_runs_killed_at_several_points_converge_to_the_uninterrupted_state(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    reference = tmp_path / "reference"
    done = _ingest(docs, reference)
    assert done.wait(timeout=600) == 0, done.stderr.read().decode() if done.stderr else ""
    expected = _state(reference)
    assert len(expected["rows"]) == len(FILES) + 1
    assert all(row[3] == "ok" for row in expected["rows"].values())

    data = tmp_path / "killed"
    rows = "SELECT count(*) FROM files"
    kills = 0
    # 1: while the first file's chunks are written but not yet published.
    kills += _kill_when(_ingest(docs, data), lambda: _query(data, "SELECT count(*) FROM hidden") > 0)
    # 2 and 3: a few files further on each time, wherever the run happens to be.
    for _ in range(2):
        start = _query(data, rows)
        kills += _kill_when(_ingest(docs, data), lambda start=start: _query(data, rows) >= start + 3)  # type: ignore[misc]
    # 4: once every file is published: during the final index build and flush.
    kills += _kill_when(_ingest(docs, data), lambda: _query(data, rows) == len(FILES) + 1)
    assert kills >= 3, "the runs ended before most kill points"

    last = _ingest(docs, data)
    assert last.wait(timeout=600) == 0, last.stderr.read().decode() if last.stderr else ""
    got = _state(data)
    assert got["hidden"] == []
    ids = [p[0] for p in got["points"]]
    assert len(ids) == len(set(ids)), "duplicate chunk ids"
    assert got["rows"] == expected["rows"]
    assert got["points"] == expected["points"]


def test_ctrl_c_stops_cleanly_and_the_next_run_resumes(tmp_path: Path) -> None:
    docs = _docs(tmp_path)
    data = tmp_path / "data"
    proc = _ingest(docs, data)
    deadline = time.monotonic() + 300
    while _query(data, "SELECT count(*) FROM files") < 2 and proc.poll() is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGINT)  # what a terminal sends the whole foreground group on Ctrl-C
    _, err = proc.communicate(timeout=120)
    text = err.decode()
    assert proc.returncode == 130, text
    assert "stopped: what was stored is kept; run the same command again to resume." in text
    assert "Traceback" not in text
    stopped_at = _query(data, "SELECT count(*) FROM files")
    assert stopped_at < len(FILES) + 1
    again = _ingest(docs, data)
    assert again.wait(timeout=600) == 0
    state = _state(data)
    assert len(state["rows"]) == len(FILES) + 1
    assert state["hidden"] == []


def test_ctrl_c_on_a_handed_over_job_stops_it_in_the_server(tmp_path: Path) -> None:
    from tests.support.servers import appliance_server

    docs = _docs(tmp_path)
    data = tmp_path / "data"
    log = tmp_path / "server.log"
    with appliance_server(data, log):
        proc = _ingest(docs, data)
        deadline = time.monotonic() + 300
        while _query(data, "SELECT count(*) FROM files") < 2 and proc.poll() is None:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err.decode()
        assert "holds the store: the job runs there" in err.decode()
        # The server stops between files: the file being embedded is finished first (seconds on a busy machine).
        deadline = time.monotonic() + 180
        server_log = data / "logs" / "appliance.log"
        while "handed-over ingest stopped by its client" not in (
                server_log.read_text(errors="replace") if server_log.exists() else ""):
            assert time.monotonic() < deadline, log.read_text(errors="replace")[-2000:]
            time.sleep(0.2)
        stopped_at = _query(data, "SELECT count(*) FROM files")
        time.sleep(3)
        assert _query(data, "SELECT count(*) FROM files") == stopped_at < len(FILES) + 1
        again = _ingest(docs, data)
        assert again.wait(timeout=600) == 0
        assert _query(data, "SELECT count(*) FROM files WHERE status = 'ok'") == len(FILES) + 1
        assert _query(data, "SELECT count(*) FROM hidden") == 0
