"""Start real servers on loopback for tests: `appliance serve` and llama-cpp-python's OpenAI server."""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT


def free_port() -> int:
    """A port free on every address: servers listen on 0.0.0.0, and test clients bind 127.0.0.2 and
    127.0.0.3 too (a port free on 127.0.0.1 alone was once taken on those)."""
    with socket.socket() as s:
        s.bind(("0.0.0.0", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"server not ready at {url}:\n{log.read_text(errors='replace')[-3000:]}")


@contextlib.contextmanager
def process(args: list[str], ready_url: str, log: Path, env: dict[str, str] | None = None) -> Iterator[int]:
    """Run a server process until the block ends; yields its pid. Its output goes to `log`."""
    with log.open("wb") as out:
        proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT,
                                env={**os.environ, **(env or {})})
        try:
            wait_for(ready_url, proc, log)
            yield proc.pid
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


@contextlib.contextmanager
def appliance_server(data_dir: Path, log: Path, env: dict[str, str] | None = None) -> Iterator[tuple[str, int]]:
    """`appliance serve` on a free loopback port; yields (base URL, pid)."""
    port = free_port()
    args = [sys.executable, "-m", "appliance.cli", "serve", "--port", str(port), "--data-dir", str(data_dir)]
    with process(args, f"http://127.0.0.1:{port}/readyz", log, env) as pid:
        yield f"http://127.0.0.1:{port}", pid


@contextlib.contextmanager
def llama_cpp_openai_server(log: Path) -> Iterator[str]:
    """llama-cpp-python's own OpenAI-compatible server with the shipped GGUF model; yields its /v1 URL."""
    from appliance.backends.llm import default_gguf_path

    port = free_port()
    args = [sys.executable, "-m", "llama_cpp.server", "--model", str(default_gguf_path()),
            "--model_alias", "smollm2", "--host", "127.0.0.1", "--port", str(port), "--n_ctx", "2048",
            "--n_threads", "1", "--n_threads_batch", "2"]
    with process(args, f"http://127.0.0.1:{port}/v1/models", log):
        yield f"http://127.0.0.1:{port}/v1"
