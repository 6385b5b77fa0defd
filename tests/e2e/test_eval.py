"""`appliance eval` end to end: real ingest, embedding, store and retrieval, metrics by pytrec_eval."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SHARED

pytestmark = [pytest.mark.e2e]
TINY = ROOT / "tests" / "fixtures" / "beir_tiny"
KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10", "latency_ms_p50", "latency_ms_p95")


def _eval(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", "eval", *args], capture_output=True, text=True,
                          timeout=900, cwd=ROOT)


def test_eval_on_a_tiny_dataset_gives_the_hand_checked_values(tmp_path: Path) -> None:
    run = _eval(str(TINY), "--json", "--data-dir", str(tmp_path / "data"))
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert all(key in data for key in KEYS)
    # tests/fixtures/beir_tiny/README.md: three queries find their document first, one cannot.
    for key in ("ndcg@10", "recall@10", "recall@100", "mrr@10"):
        assert data[key] == pytest.approx(0.75), key
    assert data["queries"] == 4
    assert data["documents"] == 6
    assert 0 < data["latency_ms_p50"] <= data["latency_ms_p95"]
    # The dataset got a store of its own; a second run reuses it and gives the same numbers.
    assert next(iter((tmp_path / "data" / "eval").iterdir())).name.startswith("beir_tiny-")
    assert not (tmp_path / "data" / "store" / "documents").exists()
    again = json.loads(_eval(str(TINY), "--json", "--data-dir", str(tmp_path / "data")).stdout)
    assert again["ndcg@10"] == data["ndcg@10"]
    assert data["indexed_now"] == 6
    assert again["indexed_now"] == 0


def test_eval_text_report_and_bad_dataset(tmp_path: Path) -> None:
    run = _eval(str(TINY), "--data-dir", str(tmp_path / "data"), "--queries", "2")
    assert run.returncode == 0, run.stderr
    assert "2 queries, 6 documents" in run.stdout
    assert "ndcg@10" in run.stdout
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "corpus.jsonl").write_text('{"_id": "1", "text": "x"}\n')
    bad = _eval(str(tmp_path / "broken"), "--data-dir", str(tmp_path / "data"))
    assert bad.returncode == 1
    assert "missing qrels/test.tsv" in bad.stderr
    assert "Traceback" not in bad.stderr


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "eval" / "cranfield").is_dir(), reason="../shared/eval is not here (it is on CI)")
def test_cranfield_beats_bm25(tmp_path: Path) -> None:
    run = _eval(str(SHARED / "eval" / "cranfield"), "--json", "--data-dir", str(tmp_path / "data"))
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["queries"] == 225
    assert data["ndcg@10"] > 0.411  # BM25 alone, measured (../shared/eval/README.md)


def test_eval_runs_through_a_configured_reranker(tmp_path: Path) -> None:
    from tests.integration.test_rerank import _overlap_cross_encoder

    model = _overlap_cross_encoder(tmp_path / "reranker")
    config = tmp_path / "rerank.yaml"
    config.write_text(f"rerank:\n  provider: cross_encoder\n  model_dir: {model}\n")
    run = _eval(str(TINY), "--json", "--config", str(config), "--data-dir", str(tmp_path / "data"))
    assert run.returncode == 0, run.stderr
    data = json.loads(run.stdout)
    assert data["settings"]["rerank"] == "cross_encoder"
    assert data["ndcg@10"] == pytest.approx(0.75)  # the term-overlap reranker keeps each answer first
