"""The metric computation and the BEIR loader, on rankings and files whose values are checked by hand."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from appliance.ops.evaluation import DatasetError, QueryResult, load_beir, metrics, percentile_ms


def _result(qid: str, docs: list[str]) -> QueryResult:
    return QueryResult(qid, [(d, 1.0) for d in docs], seconds=0.01)


def test_metrics_match_hand_computed_values() -> None:
    qrels = {"a": {"r1": 1, "r2": 1}, "b": {"r3": 1}, "c": {"r4": 1}}
    results = [
        _result("a", ["x", "r1", "y", "r2"]),  # relevant at ranks 2 and 4
        _result("b", [f"n{i}" for i in range(11)] + ["r3"]),  # relevant at rank 12: past every @10 cut-off
        _result("c", []),  # nothing retrieved: counts as 0, not dropped
    ]
    got = metrics(qrels, results)
    dcg_a = 1 / math.log2(3) + 1 / math.log2(5)
    idcg_a = 1 + 1 / math.log2(3)
    assert got["ndcg@10"] == pytest.approx((dcg_a / idcg_a) / 3, abs=1e-4)
    assert got["recall@10"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["recall@100"] == pytest.approx(2 / 3, abs=1e-4)
    assert got["mrr@10"] == pytest.approx(0.5 / 3, abs=1e-4)  # b's 1/12 is beyond the cut-off


def test_graded_relevance_rewards_the_better_document_first() -> None:
    qrels = {"q": {"best": 3, "good": 1}}
    right = metrics(qrels, [_result("q", ["best", "good"])])["ndcg@10"]
    wrong = metrics(qrels, [_result("q", ["good", "best"])])["ndcg@10"]
    assert right == pytest.approx(1.0)
    # trec_eval gains are the grades themselves: (1 + 3/log2 3) over the ideal (3 + 1/log2 3)
    assert wrong == pytest.approx((1 + 3 / math.log2(3)) / (3 + 1 / math.log2(3)), abs=1e-4)


def test_percentiles() -> None:
    assert percentile_ms([0.001 * i for i in range(1, 101)], 50) == pytest.approx(50.5)
    assert percentile_ms([0.002], 95) == pytest.approx(2.0)


def test_loader_keeps_judged_queries_only() -> None:
    ds = load_beir(Path(__file__).parents[1] / "fixtures" / "beir_tiny")
    assert set(ds.queries) == {"q1", "q2", "q3", "q4"}
    assert ds.corpus["d3"][0] == "Badge readers"
    assert ds.qrels["q4"] == {"ghost": 1}


@pytest.mark.parametrize(("files", "message"), [
    ({}, "missing corpus.jsonl"),
    ({"corpus.jsonl": '{"_id": "1", "text": "x"}\nnot json\n'}, "corpus.jsonl:2: not JSON"),
    ({"corpus.jsonl": '{"text": "x"}\n'}, 'needs an "_id"'),
    ({"corpus.jsonl": '{"_id": "1", "text": "x"}\n', "queries.jsonl": '{"_id": "q", "text": "y"}\n'},
     "missing qrels/test.tsv"),
    ({"corpus.jsonl": '{"_id": "1", "text": "x"}\n', "queries.jsonl": '{"_id": "q", "text": "y"}\n',
      "qrels/test.tsv": "q\t1\thigh\n"}, "is not an integer"),
    ({"corpus.jsonl": '{"_id": "1", "text": "x"}\n', "queries.jsonl": '{"_id": "q", "text": "y"}\n',
      "qrels/test.tsv": "other\t1\t1\n"}, "no query of queries.jsonl is judged"),
])
def test_a_malformed_dataset_says_what_and_where(tmp_path: Path, files: dict[str, str], message: str) -> None:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    with pytest.raises(DatasetError, match=message):
        load_beir(tmp_path)
