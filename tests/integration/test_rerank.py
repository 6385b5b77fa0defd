"""Reranker backends: an ONNX cross-encoder loaded from a folder, and HTTP rerank endpoints.

No cross-encoder ships inside a package (FINDINGS.md), so the ONNX model here is built by the test:
a real ONNX graph over MiniLM's real tokenizer that scores a (query, passage) pair by how many passage
tokens also occur in the query. It exercises what an administrator's model goes through: file
discovery, pair tokenisation with segment ids, batching, logits to scores. The HTTP endpoint is a
local server speaking the Cohere/vLLM and TEI formats.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from appliance.backends.common import BackendUnavailable
from appliance.backends.embeddings import minilm_files
from appliance.backends.rerank import build_reranker
from appliance.settings import CrossEncoderRerankSettings, HttpRerankSettings

PASSAGES = [
    "The cafeteria serves lunch from 11:30 on weekdays.",
    "Error code ZX-4471 means the badge reader lost power.",
    "Employees accrue paid annual leave every month.",
]


def _overlap_cross_encoder(folder: Path) -> Path:
    """logit = (number of passage tokens that also occur in the query) - 2."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    ints = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "seq"])
            for n in ("input_ids", "attention_mask", "token_type_ids")]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    const = helper.make_tensor
    nodes = [
        helper.make_node("Constant", [], ["one"], value=const("one", TensorProto.INT64, [], [1])),
        helper.make_node("Constant", [], ["ax1"], value=const("ax1", TensorProto.INT64, [1], [1])),
        helper.make_node("Constant", [], ["ax2"], value=const("ax2", TensorProto.INT64, [1], [2])),
        helper.make_node("Constant", [], ["two"], value=const("two", TensorProto.FLOAT, [], [2.0])),
        helper.make_node("Sub", ["one", "token_type_ids"], ["is_q"]),
        helper.make_node("Mul", ["is_q", "attention_mask"], ["q_mask"]),
        helper.make_node("Mul", ["token_type_ids", "attention_mask"], ["p_mask"]),
        helper.make_node("Unsqueeze", ["input_ids", "ax2"], ["ids_col"]),
        helper.make_node("Unsqueeze", ["input_ids", "ax1"], ["ids_row"]),
        helper.make_node("Equal", ["ids_col", "ids_row"], ["same"]),  # [b, passage pos, query pos]
        helper.make_node("Cast", ["same"], ["same_i"], to=TensorProto.INT64),
        helper.make_node("Unsqueeze", ["q_mask", "ax1"], ["q_row"]),
        helper.make_node("Mul", ["same_i", "q_row"], ["hit"]),
        helper.make_node("ReduceMax", ["hit", "ax2"], ["found"], keepdims=0),
        helper.make_node("Mul", ["found", "p_mask"], ["found_p"]),
        helper.make_node("ReduceSum", ["found_p", "ax1"], ["count"], keepdims=1),
        helper.make_node("Cast", ["count"], ["count_f"], to=TensorProto.FLOAT),
        helper.make_node("Sub", ["count_f", "two"], ["logits"]),
    ]
    graph = helper.make_graph(nodes, "overlap", ints, [out])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.ir_version = 8
    folder.mkdir(parents=True, exist_ok=True)
    onnx.save(model, str(folder / "model.onnx"))
    shutil.copy(minilm_files()[1], folder / "tokenizer.json")
    return folder


def test_onnx_cross_encoder_scores_pairs_and_ranks_the_matching_passage_first(tmp_path: Path) -> None:
    model_dir = _overlap_cross_encoder(tmp_path / "ce")
    reranker = build_reranker(CrossEncoderRerankSettings(model_dir=model_dir, batch_size=2))
    assert reranker is not None
    scores = reranker.score("what does error ZX-4471 mean", PASSAGES)
    assert len(scores) == 3
    assert all(0.0 < s < 1.0 for s in scores)
    assert max(range(3), key=lambda i: scores[i]) == 1
    # Batching does not change a pair's score.
    assert reranker.score("what does error ZX-4471 mean", PASSAGES[1:2]) == pytest.approx(scores[1:2])


@pytest.mark.parametrize(("layout", "message"), [
    ("missing", "is not a folder"),
    ("empty", "holds no model.onnx"),
    ("no_tokenizer", "no tokenizer.json"),
    ("corrupt", "cannot load the reranker"),
    ("st_without_package", "sentence-transformers"),
])
def test_a_bad_model_folder_fails_when_built_with_a_clear_reason(tmp_path: Path, layout: str, message: str) -> None:
    folder = tmp_path / "model"
    if layout != "missing":
        folder.mkdir()
    if layout == "no_tokenizer":
        (folder / "model.onnx").write_bytes(b"x")
    if layout == "corrupt":
        (folder / "model.onnx").write_bytes(b"not an onnx file")
        shutil.copy(minilm_files()[1], folder / "tokenizer.json")
    if layout == "st_without_package":
        pytest.importorskip("onnx")  # any test env; sentence-transformers is not installed by default
        try:
            import sentence_transformers  # noqa: F401
        except ImportError:
            (folder / "config.json").write_text("{}")
        else:
            pytest.skip("sentence-transformers is installed here")
    with pytest.raises(BackendUnavailable, match=message):
        build_reranker(CrossEncoderRerankSettings(model_dir=folder))


class _RerankHandler(BaseHTTPRequestHandler):
    mode = "ok"

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        if self.mode == "error":
            self._reply(500, {"error": "model not loaded"})
            return
        query = set(body["query"].lower().split())
        texts = body.get("documents") or body.get("texts")
        scores = [len(query & set(t.lower().split())) / 10 for t in texts]
        if self.path == "/tei/rerank":
            self._reply(200, [{"index": i, "score": s} for i, s in sorted(enumerate(scores), key=lambda p: -p[1])])
        elif self.mode == "bad_shape":
            self._reply(200, {"unexpected": True})
        else:
            self.server.auth_seen = self.headers.get("Authorization")  # type: ignore[attr-defined]
            self._reply(200, {"results": [{"index": i, "relevance_score": s} for i, s in enumerate(scores)]})

    def _reply(self, status: int, data: Any) -> None:
        raw = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)


@pytest.fixture
def endpoint() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _RerankHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    _RerankHandler.mode = "ok"


def test_http_reranker_speaks_cohere_and_tei(endpoint: ThreadingHTTPServer) -> None:
    port = endpoint.server_address[1]
    query = "what does error zx-4471 mean"
    cohere = build_reranker(HttpRerankSettings(url=f"http://127.0.0.1:{port}/v1/rerank", api_key="s3cret"))
    tei = build_reranker(HttpRerankSettings(url=f"http://127.0.0.1:{port}/tei/rerank", api="tei"))
    assert cohere is not None
    assert tei is not None
    a, b = cohere.score(query, PASSAGES), tei.score(query, PASSAGES)
    assert a == b  # TEI answers sorted by score; the scores still land on their own passages
    assert max(range(3), key=lambda i: a[i]) == 1
    assert endpoint.auth_seen == "Bearer s3cret"  # type: ignore[attr-defined]


@pytest.mark.parametrize(("mode", "message"), [("error", "answered 500"), ("bad_shape", "unexpected shape")])
def test_http_reranker_problems_fail_at_start_up(endpoint: ThreadingHTTPServer, mode: str, message: str) -> None:
    _RerankHandler.mode = mode
    url = f"http://127.0.0.1:{endpoint.server_address[1]}/v1/rerank"
    with pytest.raises(BackendUnavailable, match=message):
        build_reranker(HttpRerankSettings(url=url))


def test_unreachable_rerank_endpoint_fails_at_start_up() -> None:
    with pytest.raises(BackendUnavailable, match="unreachable"):
        build_reranker(HttpRerankSettings(url="http://127.0.0.1:9/v1/rerank", timeout_s=2))
