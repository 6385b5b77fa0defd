"""`unsupported` and `match` on /v1/chat/completions, on a scripted model and a hash embedder
(tests/fakes.py): what a client gets when the answer states a figure its passage does not."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes import ScriptedLLM, water_memo_services


@pytest.fixture
def site(tmp_path: Path) -> Iterator[tuple[Any, ScriptedLLM]]:
    services, llm = water_memo_services(tmp_path)
    yield services, llm
    services.close()


def test_a_figure_the_passage_does_not_state_comes_back_flagged_streamed_or_not(site: Any) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    services, llm = site
    wrong = "The memo says 21,000 bottles of water were delivered on 3 March 2024 [1]."
    llm.enqueue(wrong, wrong)
    body = {"model": "rag-appliance", "messages": [{"role": "user", "content": "How many bottles of water?"}]}
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
        whole = client.post("/v1/chat/completions", json=body).json()
        streamed = client.post("/v1/chat/completions", json={**body, "stream": True}).text
    assert (whole["grounded"], whole["match"], whole["unsupported"]) == (True, "strong", ["21,000"])
    text = whole["choices"][0]["message"]["content"]
    assert text.startswith(wrong)  # the answer itself is not changed
    assert text.endswith("\nNot found in the sources: 21,000")
    assert "Weak match" not in text
    last = [json.loads(line[6:]) for line in streamed.splitlines() if '"finish_reason": "stop"' in line]
    assert (last[0]["grounded"], last[0]["match"], last[0]["unsupported"]) == (True, "strong", ["21,000"])
