"""Embedding through another appliance's POST /v1/embeddings against embedding in-process.

The same chunks (~230 tokens each, as ingestion makes them) are embedded by the embedded model in this
process, then through a real `appliance serve` on loopback (keys required) by the `openai` embedding
backend at several batch sizes, one after the other in the same run. Both sides share the machine's
cores: on loopback the HTTP path costs its own work (JSON, base64, the server's threads) on top of the
same model, so the ratio is an upper bound of what the HTTP path costs when the server is elsewhere.

    .venv/bin/python -m benchmarks.run --only embed_service
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CORPUS_BOOK = ROOT.parent / "shared" / "corpus" / "unstructured-example-docs" / "book-war-and-peace-1225p.txt"
Row = tuple[str, str, str]
CHUNKS = 128
BATCHES = (16, 64, 128)


def _chunks() -> list[str]:
    source = CORPUS_BOOK
    text = source.read_text(errors="ignore") if source.exists() else " ".join(
        p.read_text(errors="ignore") for p in sorted((ROOT / "samples").glob("*.md")))
    words = text.split()
    return [" ".join(words[(i * 170) % max(1, len(words) - 170):][:170]) for i in range(CHUNKS)]


def _best(fn: object, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t)
    return min(times)  # a shared machine: the least disturbed run


def bench_embed_service(repeats: int = 2) -> list[Row]:
    import numpy as np

    from appliance.backends.embeddings import OpenAIEmbedding, build_embedding
    from appliance.settings import EmbeddedEmbeddingSettings, OpenAIEmbeddingSettings
    from benchmarks.api import _free_port, _wait

    chunks = _chunks()
    local = build_embedding(EmbeddedEmbeddingSettings())
    local.embed(chunks[:4])
    reference = local.embed(chunks)
    local_s = _best(lambda: local.embed(chunks), repeats)
    rows: list[Row] = [("embed in-process (ONNX, 2 threads)", f"{len(chunks) / local_s:.1f} chunks/s",
                        f"{len(chunks)} chunks of ~230 tokens, best of {repeats}")]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "a"
        key = subprocess.run([sys.executable, "-m", "appliance.cli", "keys", "create", "bench", "--data-dir",
                              str(data)], check=True, capture_output=True, text=True, cwd=ROOT).stdout.strip()
        port = _free_port()
        env = {**os.environ, "APPLIANCE_SERVER__REQUIRE_API_KEY": "true",
               "APPLIANCE_AUTH__REQUESTS_PER_MINUTE": "100000"}
        log = (Path(tmp) / "serve.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--port", str(port), "--data-dir",
                                   str(data)], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            _wait(f"http://127.0.0.1:{port}/readyz", server)
            for batch in BATCHES:
                for encoding in ("base64", "float"):
                    if encoding == "float" and batch != 64:
                        continue
                    remote = OpenAIEmbedding(OpenAIEmbeddingSettings(
                        base_url=f"http://127.0.0.1:{port}/v1", model="all-MiniLM-L6-v2-int8", api_key=key,
                        batch_size=batch, encoding_format=encoding, send_input_type=True, timeout_s=600,
                        max_retries=0))
                    got = remote.embed(chunks)
                    seconds = _best(lambda r=remote: r.embed(chunks), repeats)
                    diff = float(np.abs(got - reference).max())
                    rows.append((f"embed through POST /v1/embeddings, batch {batch}, {encoding}",
                                 f"{len(chunks) / seconds:.1f} chunks/s",
                                 f"{local_s / seconds:.2f}x in-process; {(len(chunks) + batch - 1) // batch} "
                                 f"requests; max |diff| vs in-process {diff:.1e}"))
            after_s = _best(lambda: local.embed(chunks), repeats)  # the machine's load may have changed meanwhile
            rows.append(("embed in-process again, after the HTTP rows", f"{len(chunks) / after_s:.1f} chunks/s",
                         "the same chunks: how much the shared machine's load moved during the run"))
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()
    return rows
