"""Time to the first answer token, split into its stages (issue 23, "First token under a second").

    .venv/bin/python -m benchmarks.run --only first_token [--repeats 3]
    .venv/bin/python -m benchmarks.first_token [--repeats 3] [--no-http]

The samples are ingested into a temporary data dir (`appliance ingest`, a fresh process), then each sample
question of tests/e2e/test_ingest_ask.py is asked `repeats` times, in order (so each prompt follows another
question's, as in real use), with answers capped at 16 tokens (the first token does not depend on the cap):

- in this process, through RagEngine.stream, split by the embedded backend's record of the prompt
  (LlamaCppLLM.last_prompt): retrieval (from the question to the model call: embed the query, hybrid
  search and fusion, rerank when set, pack the passages), prefill (llama.cpp evaluating the prompt tokens
  its KV cache does not already hold), and first token (the rest: the chat template, tokenizing, the
  first decode and sampling);
- through a real `appliance serve` on loopback: POST /v1/chat/completions with stream=true, up to the
  first SSE chunk that carries text.

Each row is a median and a p95 over every question and repeat. The machine's load average is printed
with the table: on a shared 2-core machine, compare runs taken side by side only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
Row = tuple[str, str, str]
ANSWER_TOKENS = 16


def questions() -> list[str]:
    """The sample questions the e2e tests and the claims benchmark ask (those that need no LibreOffice)."""
    from tests.e2e.test_ingest_ask import QUESTIONS

    out = []
    for entry in QUESTIONS:
        values = getattr(entry, "values", entry)  # a pytest.param, or a plain tuple
        if not getattr(entry, "marks", None):
            out.append(str(values[0]))
    return out


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values):,.0f} ms, p95 {_pct(values, 0.95):,.0f} ms" if values else "-"


def _load() -> str:
    one, five, _ = os.getloadavg()
    return f"load {one:.2f} (1 min), {five:.2f} (5 min) on {os.cpu_count()} cores"


def in_process(data_dir: Path, asked: list[str]) -> dict[str, list[float]]:
    """Each question through RagEngine.stream; the stages of its first token, in milliseconds."""
    from appliance.rag import Answer
    from appliance.services import build_services
    from appliance.settings import load_settings

    services = build_services(load_settings(None, {"data_dir": data_dir}))
    out: dict[str, list[float]] = {k: [] for k in ("retrieval", "prefill", "first", "total", "tokens", "reused",
                                                   "threads")}
    try:
        llm = services.llm
        for _ in services.rag.stream(asked[-1], max_tokens=ANSWER_TOKENS):  # load and warm everything
            pass
        for question in asked:
            before = getattr(llm, "last_prompt", None)
            start = time.perf_counter()
            first = None
            for event in services.rag.stream(question, max_tokens=ANSWER_TOKENS):
                if first is None and not isinstance(event, Answer):
                    first = time.perf_counter()
            read = getattr(llm, "last_prompt", None)
            if first is None:
                continue
            out["total"].append((first - start) * 1000)
            if read is None or read is before:  # answered without the model (not found), or another backend
                continue
            out["retrieval"].append((read.started - start) * 1000)
            out["prefill"].append(read.prefill_ms)
            out["first"].append((first - read.started) * 1000 - read.prefill_ms)
            out["tokens"].append(read.tokens)
            out["reused"].append(read.reused)
            out["threads"].append(getattr(read, "threads", 0))
    finally:
        services.close()
    return out


def over_http(data_dir: Path, asked: list[str], log: Path) -> list[float]:
    """Each question through `appliance serve`'s /v1/chat/completions (stream); ms to the first text chunk."""
    import httpx

    from benchmarks.api import _free_port, _wait

    port = _free_port()
    with log.open("wb") as out:
        server = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--port", str(port),
                                   "--data-dir", str(data_dir)], cwd=ROOT, stdout=out, stderr=out)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base + "/readyz", server)
            with httpx.Client(base_url=base, timeout=300) as http:

                def ttft(question: str) -> float:
                    body = {"model": "rag-appliance", "stream": True, "max_tokens": ANSWER_TOKENS,
                            "messages": [{"role": "user", "content": question}]}
                    start = time.perf_counter()
                    first = None
                    with http.stream("POST", "/v1/chat/completions", json=body) as r:
                        r.raise_for_status()
                        for line in r.iter_lines():  # to the end, as a client reads
                            if first is None and line.startswith("data: {") and _text(line):
                                first = time.perf_counter()
                    return ((first or time.perf_counter()) - start) * 1000

                ttft(asked[-1])  # warm: the first answer builds what the server builds lazily
                return [ttft(q) for q in asked]
        finally:
            server.terminate()
            server.wait(timeout=60)


def _text(line: str) -> bool:
    choices = json.loads(line[len("data: "):]).get("choices") or [{}]
    return bool(choices[0].get("delta", {}).get("content"))


def bench_first_token(repeats: int, http: bool = True) -> list[Row]:
    """run.py's rows: the stages in process, and the whole first token through the HTTP API."""
    asked = questions() * repeats
    load_before = _load()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        subprocess.run([sys.executable, "-m", "appliance.cli", "ingest", str(ROOT / "samples"), "--data-dir",
                        str(data)], check=True, capture_output=True, cwd=ROOT)
        stages = in_process(data, asked)
        api = over_http(data, asked, Path(tmp) / "serve.log") if http else []
    n = f"{len(stages['total'])} questions ({len(asked) // repeats} × {repeats})"
    tokens = (f"prompt p50 {statistics.median(stages['tokens']):.0f} tokens, "
              f"{statistics.median(stages['reused']):.0f} of them from the KV cache; read on 1 thread "
              f"{stages['threads'].count(1)} times, on 2 {stages['threads'].count(2)}") if stages["tokens"] else ""
    rows: list[Row] = [
        ("first token: retrieval (embed, search, fuse, pack)", _ms(stages["retrieval"]), "in process"),
        ("first token: prefill (llama.cpp reads the prompt)", _ms(stages["prefill"]), tokens),
        ("first token: first decode and the rest", _ms(stages["first"]), "template, tokenize, sample, detokenize"),
        ("first token, in process (RagEngine.stream)", _ms(stages["total"]), n),
    ]
    if http:
        rows.append(("first token through /v1/chat/completions (stream)", _ms(api),
                     f"a real `appliance serve` on loopback; {len(api)} questions"))
    rows.append(("first token: machine load", load_before, f"after: {_load()}"))
    return rows


def main() -> None:
    from appliance.offline import enforce_offline

    enforce_offline()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-http", action="store_true", help="skip the `appliance serve` rows")
    args = parser.parse_args()
    rows = bench_first_token(args.repeats, http=not args.no_http)
    from benchmarks.run import print_table

    print_table(rows)


if __name__ == "__main__":
    main()
