"""`appliance ask` handed over to a running server (POST /v1/admin/ask): the answer use case runs there,
streamed token by token, with the audit line of the command's own process (the OS user, channel
`cli`); the door opens to the server.json token from this machine only. A scripted model and a hash
embedder (tests/fakes.py); the real `serve` beside the real CLI is tests/e2e/test_cli_while_serving.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import ScriptedLLM, water_memo_services

TOKEN = "the-token-of-server-json"
ACTOR = {"x-appliance-actor": "cli:operator"}
REPLY = "The memo says 20,000 bottles of water were delivered [1]."


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Any, ScriptedLLM, Any]]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    services, llm = water_memo_services(tmp_path)
    app = create_app(services, ui=False)
    app.state.appliance.admin_token = TOKEN  # as serve sets it when it writes server.json
    with TestClient(app, base_url="http://127.0.0.1:7860") as client:
        yield services, llm, client
    services.close()


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def _audit(services: Any, event: str) -> list[dict[str, Any]]:
    return [e for e in services.audit.entries() if e["event"] == event]


def test_a_handed_over_question_streams_the_answer_of_the_same_use_case_with_the_clis_audit_line(site: Any) -> None:
    from appliance.access.auth import Principal
    from appliance.cli.handover import answer_from_record
    from appliance.rag import Answer
    from appliance.usecases import answer

    services, llm, client = site
    llm.enqueue(REPLY, REPLY)
    r = client.post("/v1/admin/ask", json={"question": "How many bottles of water?"},
                    headers={"authorization": f"Bearer {TOKEN}", **ACTOR})
    assert r.status_code == 200, r.text
    events = _events(r.text)
    tokens = [e["text"] for e in events if e["event"] == "token"]
    assert len(tokens) > 1  # streamed as written, not in one piece
    assert "".join(tokens) == REPLY
    assert [e["event"] for e in events][-1] == "answer"
    record = events[-1]["answer"]
    # The same act in the command's own process gives the same record, and the CLI rebuilds it whole.
    *_, here = list(answer(services, Principal("cli:operator", "local", None, True), "How many bottles of water?",
                           [], "cli"))
    assert isinstance(here, Answer)
    assert record == here.to_dict()
    assert answer_from_record(record, "How many bottles of water?").to_dict() == record
    handed, own = _audit(services, "question")
    assert {k: v for k, v in handed.items() if k not in ("ts", "prev", "hash")} == \
           {k: v for k, v in own.items() if k not in ("ts", "prev", "hash")}
    assert (handed["actor"], handed["channel"]) == ("cli:operator", "cli")


def test_the_handed_over_question_keeps_the_clis_scope_user_and_refusals(site: Any) -> None:
    services, _llm, client = site
    bearer = {"authorization": f"Bearer {TOKEN}", **ACTOR}
    services.users.add("alice", "a long enough passphrase 7", ["finance"])
    r = client.post("/v1/admin/ask", json={"question": "bottles?", "as_user": "nobody"}, headers=bearer)
    assert (r.status_code, r.json()["error"]["message"]) == (404, "no user named 'nobody' (`appliance users list`)")
    r = client.post("/v1/admin/ask", json={"question": "word " * 5000}, headers=bearer)
    assert r.status_code == 400
    assert "retrieval.max_question_chars" in r.json()["error"]["message"]
    r = client.post("/v1/admin/ask", json={"question": "bottles?", "since": "yesterday"}, headers=bearer)
    assert r.status_code == 400
    r = client.post("/v1/admin/ask", json={"question": "How many bottles of water?", "within": ["/nowhere"]},
                    headers=bearer)
    assert r.status_code == 200
    assert _events(r.text)[-1]["answer"]["sources"] == []  # nothing in that scope, never searched elsewhere
    r = client.post("/v1/admin/ask", json={"question": "How many bottles of water?", "as_user": "alice"},
                    headers=bearer)
    assert _events(r.text)[-1]["answer"]["sources"][0]["file_name"] == "memo.md"  # alice reads `everyone`'s
    assert [e["actor"] for e in _audit(services, "question")] == ["cli:operator"] * 2


def test_the_hand_over_door_opens_only_to_the_local_token(site: Any) -> None:
    services, llm, client = site
    body = {"question": "How many bottles of water?"}
    refused = [{}, {"authorization": "Bearer wrong"}, {"x-api-key": TOKEN},
               {"authorization": f"Bearer {TOKEN}", "x-forwarded-for": "10.0.0.9"},
               {"authorization": f"Bearer {TOKEN}", "x-real-ip": "127.0.0.1"}]
    for headers in refused:
        for path, payload in (("/v1/admin/ask", body), ("/v1/admin/ingest", {"paths": ["/tmp"]}),
                              ("/v1/admin/ingest/cancel", None)):
            r = client.post(path, json=payload, headers=headers)
            assert r.status_code in (401, 403), (path, headers, r.status_code)
    app_state = client.app.state.appliance
    app_state.admin_token = None  # no server.json written (serve not started through the CLI): no door at all
    assert client.post("/v1/admin/ask", json=body, headers={"authorization": f"Bearer {TOKEN}"}).status_code == 401
    assert llm.prompts == []
    assert _audit(services, "question") == []


def test_acl_apply_handed_over_is_recorded_as_the_cli_records_it(site: Any) -> None:
    services, _llm, client = site
    r = client.post("/v1/admin/acl/apply", headers={"authorization": f"Bearer {TOKEN}", **ACTOR})
    assert r.status_code == 200, r.text
    (line,) = _audit(services, "permissions")
    assert (line["actor"], line["via"]) == ("cli:operator", "cli")
