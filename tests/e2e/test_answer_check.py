"""Answers checked against their sources, with the real parts: the memo sample ingested by the real parser
and embedder, answered by the real small model, through `appliance ask` and the OpenAI-compatible API."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLES, make_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WATER = "How many bottles of water were delivered?"


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=ROOT)


def test_ask_flags_no_figure_the_memo_states_and_flags_a_changed_one(tmp_path: Path) -> None:
    from appliance.answer_check import unsupported_claims
    from appliance.rag import Source

    data = str(tmp_path / "data")
    assert _cli("ingest", str(SAMPLES / "fake-memo.pdf"), "--data-dir", data).returncode == 0
    proc = _cli("ask", "--json", WATER, "--data-dir", data)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["grounded"] is True
    assert answer["match"] in ("strong", "weak")
    assert "20,000" in answer["answer"]  # the memo's figure, as tests/e2e/test_ingest_ask.py checks
    assert not any("20,000" in claim for claim in answer["unsupported"]), answer
    assert all(claim in answer["answer"] for claim in answer["unsupported"])  # as written in the answer
    # The same answer and passages with one digit changed: the check finds it.
    sources = [Source.from_dict(s) for s in answer["sources"]]
    assert "20,500" in unsupported_claims(answer["answer"].replace("20,000", "20,500"), sources)
    # The plain output says so in one line when there is something to say (the model is greedy: same answer).
    plain = _cli("ask", WATER, "--data-dir", data)
    assert plain.returncode == 0, plain.stderr
    assert ("Not found in the sources: " in plain.stdout) == bool(answer["unsupported"])
    assert ("Weak match" in plain.stdout) == (answer["match"] == "weak")


def test_the_chat_api_carries_match_and_unsupported_streamed_or_not(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app

    docs = tmp_path / "docs"
    docs.mkdir()
    shutil.copy(SAMPLES / "fake-memo.pdf", docs)
    # A strong bar no passage reaches: every answer falls in the weak band.
    services = make_services(tmp_path / "data", retrieval={"strong_similarity": 0.99})
    try:
        services.ingest_pipeline.run([docs])
        body: dict[str, Any] = {"model": "rag-appliance", "messages": [{"role": "user", "content": WATER}]}
        with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
            whole = client.post("/v1/chat/completions", json=body)
            streamed = client.post("/v1/chat/completions", json={**body, "stream": True})
    finally:
        services.close()
    assert whole.status_code == 200, whole.text
    done = whole.json()
    assert (done["grounded"], done["match"]) == (True, "weak")
    assert isinstance(done["unsupported"], list)
    text = done["choices"][0]["message"]["content"]
    assert "Weak match" in text
    assert "\n\nSources:\n[1] fake-memo.pdf" in text
    events = [json.loads(line[6:]) for line in streamed.text.splitlines()
              if line.startswith("data: {") and '"finish_reason": "stop"' in line]
    assert len(events) == 1
    assert (events[0]["grounded"], events[0]["match"], events[0]["unsupported"]) == (True, "weak",
                                                                                     done["unsupported"])
