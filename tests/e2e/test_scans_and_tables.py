"""Documents as companies have them, through the real parser, embedder and store: scanned pages and
images read by OCR (Tesseract), and a financial statement's table kept whole enough that a question
about one line item finds the row with its figure."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from ingest import ocr
from tests.conftest import SAMPLES, make_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STATEMENTS = Path(__file__).parents[1] / "fixtures" / "tables" / "galaxy-gaming-10k-2021-statements.pdf"


def _scans(folder: Path) -> None:
    """The memo as a scanner makes it: an image-only PDF at 200 dpi, and the same page as a PNG."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(SAMPLES / "fake-memo.pdf"))
    image = pdf[0].render(scale=200 / 72, grayscale=True).to_pil()
    pdf.close()
    image.save(folder / "scanned-memo.pdf", format="PDF", resolution=200)
    image.save(folder / "memo-photo.png")


def _ask(services: Any, question: str) -> Any:
    from appliance.access.auth import LOCAL
    from appliance.rag import Answer
    from appliance.usecases import answer

    return [e for e in answer(services, LOCAL, question, [], "cli") if isinstance(e, Answer)][-1]


@pytest.mark.skipif(ocr.available() is not None, reason=str(ocr.available()))
def test_scans_and_images_are_read_by_ocr_and_found_with_their_page(tmp_path: Path) -> None:
    docs = tmp_path / "share"
    docs.mkdir()
    _scans(docs)
    services = make_services(tmp_path / "data")
    try:
        report = services.ingest_pipeline.run([docs])
        by_name = {Path(f.path).name: f for f in report.files}
        assert by_name["scanned-memo.pdf"].status == "added", by_name["scanned-memo.pdf"].error
        assert any("1 of 1 page(s) without a text layer read by OCR" in n for n in by_name["scanned-memo.pdf"].notes)
        assert by_name["memo-photo.png"].status == "added", by_name["memo-photo.png"].error
        record = services.manifest.get(str(docs / "scanned-memo.pdf"))
        assert record is not None
        assert record.parser == "pypdfium2+tesseract"
        hits = services.rag.search("How many blankets were delivered?", None)
        memo = next(h for h in hits if h.file_name == "scanned-memo.pdf")
        assert memo.page == 1
        assert "10,000 blankets" in memo.text
    finally:
        services.close()


def test_without_ocr_a_scan_is_reported_and_an_image_refused_with_the_reason(tmp_path: Path) -> None:
    docs = tmp_path / "share"
    docs.mkdir()
    _scans(docs)
    shutil.copy(SAMPLES / "fake-memo.pdf", docs)  # a text layer: read as ever
    services = make_services(tmp_path / "data", ingest={"ocr": "off"})
    try:
        report = services.ingest_pipeline.run([docs])
    finally:
        services.close()
    by_name = {Path(f.path).name: f for f in report.files}
    assert by_name["fake-memo.pdf"].status == "added"
    assert by_name["scanned-memo.pdf"].status == "failed"
    assert "OCR off" in (by_name["scanned-memo.pdf"].error or "")
    assert by_name["memo-photo.png"].status == "failed"
    assert "OCR, which is off" in (by_name["memo-photo.png"].error or "")


def test_a_question_about_one_line_item_finds_the_statements_row_with_its_figure(tmp_path: Path) -> None:
    docs = tmp_path / "share"
    docs.mkdir()
    shutil.copy(STATEMENTS, docs)
    services = make_services(tmp_path / "data")
    try:
        services.ingest_pipeline.run([docs])
        best = services.rag.search("What were the total licensing fees revenue in 2021?", None)[0]
        assert best.page == 3  # the statement of operations
        assert "Licensing fees | $ 19,984,378 | $ 10,230,316" in best.text  # the row, its cells together
        assert any("STATEMENTS OF OPERATIONS" in s for s in best.section)  # the caption heads the table
        final = _ask(services, "What was the total revenue in 2021?")
        assert final.sources[0].page == 3
        assert "19,984,378" in final.sources[0].text
    finally:
        services.close()
