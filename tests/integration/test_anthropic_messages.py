"""/v1/messages on a scripted model and a hash embedder (tests/fakes.py): Anthropic's wire format, fast.
The real model, server and the `anthropic` package are in tests/e2e/test_clients.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from tests.fakes import HashEmbedding, ScriptedLLM

QUESTION = "Where does the build server Kestrel run?"


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ScriptedLLM, Any]]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings
    from appliance.usecases import run_ingest

    tmp_path = tmp_path_factory.mktemp("messages")
    docs = tmp_path / "share"
    docs.mkdir()
    (docs / "kestrel.md").write_text("# Build server\n\nThe build server Kestrel runs in the basement of building B.\n")
    llm = ScriptedLLM()
    settings = load_settings(overrides={"data_dir": tmp_path / "data", "retrieval": {"min_similarity": 0.2}})
    services = build_services(settings, embedding=HashEmbedding(), llm=llm)
    run_ingest(services, [docs], "admin", "ingest", "cli")
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as c:
        yield c, llm, services
    services.close()


def test_a_message_is_answered_from_the_documents_with_sources(client: Any) -> None:
    c, llm, services = client
    llm.enqueue("Kestrel runs in the basement of building B [1].")
    r = c.post("/v1/messages", headers={"anthropic-version": "2023-06-01"}, json={
        "model": "rag-appliance", "max_tokens": 100, "system": [{"type": "text", "text": "ignored"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": QUESTION}]}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert {k: body[k] for k in ("type", "role", "model", "stop_reason", "stop_sequence")} == {
        "type": "message", "role": "assistant", "model": "rag-appliance", "stop_reason": "end_turn",
        "stop_sequence": None}
    assert body["id"].startswith("msg_")
    (block,) = body["content"]
    assert block["type"] == "text"
    assert block["text"].startswith("Kestrel runs in the basement of building B [1].\n\nSources:\n[1] kestrel.md")
    assert body["sources"][0]["file_name"] == "kestrel.md"
    assert body["grounded"] is True
    assert body["usage"]["output_tokens"] > 0
    assert "ignored" not in json.dumps([m.content for m in llm.prompts[-1]])  # the appliance's own prompt governs
    asked = services.audit.search(event="question")[0]  # newest first
    assert (asked["actor"], asked["channel"], asked["question"]) == ("local", "api", QUESTION)


def test_a_stream_is_anthropics_event_sequence(client: Any) -> None:
    c, llm, _ = client
    llm.enqueue("In the basement [1].")
    r = c.post("/v1/messages", json={"model": "rag-appliance", "max_tokens": 100, "stream": True,
                                     "sources_in_text": False, "messages": [{"role": "user", "content": QUESTION}]})
    assert r.status_code == 200
    blocks = [b for b in r.text.split("\n\n") if b.strip()]
    events = []
    for b in blocks:
        name, data = b.split("\n")
        assert name.startswith("event: ")
        events.append(json.loads(data.removeprefix("data: ")))
        assert events[-1]["type"] == name.removeprefix("event: ")
    kinds = [e["type"] for e in events]
    deltas = kinds.count("content_block_delta")
    assert kinds == ["message_start", "content_block_start", "ping", *["content_block_delta"] * deltas,
                     "content_block_stop", "message_delta", "message_stop"]
    text = "".join(e["delta"]["text"] for e in events if e["type"] == "content_block_delta")
    assert text == "In the basement [1]."  # sources_in_text: false
    assert events[-2]["delta"]["stop_reason"] == "end_turn"
    assert events[-2]["sources"][0]["file_name"] == "kestrel.md"


@pytest.mark.parametrize(("body", "status", "kind", "words"), [
    ({"model": "claude", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}, 404, "not_found_error",
     "does not exist"),
    ({"model": "rag-appliance", "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error",
     "max_tokens"),
    ({"model": "rag-appliance", "max_tokens": 5, "tools": [{"name": "x"}], "messages": [
        {"role": "user", "content": "hi"}]}, 400, "invalid_request_error", "tools are not supported"),
    ({"model": "rag-appliance", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "image", "source": {}}]}]}, 400, "invalid_request_error", "'image' content blocks"),
    ({"model": "rag-appliance", "max_tokens": 5, "system": [{"type": "document", "source": {}}],
      "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error", "'document' content blocks"),
    ({"model": "rag-appliance", "max_tokens": 5, "thinking": {"type": "enabled", "budget_tokens": 1024},
      "messages": [{"role": "user", "content": "hi"}]}, 400, "invalid_request_error", "thinking"),
    ({"model": "rag-appliance", "max_tokens": 5, "messages": [{"role": "user", "content": "x " * 4100}]}, 400,
     "invalid_request_error", "max_question_chars"),
])
def test_refusals_come_in_anthropics_shape(client: Any, body: dict[str, Any], status: int, kind: str,
                                           words: str) -> None:
    c, _, _ = client
    r = c.post("/v1/messages", json=body)
    assert r.status_code == status, r.text
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == kind
    assert words in r.json()["error"]["message"]


def test_other_routes_keep_openais_error_shape(client: Any) -> None:
    c, _, _ = client
    r = c.post("/v1/chat/completions", json={"model": "claude", "messages": [{"role": "user", "content": "hi"}]})
    assert r.status_code == 404
    assert r.json()["error"]["code"] == 404
    assert "type" not in r.json()
