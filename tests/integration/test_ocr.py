"""OCR by the real Tesseract on scans made here from pages whose text layer is known."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from typing import Any

import pytest

from ingest import ocr
from tests.conftest import SAMPLES

MEMO = SAMPLES / "fake-memo.pdf"
PAPER = SAMPLES / "layout-parser-paper-fast.pdf"


@pytest.fixture(autouse=True)
def _tesseract() -> None:
    missing = ocr.available()
    if missing:
        pytest.skip(missing)


def _render(pdf_path: Path, page: int, dpi: int) -> tuple[Any, str]:
    """A page as a grayscale image at `dpi`, and its text layer."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        textpage = pdf[page - 1].get_textpage()
        text = textpage.get_text_range()
        textpage.close()
        return pdf[page - 1].render(scale=dpi / 72, grayscale=True).to_pil(), text
    finally:
        pdf.close()


def _chars_correct(ocr_text: str, reference: str) -> float:
    from rapidfuzz.distance import Levenshtein

    def norm(text: str) -> str:
        return re.sub(r"\s+", " ", unicodedata.normalize("NFKC", text)).strip()

    return 1 - Levenshtein.distance(norm(ocr_text), norm(reference)) / len(norm(reference))


def _text_layer(pdf_path: Path) -> str:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(pdf_path))
    try:
        textpage = pdf[0].get_textpage()
        return str(textpage.get_text_range())
    finally:
        pdf.close()


def _scan(tmp_path: Path, source: Path, page: int, dpi: int) -> tuple[Path, str]:
    image, text = _render(source, page, dpi)
    scan = tmp_path / f"scan-{dpi}.pdf"
    image.save(scan, format="PDF", resolution=dpi)  # the pixels only, as JPEG: what a scanner makes
    assert not _text_layer(scan).strip(), "the scan must have no text layer"
    return scan, text


def test_a_scanned_memo_reads_back_its_text(tmp_path: Path) -> None:
    scan, text = _scan(tmp_path, MEMO, 1, 150)
    pages = ocr.ocr_pdf_pages(scan, [1], ["en"])
    assert list(pages) == [1]
    assert _chars_correct(pages[1], text) >= 0.9
    assert "20,000 bottles of water" in pages[1]


@pytest.mark.slow
@pytest.mark.parametrize("dpi", [200, 300])  # at 150 dpi this page reads 89.6% (a figure's labels): benchmarks.ocr
def test_a_scanned_full_page_reads_back_at_least_nine_characters_in_ten(tmp_path: Path, dpi: int) -> None:
    scan, text = _scan(tmp_path, PAPER, 2, dpi)
    assert _chars_correct(ocr.ocr_pdf_pages(scan, [1], ["eng"], dpi=dpi)[1], text) >= 0.9


@pytest.mark.parametrize("suffix", ["png", "jpg", "tiff"])
def test_an_image_file_reads_back_its_text(tmp_path: Path, suffix: str) -> None:
    image, text = _render(MEMO, 1, 150)
    path = tmp_path / f"memo.{suffix}"
    image.save(path, dpi=(150, 150))
    [read] = ocr.ocr_image(path, ["en"])
    assert _chars_correct(read, text) >= 0.9


def test_black_text_on_a_transparent_png_reads_as_text_on_paper(tmp_path: Path) -> None:
    from PIL import Image, ImageOps

    gray, text = _render(MEMO, 1, 150)
    # Every pixel black; only the alpha channel draws the letters (a flattening that drops alpha sees black).
    rgba = Image.new("RGBA", gray.size, (0, 0, 0, 0))
    rgba.putalpha(ImageOps.invert(gray))
    path = tmp_path / "memo.png"
    rgba.save(path)
    [read] = ocr.ocr_image(path, ["en"])
    assert _chars_correct(read, text) >= 0.9


@pytest.mark.slow
def test_a_multi_page_tiff_gives_one_text_per_page(tmp_path: Path) -> None:
    from PIL import Image

    memo, memo_text = _render(MEMO, 1, 150)
    blank = Image.new("L", memo.size, 255)
    path = tmp_path / "fax.tiff"
    memo.save(path, save_all=True, append_images=[blank, memo.convert("1")], dpi=(150, 150))
    texts = ocr.ocr_image(path, ["en"])
    assert len(texts) == 3
    assert _chars_correct(texts[0], memo_text) >= 0.9
    assert texts[1] == ""
    assert _chars_correct(texts[2], memo_text) >= 0.9  # a bilevel (fax) page


def test_iso_codes_and_tesseract_names_are_the_same_language() -> None:
    assert ocr.tesseract_languages(["en"]) == ocr.tesseract_languages(["eng"]) == "eng"
    assert ocr.tesseract_languages(["en-US", "eng"]) == "eng"
    assert ocr.tesseract_languages([]) == "eng"


def test_a_language_without_its_data_names_the_package_to_install() -> None:
    if "mlt" in ocr.installed_languages():
        pytest.skip("Maltese language data is installed here")
    with pytest.raises(ocr.OcrError, match=r"apt-get install tesseract-ocr-mlt"):
        ocr.tesseract_languages(["en", "mt"])
    with pytest.raises(ocr.OcrError, match="unknown OCR language"):
        ocr.tesseract_languages(["english!"])


def test_a_broken_image_or_a_missing_page_is_an_ocr_error(tmp_path: Path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 100)
    with pytest.raises(ocr.OcrError, match="cannot read the image"):
        ocr.ocr_image(broken, ["en"])
    with pytest.raises(ocr.OcrError, match="page 3 is not in the PDF"):
        ocr.ocr_pdf_pages(MEMO, [3], ["en"])
