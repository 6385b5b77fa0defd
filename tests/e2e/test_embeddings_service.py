"""Embeddings as a shared service: appliance B ingests the samples through appliance A's
POST /v1/embeddings (`embeddings.provider: openai`, A's API key) and finds what an appliance embedding
in-process finds: the same passages in the same order with the same scores. A is a real
`appliance serve` with keys required; B and the in-process reference parse, chunk and store for real."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT, SAMPLES, make_services
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e]
FILES = ("fake-memo.pdf", "rust-book-installation.md", "family-day.eml", "book-war-and-peace-1p.txt",
         "udhr-article-1.epub", "stanley-cups.csv", "simple.docx")
QUERIES = ["How many bottles of water were delivered?", "install rust with rustup on Linux",
           "family day activities for children", "Anna Pavlovna Scherer", "who won the Stanley Cup",
           "all human beings are born free and equal", "a question about nothing in these files"]


@pytest.fixture(scope="module")
def server_a(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str, Path]]:
    root = tmp_path_factory.mktemp("appliance-a")
    data = root / "data"
    key = subprocess.run([sys.executable, "-m", "appliance.cli", "keys", "create", "appliance-b", "--data-dir",
                          str(data)], check=True, cwd=ROOT, capture_output=True, text=True).stdout.strip()
    log = root / "serve.log"
    with appliance_server(data, log, {"APPLIANCE_SERVER__REQUIRE_API_KEY": "true"}) as (url, _pid):
        yield url, key, data
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def _ingest_and_search(data_dir: Path, docs: Path, **overrides: Any) -> list[list[tuple[str, int | None, float]]]:
    services = make_services(data_dir, **overrides)
    try:
        report = services.ingest_pipeline.run([docs])
        assert report.count("failed") == 0, report
        assert report.count("added") == len(FILES)
        return [[(s.file_name, s.chunk_index, s.score) for s in services.rag.search(q, limit=8)] for q in QUERIES]
    finally:
        services.close()


def test_an_appliance_embedding_through_another_finds_what_it_finds_in_process(
        server_a: tuple[str, str, Path], tmp_path: Path) -> None:
    url, key, data_a = server_a
    docs = tmp_path / "docs"
    docs.mkdir()
    for name in FILES:
        (docs / name).write_bytes((SAMPLES / name).read_bytes())
    local = _ingest_and_search(tmp_path / "local", docs)
    remote = _ingest_and_search(tmp_path / "b", docs, embeddings={
        "provider": "openai", "base_url": url + "/v1", "model": "all-MiniLM-L6-v2-int8", "api_key": key,
        "send_input_type": True, "batch_size": 16})
    for query, here, there in zip(QUERIES, local, remote, strict=True):
        assert [(f, c) for f, c, _ in there] == [(f, c) for f, c, _ in here], query  # same passages, same order
        assert [s for *_, s in there] == pytest.approx([s for *_, s in here], abs=1e-5), query
    assert remote[0][0][0] == "fake-memo.pdf"
    audit = (data_a / "audit" / "audit.jsonl").read_text()
    assert '"event": "embeddings"' in audit
    assert '"input_type": "query"' in audit  # B's questions went to A too


def test_a_wrong_key_stops_ingestion_with_a_message_naming_the_setting(server_a: tuple[str, str, Path],
                                                                       tmp_path: Path) -> None:
    from appliance.backends.common import BackendUnavailable

    url, _key, _ = server_a
    services = make_services(tmp_path / "b", embeddings={"provider": "openai", "base_url": url + "/v1",
                                                         "model": "all-MiniLM-L6-v2-int8", "api_key": "rag-wrong-0000"})
    try:
        with pytest.raises(BackendUnavailable, match=rf"embedding server at {url}/v1 refused embeddings.api_key"):
            _ = services.embedding.dimension
    finally:
        services.close()
