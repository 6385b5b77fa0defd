"""The embedding runtimes give the vectors the appliance was built with.

tests/fixtures/embedding_reference holds 16 texts (questions, an empty and a one-letter text, and
~150-word passages of the samples) and their vectors from the shipped all-MiniLM-L6-v2 int8 file
under onnxruntime 1.32 (2026-12-07). Whatever runs the model must stay within cosine 0.999 of them:
a store built on one runtime is searched with the other.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from appliance.backends import embedding_runtime
from appliance.backends.embedding_runtime import choose_runtime, openvino_installed
from appliance.backends.embeddings import OnnxMiniLMEmbedding, build_embedding, minilm_files
from appliance.settings import EmbeddedEmbeddingSettings

REFERENCE = Path(__file__).resolve().parent.parent / "fixtures" / "embedding_reference"
RUNTIMES = ["onnxruntime", pytest.param("openvino", marks=pytest.mark.skipif(
    not openvino_installed(), reason="OpenVINO is not installed (the openvino extra; scripts/setup.sh test has it)"))]


def _reference() -> tuple[list[str], np.ndarray]:
    return json.loads((REFERENCE / "texts.json").read_text()), np.load(REFERENCE / "vectors.npy")


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_each_runtime_gives_the_reference_vectors(runtime: str) -> None:
    texts, reference = _reference()
    model = OnnxMiniLMEmbedding(*minilm_files(), runtime=runtime)
    assert model.runtime == runtime
    vectors = model.embed(texts)
    cosine = (vectors * reference).sum(axis=1)
    assert cosine.min() >= 0.999, dict(zip(texts, cosine.round(5).tolist(), strict=True))
    # Batched or one at a time, the same vector (padding is masked out).
    alone = np.vstack([model.embed([t]) for t in texts[:6]])
    assert np.allclose(alone, vectors[:6], atol=1e-4)


@pytest.mark.parametrize("runtime", RUNTIMES)
def test_a_runtime_embeds_from_several_threads_at_once(runtime: str) -> None:
    """Questions arrive on the server's threads while ingest embeds: every caller gets its own vectors."""
    texts, reference = _reference()
    model = OnnxMiniLMEmbedding(*minilm_files(), runtime=runtime)
    results: dict[int, np.ndarray] = {}

    def embed(worker: int) -> None:
        order = texts[worker:] + texts[:worker]
        results[worker] = np.roll(model.embed(order), worker, axis=0)

    threads = [threading.Thread(target=embed, args=(w,)) for w in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for got in results.values():
        assert (got * reference).sum(axis=1).min() >= 0.999
    assert len(results) == 4


def test_auto_takes_openvino_only_where_it_is_installed_and_measured_faster(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embedding_runtime, "openvino_installed", lambda: True)
    monkeypatch.setattr(embedding_runtime, "int8_units", lambda: ["avx512_vnni"])
    assert choose_runtime("auto") == "openvino"
    assert choose_runtime("onnxruntime") == "onnxruntime"
    monkeypatch.setattr(embedding_runtime, "int8_units", lambda: [])
    assert choose_runtime("auto") == "onnxruntime"  # AVX2 only: measured the same speed
    assert choose_runtime("openvino") == "openvino"
    monkeypatch.setattr(embedding_runtime, "openvino_installed", lambda: False)
    monkeypatch.setattr(embedding_runtime, "int8_units", lambda: ["avx512_vnni"])
    assert choose_runtime("auto") == "onnxruntime"
    assert "pip install 'rag-appliance[openvino]'" in embedding_runtime.advice("onnxruntime")


def test_the_setting_reaches_the_model_and_doctor_names_the_runtime() -> None:
    from appliance.ops.doctor import _embedding

    model = build_embedding(EmbeddedEmbeddingSettings(runtime="onnxruntime"))
    assert model.runtime == "onnxruntime"  # type: ignore[attr-defined]

    class Services:  # doctor's check reads only the embedding
        embedding = model

    status, detail, _ = _embedding(Services())  # type: ignore[arg-type]
    assert status == "ok"
    assert "on onnxruntime" in detail
    assert "AVX" in detail  # what the CPU has, and what the other runtime would give on it
    with pytest.raises(ValueError, match="runtime"):
        EmbeddedEmbeddingSettings(runtime="tensorrt")  # type: ignore[arg-type]
