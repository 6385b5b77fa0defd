"""Page images of PDFs with absurd proportions stay small and quick (found by an external attack run:
a 0.01 x 10^7 pt page rendered as a 1 x 10,954,452 px PNG in 3.2 s, 60 of them at once took 2 GB)."""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from appliance.api.page_images import MAX_PIXELS, MAX_SIDE, render_page
from tests.support.nasty_files import write_pdf


def _pdf(path: Path, width: float, height: float) -> Path:
    """A one-page PDF with this MediaBox, written by hand as an uploader would."""
    return write_pdf(path, [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
                            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {width} {height}] >>".encode()])


@pytest.mark.parametrize(("width", "height"), [(0.01, 10_000_000), (1, 14_400), (14_400, 1), (612, 792)])
def test_a_page_of_any_proportions_renders_within_the_bounds(tmp_path: Path, width: float, height: float) -> None:
    from PIL import Image

    png = render_page(_pdf(tmp_path / "page.pdf", width, height), 1, width=2000)
    w, h = Image.open(io.BytesIO(png)).size
    assert max(w, h) <= MAX_SIDE  # the strip was 1 x 10,954,452 px
    assert w * h <= MAX_PIXELS


def test_a_passage_is_found_on_its_page_despite_other_spacing_and_case() -> None:
    import pypdfium2 as pdfium

    from appliance.api.page_images import passage_rects

    pdf = pdfium.PdfDocument(str(Path(__file__).parents[2] / "samples" / "layout-parser-paper-fast.pdf"))
    page = pdf[0]
    words = page.get_textpage().get_text_range().split()
    abstract = words.index("Abstract.")
    passage = "  ".join(words[abstract:abstract + 60]).upper()  # the parser's text differs in spacing and case
    rects = passage_rects(page, passage)
    height = page.get_height()
    assert 5 <= len(rects) <= 20  # a line a rectangle, about one paragraph's worth
    assert all(0 <= top < bottom <= height for _, top, _, bottom in rects)
    tops = sorted(top for _, top, _, _ in rects)
    assert tops[-1] - tops[0] < height / 3  # one stretch of the page, not words scattered over it
    assert passage_rects(page, "nothing like this is written anywhere on the page") == []
    pdf.close()
