"""The OpenAI-compatible embedding backend against a scripted /v1/embeddings on loopback: what it sends
(batches, prefixes, input_type, the key), what it makes of good answers (base64 or numbers, any order),
and the error it gives for every way a server can fail, naming the URL and the setting to fix.
The same backend against a real appliance is tests/e2e/test_embeddings_service.py."""

from __future__ import annotations

import base64
import json
import threading
import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from appliance.backends.common import BackendUnavailable
from appliance.backends.embeddings import OpenAIEmbedding
from appliance.settings import OpenAIEmbeddingSettings, load_settings
from tests.support.servers import free_port

DIM = 16


def _vector(text: str, dim: int = DIM) -> list[float]:
    v = [0.0] * dim
    for word in text.lower().split():
        v[zlib.crc32(word.encode()) % dim] += 2.0  # not normalised: the backend normalises
    return v


def good_reply(body: dict[str, Any]) -> tuple[int, Any]:
    """OpenAI's shape, base64 when asked, rows in reverse order (clients must follow `index`)."""
    data = []
    for i, text in enumerate(body["input"]):
        vec = _vector(text)
        emb: Any = base64.b64encode(np.asarray(vec, "<f4").tobytes()).decode() \
            if body.get("encoding_format") == "base64" else vec
        data.append({"object": "embedding", "index": i, "embedding": emb})
    return 200, {"object": "list", "data": data[::-1], "model": body["model"],
                 "usage": {"prompt_tokens": 1, "total_tokens": 1}}


@dataclass
class Fake:
    url: str
    reply: Callable[[dict[str, Any]], tuple[int, Any]] = good_reply
    requests: list[tuple[dict[str, Any], dict[str, str]]] = field(default_factory=list)


@pytest.fixture
def fake() -> Iterator[Fake]:
    holder: list[Fake] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            server = holder[0]
            server.requests.append((body, {k.lower(): v for k, v in self.headers.items()}))
            status, payload = server.reply(body)
            raw = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def log_message(self, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder.append(Fake(f"http://127.0.0.1:{httpd.server_address[1]}/v1"))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield holder[0]
    finally:
        httpd.shutdown()
        httpd.server_close()


def _embedder(url: str, **extra: Any) -> OpenAIEmbedding:
    fields = {"base_url": url, "model": "bge-m3", "max_retries": 0, **extra}
    return OpenAIEmbedding(OpenAIEmbeddingSettings(**fields))


def test_texts_go_in_batches_with_prefixes_and_come_back_normalised_in_order(fake: Fake) -> None:
    emb = _embedder(fake.url, batch_size=2, query_prefix="q: ", document_prefix="d: ", api_key="rag-0123456789abcdef")
    assert emb.dimension == DIM
    assert emb.dimension == DIM
    assert len(fake.requests) == 1  # probed once
    texts = ["alpha beta", "gamma", "", "delta epsilon", "zeta"]
    vectors = emb.embed(texts)
    assert vectors.shape == (5, DIM)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    for row, text in zip(vectors, texts, strict=True):  # the reversed rows were put back by index
        want = np.asarray(_vector("d: " + (text or " ")), np.float32)
        assert np.allclose(row, want / np.linalg.norm(want))
    calls = [body for body, _ in fake.requests[1:]]
    assert [c["input"] for c in calls] == [["d: alpha beta", "d: gamma"], ["d:  ", "d: delta epsilon"], ["d: zeta"]]
    assert all(c["model"] == "bge-m3" and c["encoding_format"] == "base64" for c in calls)
    assert all("input_type" not in c for c in calls)  # not sent unless asked: some servers refuse unknown fields
    assert fake.requests[-1][1]["authorization"] == "Bearer rag-0123456789abcdef"
    emb.get_query_embedding("how many bottles?")
    assert fake.requests[-1][0]["input"] == ["q: how many bottles?"]


def test_input_type_and_json_numbers_when_configured(fake: Fake) -> None:
    emb = _embedder(fake.url, send_input_type=True, encoding_format="float", parallel_requests=3, batch_size=1)
    vectors = emb.embed(["one", "two", "three", "four"])
    assert vectors.shape == (4, DIM)
    assert np.allclose(vectors[2], np.asarray(_vector("three")) / np.linalg.norm(_vector("three")))
    emb.get_query_embedding("question")
    bodies = [body for body, _ in fake.requests]
    assert {b["encoding_format"] for b in bodies} == {"float"}
    assert [b["input_type"] for b in bodies[:5]] == ["document"] * 5  # the probe, then four batches
    assert sorted(b["input"][0] for b in bodies[1:5]) == ["four", "one", "three", "two"]  # 3 in flight at once
    assert bodies[-1]["input_type"] == "query"


def test_the_api_key_may_be_read_from_a_file(fake: Fake, tmp_path: Path) -> None:
    secret = tmp_path / "embeddings-key"
    secret.write_text("rag-from-a-file-0123456789\n")
    settings = load_settings(None, {"data_dir": tmp_path / "data", "embeddings": {
        "provider": "openai", "base_url": fake.url, "model": "bge-m3", "api_key": f"file:{secret}"}})
    assert isinstance(settings.embeddings, OpenAIEmbeddingSettings)
    OpenAIEmbedding(settings.embeddings).embed(["text"])
    assert fake.requests[-1][1]["authorization"] == "Bearer rag-from-a-file-0123456789"


def test_an_unreachable_server_names_the_url_and_the_setting() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    expected = rf"cannot reach the embedding server at {url} \(embeddings\.base_url\)"
    with pytest.raises(BackendUnavailable, match=expected):
        _ = _embedder(url).dimension


@pytest.mark.parametrize(("status", "payload", "message"), [
    (401, {"error": {"message": "invalid or revoked API key"}}, r"refused embeddings.api_key \(HTTP 401\): invalid"),
    (404, {"error": {"message": "model 'bge-m3' does not exist"}}, r"no model 'bge-m3' .*fix embeddings.model"),
    (503, {"error": {"message": "busy"}}, r"HTTP 503: busy"),
    (200, b"<html>a login page</html>", r"not OpenAI's embeddings list .*embeddings.base_url"),
    (200, {"data": [{"index": 0, "embedding": [0.1, "x"]}]}, r"neither a list of numbers nor base64"),
    (200, {"data": [{"index": 0, "embedding": "!!notbase64"}]}, r"not base64 float32"),
    (200, {"object": "list", "data": []}, r"0 embeddings for 1 texts"),
    (200, {"data": [{"index": 0, "embedding": [float("nan")] * 4}]}, r"non-finite"),
])
def test_a_failing_or_strange_server_is_a_clear_error(fake: Fake, status: int, payload: Any, message: str) -> None:
    fake.reply = lambda body: (status, payload)
    with pytest.raises(BackendUnavailable, match=message) as caught:
        _embedder(fake.url).embed(["text"])
    assert fake.url in str(caught.value)


def test_vectors_of_another_size_than_the_probe_or_the_setting_are_refused(fake: Fake) -> None:
    emb = _embedder(fake.url)
    assert emb.dimension == DIM
    fake.reply = lambda body: (200, {"data": [{"index": i, "embedding": [1.0] * 8} for i in range(len(body["input"]))]})
    with pytest.raises(BackendUnavailable, match=r"returned 8-dimension vectors, but 'bge-m3' gave 16 when probed"):
        emb.embed(["a", "b"])
    with pytest.raises(BackendUnavailable, match=r"returns 8-dimension vectors .* embeddings.dimension says 1024"):
        _ = _embedder(fake.url, dimension=1024).dimension


def test_a_server_slower_than_the_timeout_names_the_setting(fake: Fake) -> None:
    def slow(body: dict[str, Any]) -> tuple[int, Any]:
        time.sleep(1.5)
        return good_reply(body)

    fake.reply = slow
    with pytest.raises(BackendUnavailable, match=r"did not answer within embeddings.timeout_s \(0.3 s\)"):
        _embedder(fake.url, timeout_s=0.3).embed(["text"])


def test_doctor_reports_the_remote_embedder_and_its_endpoint(fake: Fake, data_dir: Path) -> None:
    from appliance.ops.doctor import run_checks
    from tests.conftest import make_services

    services = make_services(data_dir, embeddings={"provider": "openai", "base_url": fake.url, "model": "bge-m3",
                                                   "max_retries": 0})
    try:
        checks = {c.name: c for c in run_checks(services)}
    finally:
        services.close()
    assert checks["embedding model"].status == "ok"
    assert checks["embedding model"].detail == (f"bge-m3 at {fake.url} (batches of 64, 1 at a time): embedded a "
                                                f"test text, {DIM} dimensions")
    assert "embeddings.base_url 127.0.0.1 (loopback)" in checks["remote endpoints"].detail

    down = make_services(data_dir / "down", embeddings={"provider": "openai", "base_url": "http://127.0.0.1:9/v1",
                                                        "model": "bge-m3", "max_retries": 0})
    try:
        checks = {c.name: c for c in run_checks(down)}
    finally:
        down.close()
    assert checks["embedding model"].status == "fail"
    assert "cannot reach the embedding server at http://127.0.0.1:9/v1" in checks["embedding model"].detail
    assert "embeddings.base_url" in checks["embedding model"].fix
