"""One act, one path (issue 18): an ingest job leaves the same audit line and the same metrics whether
it came from the CLI, an API upload, the folder watcher or an administrator's re-ingest, and the ACL
rules are applied with the same `permissions` line by the CLI and the API. Real parser, embedder and
store; the channels are driven in process (click's runner, FastAPI's test client, serve's watcher)."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.conftest import make_services

INGEST_KEYS = {"ts", "event", "actor", "kind", "via", "paths", "added", "updated", "removed", "failed", "prev", "hash"}


def audit_lines(data: Path, event: str) -> list[dict[str, Any]]:
    lines: list[dict[str, Any]] = []
    for path in sorted((data / "audit").glob("audit*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [e for e in lines if e["event"] == event]


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "share"
    docs.mkdir()
    (docs / "kestrel.md").write_text("# Build server\n\nThe build server Kestrel runs in the basement.\n")
    return docs


@pytest.fixture
def services(tmp_path: Path) -> Iterator[Any]:
    s = make_services(tmp_path / "data")
    yield s
    s.close()


def test_every_channel_records_the_same_ingest_line_and_metrics(tmp_path: Path, folder: Path, services: Any) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import _watch, create_app
    from appliance.cli import main
    from appliance.usecases import run_ingest

    data = services.settings.data_dir
    # The CLI in its own process would hold the store; here it runs first, then the server's channels.
    cli = CliRunner().invoke(main, ["ingest", str(folder), "--data-dir", str(data), "--no-progress"])
    assert cli.exit_code == 0, cli.output
    app = create_app(services, ui=False)
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        r = client.post("/v1/documents", files=[("files", ("llamas.txt", b"Llamas graze on the hill.", "text/plain"))])
        assert r.status_code == 201, r.text
        watched = tmp_path / "watched"
        watched.mkdir()
        (watched / "note.md").write_text("# Note\n\nThe coffee machine is on the second floor.\n")
        services.settings.ingest.watch = [watched]
        watcher = _watch(services)
        try:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and not [e for e in audit_lines(data, "ingest") if e["kind"] == "watch"]:
                time.sleep(0.2)
        finally:
            watcher.stop()
        report = run_ingest(services, [folder / "kestrel.md"], "admin", "reingest", "page", force=True)
        assert report.count("updated") + report.count("added") == 1
        metrics = client.get("/metrics").text
    lines = audit_lines(data, "ingest")
    by_channel = {(e["kind"], e["via"]): e for e in lines}
    assert set(by_channel) == {("ingest", "cli"), ("upload", "api"), ("watch", "watch"), ("reingest", "page")}
    for line in lines:
        assert set(line) == INGEST_KEYS, line
        assert line["added"] + line["updated"] == 1
    # The server's own jobs (upload, watch, re-ingest) all counted into the one registry /metrics shows.
    files = sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines()
                if x.startswith("appliance_ingest_files_total"))
    assert files == 3


def test_the_cli_and_the_api_apply_acl_rules_with_the_same_permissions_line(tmp_path: Path, folder: Path) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.cli import main
    from appliance.services import build_services
    from appliance.settings import load_settings

    data, config = tmp_path / "data", tmp_path / "appliance.yaml"
    config.write_text("acl: []\n")
    runner = CliRunner()
    assert runner.invoke(main, ["ingest", str(folder), "--data-dir", str(data), "--config", str(config),
                                "--no-progress"]).exit_code == 0
    config.write_text(f"acl:\n  - path: {folder}\n    groups: [engineering]\n")
    cli = runner.invoke(main, ["acl", "apply", "--data-dir", str(data), "--config", str(config)])
    assert cli.exit_code == 0, cli.output
    config.write_text(f"acl:\n  - path: {folder}\n    groups: [hr]\n")
    services = build_services(load_settings(config, {"data_dir": data}), config_file=config)
    try:
        with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
            r = client.post("/v1/admin/acl/apply", headers={"origin": "http://127.0.0.1:7860"})
            assert r.status_code == 200, r.text
    finally:
        services.close()
    lines = audit_lines(data, "permissions")
    assert [e["via"] for e in lines] == ["cli", "api"]
    assert [e["changed"][0]["after"] for e in lines] == [["engineering"], ["hr"]]
    assert {frozenset(e) for e in lines} == {frozenset(lines[0])}


@pytest.mark.slow  # the full suite (scripts/test.sh) runs it; plain pytest stays fast
def test_the_page_and_the_api_answer_through_the_same_gate_audit_and_metrics(folder: Path, services: Any) -> None:
    """Chat-page answers bypassed the API's gate and metrics; now both count into one registry and
    leave the same `question` line."""
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.usecases import run_ingest

    services.settings.llm.max_answer_tokens = 24
    run_ingest(services, [folder], "admin", "ingest", "cli")
    question = "Where does the build server Kestrel run?"
    with TestClient(create_app(services), base_url="http://127.0.0.1:7860") as client:
        r = client.post("/v1/chat/completions", json={"model": "rag-appliance",
                                                      "messages": [{"role": "user", "content": question}]})
        assert r.status_code == 200, r.text
        r = client.post("/gradio_api/call/respond", json={"data": [question, []]})
        assert r.status_code == 200, r.text
        stream = client.get(f"/gradio_api/call/respond/{r.json()['event_id']}").text
        assert "event: complete" in stream, stream[-500:]
        metrics = client.get("/metrics").text
    lines = audit_lines(services.settings.data_dir, "question")
    assert [e["channel"] for e in lines] == ["api", "ui"]
    assert {frozenset(e) for e in lines} == {frozenset(lines[0])}
    assert lines[0]["sources"] == lines[1]["sources"]
    answered = sum(float(x.rsplit(" ", 1)[1]) for x in metrics.splitlines()
                   if x.startswith("appliance_answers_total"))
    assert answered == 2
    assert services.answer_gate.running == 0
