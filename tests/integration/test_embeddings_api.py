"""POST /v1/embeddings with the real embedded model, in-process (TestClient): OpenAI's shape (the `openai`
package reads it), the exact vectors the appliance computes itself, and the door's guards: API keys,
the per-key rate limit, the caps on texts and their length, the audit line, the busy gate."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import openai
import pytest

from tests.conftest import SAMPLES
from tests.fakes import HashEmbedding

MODEL = "all-MiniLM-L6-v2-int8"
BASE = "http://127.0.0.1:7860"


@dataclass
class Site:
    services: Any
    client: Any
    key: str

    def post(self, body: dict[str, Any], key: str | None = None) -> Any:
        headers = {"Authorization": f"Bearer {key or self.key}"} if key != "" else {}
        return self.client.post("/v1/embeddings", json=body, headers=headers)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings

    settings = load_settings(overrides={
        "data_dir": tmp_path_factory.mktemp("embeddings-api") / "data", "server": {"require_api_key": True},
        "auth": {"requests_per_minute": 40}, "embeddings": {"serve_max_inputs": 8, "serve_max_input_chars": 500}})
    services = build_services(settings)
    key = services.api_keys.create("ingest-machine")
    with TestClient(create_app(services, ui=False), base_url=BASE) as client:
        yield Site(services, client, key)
    services.close()


def test_a_key_is_required(site: Site) -> None:
    body = {"model": MODEL, "input": "text"}
    for key in ("", "rag-not-a-key"):
        r = site.post(body, key=key)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"


def test_the_openai_package_gets_exactly_the_vectors_computed_in_process(site: Site) -> None:
    texts = [(SAMPLES / "rust-book-installation.md").read_text()[:400], "How do I install Rust?", "", "Grüße 東京"]
    client = openai.OpenAI(base_url=BASE + "/v1", api_key=site.key, http_client=site.client, max_retries=0)
    reply = client.embeddings.create(model=MODEL, input=texts)  # the package asks for base64 and decodes it
    assert reply.model == MODEL
    assert [d.index for d in reply.data] == [0, 1, 2, 3]
    got = np.asarray([d.embedding for d in reply.data], dtype=np.float32)
    assert np.array_equal(got, site.services.embedding.embed(texts))
    assert reply.usage.prompt_tokens == reply.usage.total_tokens == site.services.embedding.count_tokens(texts)

    floats = site.post({"model": MODEL, "input": texts[1], "encoding_format": "float"}).json()
    assert floats["object"] == "list"
    assert floats["data"][0]["object"] == "embedding"
    assert np.array_equal(np.asarray(floats["data"][0]["embedding"], np.float32), got[1])  # JSON numbers are exact
    packed = site.post({"model": MODEL, "input": [texts[1]], "encoding_format": "base64", "input_type": "query",
                        "user": "someone"}).json()
    assert np.array_equal(np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), "<f4"), got[1])
    assert site.post({"model": "rag-appliance", "input": "x"}).status_code == 200  # the name /v1/models lists


@pytest.mark.parametrize(("body", "status", "message"), [
    ({"input": ["a"] * 9}, 413, r"9 texts in one request; at most 8 \(embeddings.serve_max_inputs\)"),
    ({"input": ["short", "x" * 501]}, 413, r"input\[1\] has 501 characters; at most 500 \(embeddings.serve_max_input"),
    ({"input": []}, 400, r"input is empty"),
    ({"input": [[101, 2023]]}, 422, r"input"),
    ({"input": "a", "model": "gpt-4o"}, 404, rf"model 'gpt-4o' does not exist: this server embeds with '{MODEL}'"),
    ({"input": "a", "dimensions": 256}, 400, r"384-dimension vectors only"),
    ({"input": "a", "input_type": "clustering"}, 422, r"input_type"),
    ({"input": "a", "encoding_format": "int8"}, 422, r"encoding_format"),
])
def test_requests_beyond_the_limits_are_refused_with_the_setting_named(site: Site, body: dict[str, Any], status: int,
                                                                      message: str) -> None:
    r = site.post({"model": MODEL, **body})
    assert r.status_code == status, r.text
    assert re.search(message, r.json()["error"]["message"]), r.json()


def test_a_body_over_the_request_cap_is_refused_before_it_is_read(site: Site) -> None:
    big = json.dumps({"model": MODEL, "input": ["word " * 90] * 2400})  # ~1.1 MB of JSON
    r = site.client.post("/v1/embeddings", content=big, headers={"Authorization": f"Bearer {site.key}",
                                                                    "content-type": "application/json"})
    assert r.status_code == 413
    assert "server.max_request_kb" in r.json()["error"]["message"]


def test_each_call_is_audited_without_its_text(site: Site) -> None:
    site.post({"model": MODEL, "input": ["a secret sentence", "another"], "input_type": "query"})
    lines = [json.loads(line) for line in (site.services.settings.audit_dir / "audit.jsonl").read_text().splitlines()]
    mine = [entry for entry in lines if entry["event"] == "embeddings"][-1]
    assert mine["actor"] == "key:ingest-machine"
    assert (mine["inputs"], mine["chars"], mine["input_type"], mine["via"]) == (2, 24, "query", "api")
    assert not any("a secret sentence" in json.dumps(entry) for entry in lines)
    assert any(e["event"] == "api_key" and e.get("route") == "/v1/embeddings" for e in lines)


def test_one_key_is_held_to_the_request_rate(site: Site) -> None:
    key = site.services.api_keys.create("greedy")
    codes = [site.post({"model": MODEL, "input": "x"}, key=key).status_code for _ in range(42)]
    assert codes[:40] == [200] * 40
    assert codes[40:] == [429, 429]
    assert site.post({"model": MODEL, "input": "x"}).status_code == 200  # other keys still get through


class PrefixedEmbedding(HashEmbedding):
    """A model with a query prefix, slow enough to queue requests."""

    delay: float = 0.0

    def embed(self, texts: list[str]) -> np.ndarray:
        time.sleep(self.delay)
        return super().embed(texts)

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return self.embed(["query " + q for q in queries])


@pytest.fixture
def prefixed(tmp_path: Any) -> Iterator[tuple[Any, PrefixedEmbedding]]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings

    model = PrefixedEmbedding()
    services = build_services(load_settings(overrides={"data_dir": tmp_path / "data"}), embedding=model)
    with TestClient(create_app(services, ui=False), base_url=BASE) as client:
        yield client, model
    services.close()


def test_input_type_chooses_the_models_query_or_document_embedding(prefixed: tuple[Any, PrefixedEmbedding]) -> None:
    client, model = prefixed

    def vector(input_type: str | None) -> np.ndarray:
        body = {"model": "hash-64", "input": ["bottles water"], **({"input_type": input_type} if input_type else {})}
        return np.asarray(client.post("/v1/embeddings", json=body).json()["data"][0]["embedding"], np.float32)

    assert np.allclose(vector("document"), model.embed(["bottles water"])[0])
    assert np.allclose(vector(None), vector("document"))  # ingestion's default
    assert np.allclose(vector("query"), model.embed_query("bottles water"))
    assert not np.allclose(vector("query"), vector("document"))


def test_requests_wait_their_turn_and_too_many_waiting_are_told_busy(prefixed: tuple[Any, PrefixedEmbedding]) -> None:
    client, model = prefixed
    model.delay = 0.8
    codes: list[int] = []
    lock = threading.Lock()
    together = threading.Barrier(12)

    def one() -> None:
        together.wait()
        r = client.post("/v1/embeddings", json={"model": "hash-64", "input": "x"})
        with lock:
            codes.append(r.status_code)

    threads = [threading.Thread(target=one) for _ in range(12)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # embeddings.serve_parallel: 1 runs, 8 wait their turn, the other 3 are refused at once
    assert sorted(codes) == [200] * 9 + [503] * 3
    assert time.monotonic() - started >= 9 * 0.8


def test_the_route_is_absent_when_not_served(tmp_path: Any) -> None:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings

    services = build_services(load_settings(overrides={"data_dir": tmp_path / "data",
                                                       "embeddings": {"serve": False}}), embedding=HashEmbedding())
    try:
        with TestClient(create_app(services, ui=False), base_url=BASE) as client:
            assert client.post("/v1/embeddings", json={"model": "hash-64", "input": "x"}).status_code == 404
    finally:
        services.close()
