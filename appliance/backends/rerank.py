"""Rerankers: rescore the fused candidates with a model that reads query and passage together.

No reranker ships inside a PyPI package (FINDINGS.md), so the embedded default has none. An
administrator can point the appliance at a cross-encoder on disk (ONNX, or a sentence-transformers
folder when that package is installed) or at an HTTP rerank endpoint (vLLM, llama.cpp server,
Infinity and Cohere speak `api: cohere`; Hugging Face TEI speaks `api: tei`). Every backend is
checked when it is built, so a missing model fails at start-up, not at the first question.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.backends.common import BackendUnavailable

if TYPE_CHECKING:
    from appliance.settings import CrossEncoderRerankSettings, HttpRerankSettings, RerankSettings


class Reranker(Protocol):
    def score(self, query: str, texts: list[str]) -> list[float]:
        """One relevance score per text, higher is better (0..1 where the model allows).
        Any failure is raised as BackendUnavailable."""
        ...

    def close(self) -> None: ...


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x)) if x >= 0 else math.exp(x) / (1.0 + math.exp(x))


class OnnxCrossEncoder:
    """A cross-encoder exported to ONNX (`model.onnx` or `onnx/model.onnx`) with its `tokenizer.json`."""

    def __init__(self, model_dir: Path, onnx_file: Path, max_tokens: int, batch_size: int, threads: int) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        tokenizer_file = model_dir / "tokenizer.json"
        if not tokenizer_file.is_file():
            raise BackendUnavailable(f"rerank.model_dir {model_dir} has {onnx_file.name} but no tokenizer.json")
        self._tokenizer = Tokenizer.from_file(str(tokenizer_file))
        self._tokenizer.enable_truncation(max_length=max_tokens, strategy="longest_first")
        self._tokenizer.enable_padding()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        try:
            self._session = ort.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own types for a corrupt or foreign file
            raise BackendUnavailable(f"cannot load the reranker {onnx_file}: {exc}") from None
        self._inputs = {i.name for i in self._session.get_inputs()}
        missing = {"input_ids", "attention_mask"} - self._inputs
        if missing:
            raise BackendUnavailable(f"{onnx_file} is not a cross-encoder: it lacks inputs {sorted(missing)}")
        self._batch = batch_size
        self._name = onnx_file
        self.score("start-up check", ["start-up check"])  # a model that cannot score fails now

    def close(self) -> None:
        """Nothing to release beyond the session, which goes with the object."""

    def score(self, query: str, texts: list[str]) -> list[float]:
        try:
            return self._score(query, texts)
        except BackendUnavailable:
            raise
        except Exception as exc:  # onnxruntime's own error types: wrong dtypes, fixed shapes, ...
            raise BackendUnavailable(f"the reranker {self._name} failed: {type(exc).__name__}: {exc}") from None

    def _score(self, query: str, texts: list[str]) -> list[float]:
        import numpy as np

        scores: list[float] = []
        for start in range(0, len(texts), self._batch):
            encoded = self._tokenizer.encode_batch([(query, t) for t in texts[start : start + self._batch]])
            feed = {
                "input_ids": np.array([e.ids for e in encoded], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encoded], dtype=np.int64),
            }
            if "token_type_ids" in self._inputs:
                feed["token_type_ids"] = np.array([e.type_ids for e in encoded], dtype=np.int64)
            logits = np.asarray(self._session.run(None, feed)[0], dtype=np.float64).reshape(len(encoded), -1)
            if logits.shape[1] == 2:  # two classes: the "relevant" one's probability
                probs = np.exp(logits - logits.max(axis=1, keepdims=True))
                scores.extend((probs[:, 1] / probs.sum(axis=1)).tolist())
            elif logits.shape[1] == 1:  # one logit per pair (ms-marco style)
                scores.extend(_sigmoid(float(x)) for x in logits[:, 0])
            else:
                raise BackendUnavailable(f"{self._name} gives {logits.shape[1]} outputs per pair; a cross-encoder "
                                         "gives one relevance logit (or two classes)")
        return scores


class SentenceTransformersCrossEncoder:
    """A sentence-transformers cross-encoder folder, loaded from disk only (needs sentence-transformers)."""

    def __init__(self, model_dir: Path, max_tokens: int, batch_size: int) -> None:
        try:
            from sentence_transformers import CrossEncoder
        except ImportError:
            raise BackendUnavailable(
                f"rerank.model_dir {model_dir} holds a sentence-transformers model, which needs "
                "`pip install sentence-transformers` (and torch); or export it to ONNX (model.onnx + tokenizer.json)"
            ) from None
        self._model = CrossEncoder(str(model_dir), max_length=max_tokens, local_files_only=True)
        self._batch = batch_size

    def close(self) -> None:
        """The model goes with the object."""

    def score(self, query: str, texts: list[str]) -> list[float]:
        try:
            # predict() already applies the model's activation (a sigmoid for one-label models).
            raw = self._model.predict([(query, t) for t in texts], batch_size=self._batch, show_progress_bar=False)
            return [float(x[-1]) if getattr(x, "ndim", 0) else float(x) for x in raw]
        except Exception as exc:
            raise BackendUnavailable(f"the reranker failed: {type(exc).__name__}: {exc}") from None


def build_cross_encoder(settings: CrossEncoderRerankSettings) -> Reranker:
    model_dir = settings.model_dir
    if not model_dir.is_dir():
        raise BackendUnavailable(f"rerank.model_dir {model_dir} is not a folder: give the folder of a cross-encoder "
                                 "(model.onnx + tokenizer.json, or a sentence-transformers model)")
    for candidate in (model_dir / "model.onnx", model_dir / "onnx" / "model.onnx"):
        if candidate.is_file():
            return OnnxCrossEncoder(model_dir, candidate, settings.max_tokens, settings.batch_size, settings.threads)
    if (model_dir / "config.json").is_file():
        return SentenceTransformersCrossEncoder(model_dir, settings.max_tokens, settings.batch_size)
    raise BackendUnavailable(f"rerank.model_dir {model_dir} holds no model.onnx, onnx/model.onnx or config.json")


class HttpReranker:
    """A rerank endpoint: Cohere/Jina-style (`/v1/rerank` of vLLM, llama.cpp server, Infinity) or TEI's `/rerank`."""

    def __init__(self, settings: HttpRerankSettings) -> None:
        import httpx

        self._url = settings.url
        self._api = settings.api
        self._model = settings.model
        headers = {"Authorization": f"Bearer {settings.api_key.get_secret_value()}"} if settings.api_key else {}
        self._client = httpx.Client(timeout=settings.timeout_s, headers=headers)

    def close(self) -> None:
        self._client.close()

    def _post(self, body: dict[str, Any]) -> Any:
        import httpx

        try:
            response = self._client.post(self._url, json=body)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(f"rerank endpoint {self._url} is unreachable: {exc}") from None
        if response.status_code >= 400:
            raise BackendUnavailable(f"rerank endpoint {self._url} answered {response.status_code}: "
                                     f"{response.text[:200]}")
        try:
            return response.json()
        except ValueError:
            raise BackendUnavailable(f"rerank endpoint {self._url} did not answer JSON") from None

    def score(self, query: str, texts: list[str]) -> list[float]:
        if not texts:
            return []
        if self._api == "tei":
            body: dict[str, Any] = {"query": query, "texts": texts, "raw_scores": False}
            rows, key = self._post(body), "score"
        else:
            body = {"query": query, "documents": texts, "top_n": len(texts)}
            if self._model:
                body["model"] = self._model
            data = self._post(body)
            rows, key = (data.get("results") if isinstance(data, dict) else None), "relevance_score"
        scores: list[float | None] = [None] * len(texts)
        try:
            for row in rows:
                index = int(row["index"])
                if index < 0:
                    raise IndexError(index)
                scores[index] = float(row[key])
        except (TypeError, KeyError, ValueError, IndexError):
            raise BackendUnavailable(f"rerank endpoint {self._url} answered in an unexpected shape "
                                     f"(is rerank.api={self._api!r} right?)") from None
        if any(s is None for s in scores):
            raise BackendUnavailable(f"rerank endpoint {self._url} scored {sum(s is not None for s in scores)} "
                                     f"of {len(texts)} passages")
        return [float(s) for s in scores if s is not None]

    def check(self) -> None:
        """One tiny request, so a wrong URL or model fails at start-up."""
        self.score("start-up check", ["start-up check"])


def build_reranker(settings: RerankSettings) -> Reranker | None:
    if settings.provider == "none":
        return None
    if settings.provider == "cross_encoder":
        return build_cross_encoder(settings)
    reranker = HttpReranker(settings)
    try:
        reranker.check()
    except BackendUnavailable:
        reranker.close()
        raise
    return reranker
