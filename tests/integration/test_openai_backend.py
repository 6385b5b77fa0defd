"""The OpenAI-compatible backend against a real server: llama-cpp-python's `llama_cpp.server`
running the shipped GGUF model on loopback (the same API vLLM, SGLang and NIM serve)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from llama_index.core.llms import ChatMessage, MessageRole

from appliance.backends.common import BackendUnavailable
from appliance.backends.llm import OpenAICompatibleLLM
from appliance.settings import OpenAILLMSettings
from tests.conftest import SAMPLES, make_services
from tests.support.servers import free_port, llama_cpp_openai_server

pytest.importorskip("sse_starlette", reason="llama-cpp-python's server extra is not installed (pip install '.[test]')")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with llama_cpp_openai_server(tmp_path_factory.mktemp("llama-server") / "server.log") as url:
        yield url


def _llm(base_url: str, **extra: object) -> OpenAICompatibleLLM:
    fields = {"base_url": base_url, "model": "smollm2", "context_window": 2048, "max_answer_tokens": 24,
              "temperature": 0.0, **extra}
    return OpenAICompatibleLLM(OpenAILLMSettings(**fields))  # type: ignore[arg-type]


QUESTION = [ChatMessage(role=MessageRole.SYSTEM, content="Answer briefly."),
            ChatMessage(role=MessageRole.USER, content="What is the capital of France?")]


def test_start_up_check_names_the_served_model(base_url: str) -> None:
    assert "smollm2" in _llm(base_url).check()
    with pytest.raises(BackendUnavailable, match="serves smollm2, not 'mistral-small-4'"):
        _llm(base_url, model="mistral-small-4").check()


def test_streaming_and_non_streaming_chat(base_url: str) -> None:
    llm = _llm(base_url)
    deltas = [c.delta for c in llm.stream_chat(QUESTION)]
    assert len(deltas) > 1, "a streamed answer arrives in several pieces"
    streamed = "".join(d or "" for d in deltas)
    assert "Paris" in streamed
    # temperature 0 and the same prompt: the non-streamed answer is the same text
    assert llm.chat(QUESTION).message.content == streamed


def test_prompt_tokens_are_counted_by_the_servers_own_tokenizer(base_url: str) -> None:
    from llama_cpp import Llama

    from appliance.backends.llm import default_gguf_path
    from appliance.backends.tokens import estimate_tokens

    llm = _llm(base_url)
    assert "prompt tokens: the server's tokenizer (llama-cpp-python POST /extras/tokenize/count)" in llm.check()
    vocab = Llama(model_path=str(default_gguf_path()), vocab_only=True, verbose=False)  # the served GGUF's own
    for text in [(SAMPLES / "rust-book-installation.md").read_text(), "Answer briefly.", "Grüße, 東京 🙂"]:
        assert llm.count_tokens(text) == len(vocab.tokenize(text.encode("utf-8"), add_bos=False, special=True))
    markdown = (SAMPLES / "rust-book-installation.md").read_text()
    assert llm.count_tokens(markdown) == 1762
    assert estimate_tokens(markdown) == 2220  # the old count: 26% of the budget spent on nothing


def test_an_unreachable_server_is_a_clear_error() -> None:
    llm = _llm(f"http://127.0.0.1:{free_port()}/v1")
    with pytest.raises(BackendUnavailable, match="cannot reach the model server"):
        llm.check()
    with pytest.raises(BackendUnavailable, match="cannot reach the model server"):
        llm.chat(QUESTION)


@pytest.mark.slow  # the full suite (scripts/test.sh) runs it; plain pytest stays fast
def test_answers_from_documents_through_the_server(base_url: str, data_dir: Path) -> None:
    services = make_services(data_dir, llm={"provider": "openai", "base_url": base_url, "model": "smollm2",
                                            "context_window": 2048, "max_answer_tokens": 48,
                                            "context_budget_tokens": 320, "temperature": 0.0,
                                            "system_prompt": "Answer the question using only the context."})
    try:
        services.ingest_pipeline.run([SAMPLES / "fake-memo.pdf", SAMPLES / "rust-book-installation.md"])
        answer = services.rag.ask("How many bottles of water were there?")
        assert answer.grounded
        assert answer.sources[0].file_name == "fake-memo.pdf"
        assert answer.text
    finally:
        services.close()
