"""What the HTTP API adds over calling the engine in-process, at 1, 10 and 50 concurrent clients.

The same searches and questions run in this process (threads calling RagEngine, on a copy of the
store: the server holds the original's lock) and through `appliance serve` on loopback (threads
with an HTTP client), one after the other in the same run. Answers are capped at 16 tokens so the
50-client round stays short: the embedded model generates one answer at a time, so time to first
token grows with the queue in both paths alike, and the ratio is what the API costs.
"""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
Row = tuple[str, str, str]
SEARCHES = ["bottles of water delivered", "family day activities", "install rust with rustup", "Anna Pavlovna",
            "Stanley Cup winners", "presentation title slide", "Universal Declaration article 1", "memo date"]
QUESTIONS = ["How many bottles of water were delivered?", "What activities are planned for the family day?",
             "Which command line tool manages Rust versions?", "What was Anna Pavlovna Scherer's position?"]
ANSWER_TOKENS = 16


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _concurrently(clients: int, per_client: int, one: Callable[[int], float]) -> list[float]:
    """Each of `clients` threads runs `per_client` calls; returns every call's milliseconds."""
    out: list[float] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)  # all clients at once, not as fast as threads happen to start

    def client(c: int) -> None:
        start.wait()
        for i in range(per_client):
            ms = one(c * per_client + i)
            with lock:
                out.append(ms)

    threads = [threading.Thread(target=client, args=(c,)) for c in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return out


def bench_api(levels: tuple[int, ...] = (1, 10, 50)) -> list[Row]:
    import httpx

    from appliance.rag import Answer
    from appliance.services import build_services
    from appliance.settings import load_settings

    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        served, local = Path(tmp) / "served", Path(tmp) / "local"
        subprocess.run([sys.executable, "-m", "appliance.cli", "ingest", str(ROOT / "samples"), "--data-dir",
                        str(served)], check=True, capture_output=True, cwd=ROOT)
        shutil.copytree(served, local)
        overrides = {"llm": {"max_answer_tokens": ANSWER_TOKENS}, "server": {"max_queued": 1000}}
        services = build_services(load_settings(None, {"data_dir": local, **overrides}))
        services.rag.search("warm up")
        services.llm.count_tokens("warm up")

        def local_search(i: int) -> float:
            t = time.perf_counter()
            found = services.rag.search(SEARCHES[i % len(SEARCHES)], None, limit=10)
            services.rag.relevant(found, SEARCHES[i % len(SEARCHES)])
            return (time.perf_counter() - t) * 1000

        def local_ttft(i: int) -> float:
            t = time.perf_counter()
            first = None
            for event in services.rag.stream(QUESTIONS[i % len(QUESTIONS)]):  # to the end, as a client reads
                if first is None and not isinstance(event, Answer):
                    first = time.perf_counter()
            return ((first or time.perf_counter()) - t) * 1000

        local_s = {c: _concurrently(c, max(2, 40 // c), local_search) for c in levels}
        local_t = {c: _concurrently(c, 1 if c > 1 else 8, local_ttft) for c in levels}
        services.close()

        port = _free_port()
        env = {**os.environ, "APPLIANCE_LLM__MAX_ANSWER_TOKENS": str(ANSWER_TOKENS),
               "APPLIANCE_SERVER__MAX_QUEUED": "1000"}
        log = (Path(tmp) / "serve.log").open("wb")
        server = subprocess.Popen([sys.executable, "-m", "appliance.cli", "serve", "--port", str(port),
                                   "--data-dir", str(served)], cwd=ROOT, env=env, stdout=log, stderr=log)
        try:
            base = f"http://127.0.0.1:{port}"
            _wait(base + "/readyz", server)
            http = httpx.Client(base_url=base, timeout=600, limits=httpx.Limits(max_connections=100))
            http.post("/v1/search", json={"query": "warm up"})

            def api_search(i: int) -> float:
                t = time.perf_counter()
                r = http.post("/v1/search", json={"query": SEARCHES[i % len(SEARCHES)], "top_k": 10})
                r.raise_for_status()
                return (time.perf_counter() - t) * 1000

            def api_ttft(i: int) -> float:
                body = {"model": "rag-appliance", "stream": True,
                        "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}]}
                t = time.perf_counter()
                first = None
                with http.stream("POST", "/v1/chat/completions", json=body) as r:
                    r.raise_for_status()
                    for line in r.iter_lines():
                        if first is None and '"content": "' in line and '"content": ""' not in line:
                            first = time.perf_counter()
                return ((first or time.perf_counter()) - t) * 1000

            api_s = {c: _concurrently(c, max(2, 40 // c), api_search) for c in levels}
            api_t = {c: _concurrently(c, 1 if c > 1 else 8, api_ttft) for c in levels}
            http.close()
        finally:
            server.terminate()
            server.wait(timeout=60)
            log.close()

    measured = [("/v1/search", api_s, local_s, "searches"),
                ("/v1/chat/completions time to first token", api_t, local_t,
                 f"questions, {ANSWER_TOKENS}-token answers, one generated at a time")]
    for what, api, local, unit in measured:
        for c in levels:
            rows.append((f"{what}, {c} client{'s' if c > 1 else ''}",
                         f"p50 {statistics.median(api[c]):.0f} ms, p95 {_pct(api[c], 0.95):.0f} ms",
                         f"in-process p50 {statistics.median(local[c]):.0f} ms, p95 {_pct(local[c], 0.95):.0f} ms; "
                         f"ratio p50 {statistics.median(api[c]) / statistics.median(local[c]):.2f}; "
                         f"{len(api[c])} {unit}"))
    return rows


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, server: subprocess.Popen[bytes], timeout: float = 180) -> None:
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"appliance serve exited with {server.returncode}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError("appliance serve did not become ready")

