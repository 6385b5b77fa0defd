"""The runtime that executes the shipped MiniLM ONNX file: onnxruntime, or OpenVINO where it is faster.

Measured on the same file, 2 threads, ~200-token chunks (docs/benchmarks.md, "Embedding runtime"):
on a CPU with AVX-512 VNNI OpenVINO embedded ~1.5-2x faster than onnxruntime; on an AVX2-only CPU
both ran at the same speed. Both give the same vectors (cosine >= 0.9996, tests/integration/
test_embedding_runtime.py). So `auto` takes OpenVINO only where it is installed (the `openvino`
extra, ~180 MB) and the CPU has the int8 units it gains on. OpenVINO's telemetry lives in its model
converter (openvino.tools.ovc), which this never imports: the ONNX file is read by the runtime.
"""

from __future__ import annotations

import importlib.util
import threading
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any, Literal

import numpy as np

Runtime = Literal["onnxruntime", "openvino"]
Runner = Callable[[dict[str, np.ndarray]], np.ndarray]
FAST_CPU_FLAGS = ("avx512_vnni", "amx_int8", "avx_vnni")


@cache
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags (Linux); empty where /proc/cpuinfo cannot be read."""
    try:
        text = Path("/proc/cpuinfo").read_text(errors="replace")
    except OSError:
        return frozenset()
    for line in text.splitlines():
        if line.startswith("flags"):
            return frozenset(line.split(":", 1)[1].split())
    return frozenset()


def openvino_installed() -> bool:
    return importlib.util.find_spec("openvino") is not None


def int8_units() -> list[str]:
    """The CPU's int8 dot-product units that OpenVINO's CPU plugin gains on."""
    return [f for f in FAST_CPU_FLAGS if f in cpu_flags()]


def choose_runtime(setting: str) -> Runtime:
    """The runtime `embeddings.runtime` asks for; `auto` by the measurement above."""
    if setting == "openvino" or (setting == "auto" and openvino_installed() and int8_units()):
        return "openvino"
    return "onnxruntime"


def advice(runtime: Runtime) -> str:
    """What doctor says about the other runtime on this machine."""
    units = int8_units()
    cpu = f"this CPU has {', '.join(units)}" if units else "this CPU has no AVX-512 VNNI/AMX (AVX2 at most)"
    if runtime == "openvino":
        return f"{cpu}; onnxruntime measured ~0.5-0.7x OpenVINO's speed there"
    if not openvino_installed():
        gain = "OpenVINO measured ~1.5-2x faster there" if units else "OpenVINO measured no faster there"
        return f"{cpu}; {gain} (pip install 'rag-appliance[openvino]', embeddings.runtime: openvino)"
    return f"{cpu}; OpenVINO is installed but measured no faster on such a CPU (embeddings.runtime: openvino)"


def load_runner(runtime: Runtime, model: Path, threads: int) -> tuple[Runner, list[str]]:
    """(run(feeds) -> the model's first output, its input names) for the ONNX file on that runtime."""
    return (_openvino if runtime == "openvino" else _onnxruntime)(model, threads)


def _onnxruntime(model: Path, threads: int) -> tuple[Runner, list[str]]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    session = ort.InferenceSession(str(model), options, providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        out: np.ndarray = session.run(None, feeds)[0]
        return out

    return run, names


def _openvino(model: Path, threads: int) -> tuple[Runner, list[str]]:
    import openvino as ov

    core = ov.Core()
    # LATENCY: one request on all the threads given (THROUGHPUT splits them into streams and measured
    # half the speed for ingest's batches on 2 cores).
    compiled = core.compile_model(core.read_model(str(model)), "CPU",
                                  {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY"})
    names = [i.get_any_name() for i in compiled.inputs]
    request = compiled.create_infer_request()
    output = compiled.outputs[0]
    one_at_a_time = threading.Lock()  # an infer request is not thread-safe (onnxruntime's session is)

    def run(feeds: dict[str, np.ndarray]) -> np.ndarray:
        with one_at_a_time:
            result: Any = request.infer(feeds)
            return np.array(result[output])  # a copy: the request's buffer is reused by the next call

    return run, names
