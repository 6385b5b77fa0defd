"""Prompt tokens of remote chat models: the server's tokenize endpoint, else a local tokenizer.json, else
the estimate; probed once, cached, and never holding up an answer (appliance/backends/tokens.py).

The tokenizer is a real `tokenizers` WordLevel model built here; the servers are small loopback HTTP
servers that answer each kind's tokenize request the way vLLM, llama.cpp and llama-cpp-python do."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from tokenizers import Tokenizer
from tokenizers.models import WordLevel
from tokenizers.pre_tokenizers import Whitespace
from tokenizers.processors import TemplateProcessing

from appliance.backends import tokens
from appliance.backends.common import BackendUnavailable
from appliance.backends.llm import OllamaLLM, OpenAICompatibleLLM
from appliance.backends.tokens import LocalTokenizer, ServerTokenizer, TokenCounter, estimate_tokens
from appliance.settings import OllamaLLMSettings, OpenAILLMSettings

PASSAGE = "The warehouse received 20,000 bottles of water and 500 blankets on Monday."


@pytest.fixture
def tokenizer_file(tmp_path: Path) -> Path:
    """A word-level tokenizer.json with a BOS template, as a model repository ships one (no download)."""
    vocab = {"[UNK]": 0, "<s>": 1}
    for word in ("the", "warehouse", "received", "bottles", "of", "water", "and", "blankets", "on", "monday"):
        vocab[word] = len(vocab)
    tokenizer = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tokenizer.pre_tokenizer = Whitespace()
    tokenizer.post_processor = TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    path = tmp_path / "tokenizer.json"
    tokenizer.save(str(path))
    return path


def words(text: str) -> int:
    """What the fake servers count: one token per whitespace-separated word."""
    return len(text.split())


@dataclass
class FakeServer:
    """A loopback server speaking one kind's tokenize dialect; records each request's path and body."""

    kind: str
    delay_s: float = 0.0  # applied after the probe: a server that stops answering in time
    requests: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    authorization: set[str] = field(default_factory=set)
    url: str = ""

    def answer(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if self.kind == "vllm" and path == "/tokenize":
            if "prompt" not in body:  # vLLM validates the request
                return 400, {"object": "error", "message": "Field required: prompt"}
            n = words(body["prompt"])
            return 200, {"count": n, "max_model_len": 32768, "tokens": list(range(n))}
        if self.kind == "llama.cpp" and path == "/tokenize":
            return 200, {"tokens": list(range(words(body.get("content", ""))))}  # no content: no tokens
        if self.kind == "llama-cpp-python" and path == "/extras/tokenize/count":
            return 200, {"count": words(body["input"])}
        if self.kind == "broken" and path == "/tokenize":
            return 500, {"error": "internal"}
        return 404, {"detail": "Not Found"}


@pytest.fixture
def serve() -> Iterator[Callable[..., FakeServer]]:
    servers: list[ThreadingHTTPServer] = []

    def start(kind: str, delay_s: float = 0.0, port: int = 0) -> FakeServer:
        fake = FakeServer(kind, delay_s)

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("content-length", 0))) or b"{}")
                probed = len(fake.requests) > 0
                fake.requests.append((self.path, body))
                fake.authorization.add(self.headers.get("authorization", ""))
                if probed and fake.delay_s:
                    time.sleep(fake.delay_s)
                status, reply = fake.answer(self.path, body)
                payload = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        fake.url = f"http://127.0.0.1:{server.server_address[1]}"
        return fake

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def counter(fake: FakeServer, local: LocalTokenizer | None = None, **kwargs: Any) -> TokenCounter:
    return TokenCounter(ServerTokenizer(fake.url, "served-model", timeout_s=0.3), local, **kwargs)


def test_a_local_tokenizer_json_counts_the_models_tokens_without_bos(tokenizer_file: Path) -> None:
    local = LocalTokenizer(tokenizer_file)
    with_bos = Tokenizer.from_file(str(tokenizer_file)).encode(PASSAGE)
    assert with_bos.tokens[0] == "<s>"
    assert local.count(PASSAGE) == len(with_bos.ids) - 1 == 15  # 12 words, "20", ",", "000" and "." split
    assert TokenCounter(local=local).count(PASSAGE) == 15
    assert estimate_tokens(PASSAGE) == 25  # what the old estimate spent of the context on the same text


def test_a_tokenizer_json_made_to_truncate_or_pad_still_counts_every_token(tmp_path: Path,
                                                                          tokenizer_file: Path) -> None:
    tokenizer = Tokenizer.from_file(str(tokenizer_file))
    tokenizer.enable_truncation(max_length=4)
    tokenizer.enable_padding(length=64)
    tokenizer.save(str(tmp_path / "encoder.json"))
    assert len(Tokenizer.from_file(str(tmp_path / "encoder.json")).encode(PASSAGE).ids) == 64
    assert LocalTokenizer(tmp_path / "encoder.json").count(PASSAGE) == 15


@pytest.mark.parametrize(("kind", "named"), [
    ("vllm", "vLLM POST /tokenize"),
    ("llama.cpp", "llama.cpp POST /tokenize"),
    ("llama-cpp-python", "llama-cpp-python POST /extras/tokenize/count"),
])
def test_each_kind_of_server_is_recognised_by_one_probe(serve: Callable[..., FakeServer], kind: str,
                                                        named: str) -> None:
    fake = serve(kind)
    count = counter(fake)
    assert count.count(PASSAGE) == words(PASSAGE)
    assert count.describe() == f"the server's tokenizer ({named})"
    probes = len(fake.requests) - 1
    assert count.count("Question: how many blankets?") == 4
    assert len(fake.requests) == probes + 2, "no second probe: one request per text from then on"
    sent = fake.requests[-1][1]
    if kind == "vllm":
        assert sent == {"model": "served-model", "prompt": "Question: how many blankets?", "add_special_tokens": False}
    elif kind == "llama.cpp":
        assert sent == {"content": "Question: how many blankets?", "add_special": False}


def test_counts_are_cached_per_text_in_a_bounded_cache(serve: Callable[..., FakeServer]) -> None:
    fake = serve("vllm")
    count = counter(fake, cache_size=2)
    system = "Answer from the passages. Cite them."
    for _ in range(5):  # the RAG engine counts the system prompt for every question
        assert count.count(system) == 6
    assert len(fake.requests) == 2  # the probe, then the system prompt once
    count.count("one")
    count.count("two")  # the cache holds two texts: the system prompt is dropped, the oldest
    count.count(system)
    assert [body["prompt"] for _, body in fake.requests[1:]] == [system, "one", "two", system]
    assert count.count("") == 0
    assert len(fake.requests) == 5, "the empty text costs no request"


def test_a_server_without_tokenize_is_probed_once_then_the_file_counts(serve: Callable[..., FakeServer],
                                                                       tokenizer_file: Path) -> None:
    fake = serve("none")
    count = counter(fake, LocalTokenizer(tokenizer_file))
    assert count.count(PASSAGE) == 15
    probes = len(fake.requests)
    assert probes == 3  # each dialect once
    assert count.count("bottles of water") == 3
    assert count.describe() == f"tokenizer {tokenizer_file}"
    assert len(fake.requests) == probes, "not available is remembered"


def test_without_a_tokenizer_the_estimate_remains(serve: Callable[..., FakeServer]) -> None:
    count = counter(serve("none"))
    assert count.count(PASSAGE) == estimate_tokens(PASSAGE)
    assert count.describe().startswith("estimated at 3 bytes a token")


def test_a_hung_tokenize_call_falls_back_at_once_and_rests(serve: Callable[..., FakeServer], tokenizer_file: Path,
                                                           caplog: pytest.LogCaptureFixture,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "RETRY_AFTER_S", 0.6)
    fake = serve("vllm", delay_s=2.0)
    count = counter(fake, LocalTokenizer(tokenizer_file))  # tokenize timeout 0.3 s
    caplog.set_level(logging.INFO, logger="appliance.backends.tokens")
    started = time.monotonic()
    assert count.count(PASSAGE) == 15  # the server did not answer in time: the file counted
    assert time.monotonic() - started < 0.6
    asked = len(fake.requests)
    for text in ("one", "two", "three"):
        assert count.count(text) == 1
    assert len(fake.requests) == asked, "resting: the server is not asked again at once"
    assert len([r for r in caplog.records if r.levelno == logging.WARNING]) == 1, "logged once"
    fake.delay_s = 0.0
    time.sleep(0.6)  # the rest is over
    assert count.count("the server answers again") == 4
    assert len(fake.requests) == asked + 1


def test_an_unreachable_server_gives_the_estimate_and_is_probed_again_later(
        serve: Callable[..., FakeServer], monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.support.servers import free_port

    monkeypatch.setattr(tokens, "RETRY_AFTER_S", 0.2)
    port = free_port()
    count = TokenCounter(ServerTokenizer(f"http://127.0.0.1:{port}", "m", timeout_s=0.3))
    assert count.count(PASSAGE) == estimate_tokens(PASSAGE)  # refused: not cached, not taken for "no endpoint"
    serve("llama.cpp", port=port)  # the server comes up
    time.sleep(0.25)
    assert count.count(PASSAGE) == words(PASSAGE)


def test_a_server_error_during_the_probe_is_not_taken_for_no_endpoint(serve: Callable[..., FakeServer],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tokens, "RETRY_AFTER_S", 0.0)
    fake = serve("broken")
    count = counter(fake)
    assert count.count(PASSAGE) == estimate_tokens(PASSAGE)
    assert count.count(PASSAGE) == estimate_tokens(PASSAGE)
    assert len(fake.requests) == 2, "a 500 stops the probe, and the next count probes again"


def test_the_backends_count_with_the_configured_tokenizer_file(serve: Callable[..., FakeServer],
                                                              tokenizer_file: Path) -> None:
    ollama = OllamaLLM(OllamaLLMSettings(model="m", tokenizer_file=tokenizer_file))
    assert ollama.count_tokens(PASSAGE) == 15  # no request: Ollama serves no tokenizer
    fake = serve("none")
    openai = OpenAICompatibleLLM(OpenAILLMSettings(base_url=f"{fake.url}/v1", model="m",
                                                   tokenizer_file=tokenizer_file))
    assert openai.count_tokens(PASSAGE) == 15
    assert {path for path, _ in fake.requests} == {"/tokenize", "/extras/tokenize/count"}  # under the root
    vllm = serve("vllm")
    openai = OpenAICompatibleLLM(OpenAILLMSettings(base_url=f"{vllm.url}/v1/", model="m", api_key="sk-test",
                                                   tokenizer_file=tokenizer_file))
    assert openai.count_tokens(PASSAGE) == words(PASSAGE)
    assert vllm.authorization == {"Bearer sk-test"}


def test_a_missing_or_broken_tokenizer_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackendUnavailable, match=r"llm\.tokenizer_file not found"):
        OllamaLLM(OllamaLLMSettings(model="m", tokenizer_file=tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(BackendUnavailable, match=r"is not a tokenizer\.json"):
        LocalTokenizer(tmp_path / "bad.json")
