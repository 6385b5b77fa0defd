"""The shipped MiniLM ONNX file on each runtime, side by side: chunks/s and cosine to today's vectors.

    .venv/bin/python -m benchmarks.run --only embed_runtime [--repeats 3]

Chunks are the first 160 of DA-619p.pdf's text cut every 150 words (~200 tokens, as ingest's chunks),
or the samples' text where ../shared is missing. Each runtime embeds them through the appliance's own
`OnnxMiniLMEmbedding` (batches of ~1,024 tokens), and at batch 1; rounds alternate between runtimes
and the median is reported. Two rejected candidates are measured too, made from the same file:
onnxruntime's dynamic int8 quantization per channel (MatMulInteger), and the fp32 graph after
onnxruntime's constant folding. The shipped file stores int8 weights but computes in fp32 (each
weight is cast when loaded), so int8 kernels are only reached by re-quantizing, which moves vectors.
"""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.run import CORPUS, ROOT, Row

DA619 = CORPUS / "pdf" / "DA-619p.pdf"


def _chunks(count: int = 160) -> tuple[list[str], str]:
    if DA619.is_file():
        import pypdfium2

        pdf = pypdfium2.PdfDocument(str(DA619))
        words: list[str] = []
        for i in range(len(pdf)):
            words += pdf[i].get_textpage().get_text_range().split()
            if len(words) > 150 * count:
                break
        pdf.close()
        source = "DA-619p.pdf"
    else:
        words = " ".join(p.read_text(errors="replace") for p in sorted((ROOT / "samples").glob("*.txt"))).split()
        source = "the samples (../shared is missing)"
    chunks = [" ".join(words[i: i + 150]) for i in range(0, len(words), 150)][:count]
    return chunks, source


def _requantized(model: Path, tmp: Path) -> dict[str, Path]:
    """The rejected candidates: constant-folded fp32, and that graph quantized to int8 per channel."""
    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    folded = tmp / "folded.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_BASIC
    options.optimized_model_filepath = str(folded)
    ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    dynamic = tmp / "dynamic-int8.onnx"
    quantize_dynamic(str(folded), str(dynamic), weight_type=QuantType.QInt8, per_channel=True)
    return {"onnxruntime, folded fp32 graph (rejected: no faster)": folded,
            "onnxruntime, dynamic int8 per channel (rejected: vectors move)": dynamic}


def bench_embed_runtime(repeats: int) -> list[Row]:
    from appliance.backends.embedding_runtime import choose_runtime, int8_units, openvino_installed
    from appliance.backends.embeddings import OnnxMiniLMEmbedding, minilm_files

    chunks, source = _chunks()
    model, tokenizer = minilm_files()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        candidates: dict[str, tuple[Path, str]] = {"onnxruntime (today)": (model, "onnxruntime")}
        if openvino_installed():
            candidates["OpenVINO"] = (model, "openvino")
        else:
            rows.append(("OpenVINO", "not run", "not installed (pip install 'rag-appliance[openvino]')"))
        try:
            for name, path in _requantized(model, Path(tmp)).items():
                candidates[name] = (path, "onnxruntime")
        except ImportError as exc:  # onnx (the test extra) makes the quantized graph
            rows.append(("requantized candidates", "not run", f"needs onnx: {exc}"))
        embedders: dict[str, Any] = {name: OnnxMiniLMEmbedding(path, tokenizer, runtime=runtime)
                                     for name, (path, runtime) in candidates.items()}
        reference = embedders["onnxruntime (today)"].embed(chunks)
        batched: dict[str, list[float]] = {n: [] for n in embedders}
        single: dict[str, list[float]] = {n: [] for n in embedders}
        cosine: dict[str, float] = {}
        for _ in range(repeats):  # alternating: each round runs every candidate once
            for name, embedder in embedders.items():
                started = time.perf_counter()
                vectors = embedder.embed(chunks)
                batched[name].append(time.perf_counter() - started)
                started = time.perf_counter()
                for text in chunks[:40]:
                    embedder.embed([text])
                single[name].append(time.perf_counter() - started)
                cosine[name] = float((vectors * reference).sum(axis=1).min())
        today = statistics.median(batched["onnxruntime (today)"])
        for name in embedders:
            seconds = statistics.median(batched[name])
            rows.append((name, f"{len(chunks) / seconds:.1f} chunks/s ({today / seconds:.2f}x)",
                         f"batch 1: {40 / statistics.median(single[name]):.1f} chunks/s; min cosine to today's "
                         f"{cosine[name]:.4f}"))
    units = ", ".join(int8_units()) or "no AVX-512 VNNI/AMX"
    rows.append(("  setup", f"auto picks {choose_runtime('auto')}",
                 f"{len(chunks)} chunks of {source}, 2 threads, median of {repeats} alternating rounds; CPU: {units}"))
    return rows

