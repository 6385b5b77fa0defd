"""The command line around a running server: clear errors, no tracebacks, nothing lost."""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = [pytest.mark.e2e]


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_ingest_hands_its_job_to_the_server_that_holds_the_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("ingest", str(SAMPLES / "fake-memo.pdf"), "--data-dir", str(data)).returncode == 0
    port = _free_port()
    server = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--port", str(port),
                               "--data-dir", str(data)], cwd=ROOT, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    try:
        for _ in range(120):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2)
                break
            except OSError:
                time.sleep(1)
        else:
            pytest.fail("server did not become ready")
        assert (data / "server.json").stat().st_mode & 0o077 == 0  # the token is for the data dir's owner
        proc = _cli("ingest", str(SAMPLES / "family-day.eml"), "--data-dir", str(data))
        assert proc.returncode == 0, proc.stderr
        assert f"(pid {server.pid}) holds the store: the job runs there" in proc.stderr
        assert proc.stdout.startswith("1 added, 0 updated, 0 unchanged")
        # The same report, failures included, and the exit status says so.
        missing = _cli("ingest", str(tmp_path / "nowhere"), "--json", "--data-dir", str(data))
        assert missing.returncode == 1
        assert json.loads(missing.stdout)["files"][0]["error"] == "no such file or folder"
        # The server answers from the new document at once.
        body = json.dumps({"query": "family day activities"}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/search", data=body,
                                         headers={"Content-Type": "application/json"})
        hits = json.load(urllib.request.urlopen(request, timeout=60))["results"]
        assert hits[0]["file_name"] == "family-day.eml"
        # `docs rm` goes through the server too.
        proc = _cli("docs", "rm", str(SAMPLES / "fake-memo.pdf"), "--data-dir", str(data))
        assert proc.returncode == 0, proc.stderr
        request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/search", data=json.dumps(
            {"query": "bottles of water"}).encode(), headers={"Content-Type": "application/json"})
        hits = json.load(urllib.request.urlopen(request, timeout=60))["results"]
        assert all(h["file_name"] != "fake-memo.pdf" for h in hits)
        # `ask` is handed over too, and answers from what the server now holds (the memo is gone).
        proc = _cli("ask", "How many bottles?", "--data-dir", str(data))
        assert proc.returncode == 0, proc.stderr
        assert "fake-memo.pdf" not in proc.stdout
        assert "Traceback" not in proc.stderr
    finally:
        server.terminate()
        server.wait(timeout=30)
    assert not (data / "server.json").exists()  # withdrawn when the server stops
    # Nothing was lost: the store opens again and holds what the server left in it.
    listed = _cli("docs", "list", "--data-dir", str(data))
    assert "fake-memo.pdf" not in listed.stdout
    assert "family-day.eml" in listed.stdout


def test_bad_settings_and_paths_are_one_line_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("retrieval:\n  topk: 3\n")
    proc = _cli("ask", "hello", "--config", str(bad), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 1
    assert "retrieval.topk" in proc.stderr
    assert "Traceback" not in proc.stderr
    proc = _cli("ask", "hello", "--config", str(tmp_path / "missing.yaml"))
    assert "config file not found" in proc.stderr


def test_a_missing_reranker_model_stops_ask_before_any_question(tmp_path: Path) -> None:
    config = tmp_path / "rerank.yaml"
    config.write_text(f"rerank:\n  provider: cross_encoder\n  model_dir: {tmp_path / 'no-such-model'}\n")
    proc = _cli("ask", "hello", "--config", str(config), "--data-dir", str(tmp_path / "d"))
    assert proc.returncode == 1
    assert "rerank.model_dir" in proc.stderr
    assert "is not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_store_migrate_moves_the_collection_to_a_qdrant_store(tmp_path: Path) -> None:
    data = tmp_path / "data"
    assert _cli("ingest", str(SAMPLES / "fake-memo.pdf"), str(SAMPLES / "family-day.eml"),
                "--data-dir", str(data)).returncode == 0
    target = tmp_path / "server.yaml"
    target.write_text(f"store:\n  provider: qdrant\n  path: {tmp_path / 'qdrant'}\n  collection: docs\n")
    copied = []
    for _ in range(2):  # a second run overwrites: same count, no duplicates (migrate checks the counts)
        proc = _cli("store", "migrate", "--to", str(target), "--data-dir", str(data))
        assert proc.returncode == 0, proc.stderr
        copied.append(int(proc.stdout.split(" chunks copied to the qdrant store")[0]))
    assert copied[0] == copied[1] >= 2
    before = _cli("ask", "How many bottles of water?", "--json", "--data-dir", str(data))
    after = _cli("ask", "How many bottles of water?", "--json", "--data-dir", str(data), "--config", str(target))
    assert after.returncode == 0, after.stderr
    first, second = json.loads(before.stdout), json.loads(after.stdout)
    assert [s["path"] for s in second["sources"]] == [s["path"] for s in first["sources"]]
    assert second["sources"][0]["path"].endswith("fake-memo.pdf")
    bad = _cli("store", "migrate", "--to", str(tmp_path / "missing.yaml"), "--data-dir", str(data))
    assert bad.returncode == 2
    assert "does not exist" in bad.stderr


def test_docs_rm_removes_files_and_folders_from_the_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    docs = tmp_path / "docs"
    (docs / "hr").mkdir(parents=True)
    (docs / "hr" / "leave.txt").write_text("Employees accrue 25 days of paid annual leave per year.")
    (docs / "hr" / "pay.txt").write_text("Salaries are paid on the 25th of each month.")
    (docs / "vpn.txt").write_text("Reset your VPN token at the IT service desk on floor 3.")
    assert _cli("ingest", str(docs), "--data-dir", str(data)).returncode == 0
    proc = _cli("docs", "rm", str(docs / "hr"), str(docs / "nothing.txt"), "--data-dir", str(data))
    assert proc.returncode == 1  # one path was not indexed: said, and the rest done
    assert "not indexed:" in proc.stderr
    assert proc.stdout.count("removed  ") == 2
    listed = json.loads(_cli("docs", "list", "--json", "--data-dir", str(data)).stdout)
    assert [Path(d["path"]).name for d in listed] == ["vpn.txt"]
    ask = json.loads(_cli("ask", "How many days of annual leave?", "--json", "--data-dir", str(data)).stdout)
    assert all(Path(s["path"]).name == "vpn.txt" for s in ask["sources"])  # the chunks are gone too


def _lines(stream: Any) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in iter(stream.readline, "")], daemon=True).start()
    return lines


def _next_report(lines: queue.Queue[str], timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        if line.startswith("{"):
            report: dict[str, Any] = json.loads(line)
            return report
    raise AssertionError("no report in time")


def test_ingest_watch_syncs_changes_until_ctrl_c(tmp_path: Path) -> None:
    docs = tmp_path / "share"
    docs.mkdir()
    shutil.copy(SAMPLES / "fake-memo.pdf", docs)
    proc = subprocess.Popen([sys.executable, "-m", "appliance.cli", "ingest", str(docs), "--watch", "--json",
                             "--data-dir", str(tmp_path / "data")], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "APPLIANCE_INGEST__WATCH_DEBOUNCE_MS": "300"})
    try:
        out, err = _lines(proc.stdout), _lines(proc.stderr)
        assert _next_report(out)["added"] == 1  # the first run
        while "watching" not in err.get(timeout=60):
            pass
        (docs / "family-day.eml").write_bytes((SAMPLES / "family-day.eml").read_bytes())
        report = _next_report(out)
        assert (report["added"], report["failed"]) == (1, 0)
        (docs / "fake-memo.pdf").unlink()
        report = _next_report(out)
        assert (report["removed"], report["failed"]) == (1, 0)
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=60) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
    listed = _cli("docs", "list", "--data-dir", str(tmp_path / "data"))
    assert "family-day.eml" in listed.stdout
    assert "fake-memo.pdf" not in listed.stdout


def test_serve_keeps_its_watched_folders_in_sync(tmp_path: Path) -> None:
    from tests.support.servers import appliance_server

    docs = tmp_path / "share"
    docs.mkdir()
    shutil.copy(SAMPLES / "fake-memo.pdf", docs)  # there before the server starts: synced at start-up
    env = {"APPLIANCE_INGEST__WATCH": json.dumps([str(docs)]), "APPLIANCE_INGEST__WATCH_DEBOUNCE_MS": "300"}
    with appliance_server(tmp_path / "data", tmp_path / "server.log", env) as (url, _pid):

        def names() -> set[str]:
            with urllib.request.urlopen(url + "/v1/documents", timeout=30) as response:
                return {d["name"] for d in json.load(response)["documents"]}

        def eventually(expected: set[str]) -> None:
            deadline = time.monotonic() + 60
            while names() != expected:
                assert time.monotonic() < deadline, f"documents are {names()}, not {expected}"
                time.sleep(0.3)

        eventually({"fake-memo.pdf"})
        (docs / "family-day.eml").write_bytes((SAMPLES / "family-day.eml").read_bytes())
        eventually({"fake-memo.pdf", "family-day.eml"})
        (docs / "fake-memo.pdf").rename(docs / "memo.pdf")
        eventually({"memo.pdf", "family-day.eml"})


def test_ingest_json_says_which_stage_kept_the_cores_busy(tmp_path: Path) -> None:
    """`ingest --json` reports each stage's wall and CPU seconds and the whole run's use of the machine."""
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in ("fake-memo.pdf", "family-day.eml", "book-war-and-peace-1p.txt"):
        shutil.copy(SAMPLES / name, docs)
    proc = _cli("ingest", str(docs), "--json", "--no-progress", "--data-dir", str(tmp_path / "data"))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    use = report["utilisation"]
    assert use["cores"] >= 1
    stages = use["stages"]
    assert set(stages) >= {"parse", "embed", "write", "waiting"}
    for stage in ("parse", "embed"):
        assert stages[stage]["cpu_seconds"] > 0, stages
        assert stages[stage]["seconds"] == report["stage_seconds"][stage]
    assert stages["embed"]["cores_busy"] <= use["cores"] + 0.25, stages  # CPU a stage used over its wall time
    assert stages["waiting"]["cores_busy"] < 0.5, stages  # waiting for a parse costs this process nothing
    assert sum(s["cpu_seconds"] for s in stages.values()) <= use["cpu_seconds"] + 0.05
    assert 0 < use["busy"] <= 1.05  # the run's CPU over (wall x cores)
