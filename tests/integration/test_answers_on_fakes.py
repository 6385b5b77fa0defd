"""The answer path of /v1 and the page on a scripted model and a hash embedder (tests/fakes.py): fast,
deterministic checks of what the model is given and what the caller gets back. The real model and
embedder answer the same questions in tests/e2e."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import HashEmbedding, ScriptedLLM


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Any, ScriptedLLM]]:
    from appliance.services import build_services
    from appliance.settings import load_settings
    from appliance.usecases import run_ingest

    docs = tmp_path / "share"
    docs.mkdir()
    (docs / "kestrel.md").write_text("# Build server\n\nThe build server Kestrel runs in the basement of building B.\n")
    (docs / "coffee.md").write_text("# Coffee\n\nThe coffee machine is on the second floor, next to the printers.\n")
    llm = ScriptedLLM()
    settings = load_settings(overrides={"data_dir": tmp_path / "data", "retrieval": {"min_similarity": 0.2}})
    services = build_services(settings, embedding=HashEmbedding(), llm=llm)
    run_ingest(services, [docs], "admin", "ingest", "cli")
    yield services, llm
    services.close()


def test_the_model_is_given_the_passages_and_the_caller_gets_the_scripted_answer_with_sources(site: Any) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    services, llm = site
    llm.enqueue("Kestrel runs in the basement of building B [1].")
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
        r = client.post("/v1/chat/completions", json={"model": "rag-appliance", "messages": [
            {"role": "user", "content": "Where does the build server Kestrel run?"}]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"].startswith("Kestrel runs in the basement of building B [1].")
    assert body["grounded"]
    assert body["sources"][0]["file_name"] == "kestrel.md"
    (prompt,) = llm.prompts
    assert "The build server Kestrel runs in the basement" in prompt[-1].content
    assert "Where does the build server Kestrel run?" in prompt[-1].content


def test_a_follow_up_is_searched_with_the_question_before_it(site: Any) -> None:
    from appliance.access.auth import LOCAL
    from appliance.rag import Answer
    from appliance.usecases import answer

    services, llm = site
    llm.enqueue("On the second floor [1].")
    events = list(answer(services, LOCAL, "and the coffee machine?",
                         [("Where does the build server Kestrel run?", "In the basement [1].")], "ui"))
    final = events[-1]
    assert isinstance(final, Answer)
    assert final.query == "Where does the build server Kestrel run? and the coffee machine?"
    assert any(s.file_name == "coffee.md" for s in final.sources)
