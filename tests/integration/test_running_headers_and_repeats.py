"""Fewer tokens for the same recall (issue 23): a PDF's running header and footer are left out of the text
that is embedded and BM25-indexed, yet kept for citations; identical chunks are embedded once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.conftest import make_services
from tests.support.paged_pdf import paged_pdf

HEADER = "Northwind Traders - Internal - Do not distribute"
FACTS = [
    "The Lisbon warehouse ships frozen goods on Mondays and Thursdays only.",
    "Returns of damaged pallets are credited within twelve working days.",
    "The night shift in the Rotterdam depot is staffed by nine forklift drivers.",
    "Invoices above forty thousand euros need a second signature from the treasurer.",
    "Customer complaints about late deliveries go to the logistics ombudsman first.",
]


@pytest.fixture
def services(tmp_path: Path) -> Any:
    s = make_services(tmp_path / "data")
    yield s
    s.close()


def _points(services: Any) -> list[Any]:
    return [p for batch in services.store.scroll() for p in batch]


def test_a_running_header_is_not_embedded_again_but_citations_keep_their_page(services: Any, tmp_path: Path) -> None:
    pages = [[HEADER, f"Section {i + 1}. {fact}", f"Page {i + 1} of {len(FACTS)}"] for i, fact in enumerate(FACTS)]
    (tmp_path / "docs").mkdir()
    pdf = paged_pdf(tmp_path / "docs" / "handbook.pdf", pages)
    report = services.ingest_pipeline.run([pdf])
    assert report.count("added") == 1
    by_page = {p.payload["page"]: p for p in _points(services)}
    assert sorted(by_page) == [1, 2, 3, 4, 5]
    assert HEADER in by_page[1].text  # the first page keeps it: it may be the only place that names the document
    for page in (2, 3, 4, 5):
        point = by_page[page]
        assert HEADER not in point.indexed_text
        assert "Page " not in point.text
        assert FACTS[page - 1] in point.text
        assert point.payload["running_lines"] == [HEADER, f"Page {page} of 5"]  # from the page's edges inwards
    sources = services.rag.retrieve("How many forklift drivers work the night shift in Rotterdam?")
    assert sources[0].location == "handbook.pdf, page 3"
    assert FACTS[2] in sources[0].text
    assert HEADER not in sources[0].text
    # The header still finds the document: its first page keeps it.
    assert {s.page for s in services.rag.retrieve("Northwind Traders Internal distribute")} & {1}


class _Counting:
    """The real embedder, counting what it is asked to embed."""

    def __init__(self, inner: Any) -> None:
        self.inner, self.texts, self.model_name = inner, [], inner.model_name
        self.dimension = inner.dimension

    def embed(self, texts: list[str]) -> np.ndarray:
        self.texts += texts
        result: np.ndarray = self.inner.embed(texts)
        return result


def test_identical_chunks_are_embedded_once_and_keep_their_own_pages(services: Any, tmp_path: Path) -> None:
    from ingest.pipeline import IngestPipeline

    memo = ["May 5, 2023", "To Whom it May Concern:", "There were 20,000 bottles of water delivered on January 23.",
            "Best Regards, Mallori"]
    docs = tmp_path / "docs"
    docs.mkdir()
    paged_pdf(docs / "memo.pdf", [memo, memo])  # a page printed twice (as in fake-memo-with-duplicate-page.pdf)
    (docs / "a.txt").write_text("Parking permits are renewed every January at the front desk.\n")
    (docs / "b.txt").write_text("Parking  permits are renewed every January\nat the front desk.\n")  # spacing only
    counting = _Counting(services.embedding)
    pipeline = IngestPipeline(services.settings.ingest, services.manifest, services.store, counting)
    try:
        report = pipeline.run([docs])
    finally:
        pipeline.close()
    assert report.count("added") == 3
    points = _points(services)
    memo_points = sorted((p for p in points if p.payload["file_name"] == "memo.pdf"), key=lambda p: p.payload["page"])
    assert [p.payload["page"] for p in memo_points] == [1, 2]
    assert memo_points[0].vector == memo_points[1].vector
    assert sum("bottles of water" in t for t in counting.texts) == 1  # two chunks, one embedding
    assert len(counting.texts) == len({" ".join(t.split()) for t in counting.texts})
    assert len(points) == 4


def test_the_vector_cache_folds_spacing_and_forgets_its_oldest_entries(services: Any) -> None:
    from ingest import pipeline as module

    counting = _Counting(services.embedding)
    pipeline = module.IngestPipeline(services.settings.ingest, services.manifest, services.store, counting)
    first = pipeline._embed(["Leave is  25 days.", "Leave is 25 days.", "Carry-over is 5 days."])
    assert len(counting.texts) == 2
    assert counting.texts[1] == "Carry-over is 5 days."
    assert np.array_equal(first[0], first[1])
    pipeline._embed(["Carry-over is\n5 days."])
    assert len(counting.texts) == 2  # still cached
    old = module.VECTOR_CACHE
    module.VECTOR_CACHE = 1
    try:
        pipeline._embed(["Sick leave needs a note after three days."])
        pipeline._embed(["Leave is 25 days."])
    finally:
        module.VECTOR_CACHE = old
    assert len(counting.texts) == 4  # evicted, so embedded again
