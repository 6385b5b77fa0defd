"""Multi-page text PDFs written by hand (one Helvetica line per string), for tests of page-level parsing."""

from __future__ import annotations

from pathlib import Path

from tests.support.nasty_files import write_pdf


def _escape(line: str) -> bytes:
    return line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)").encode("latin-1")


def paged_pdf(path: Path, pages: list[list[str]]) -> Path:
    """A PDF whose page n shows the lines of pages[n], top to bottom, in the order given."""
    count = len(pages)
    # 1 catalog, 2 page tree, 3 font, then per page: its page object and its content stream.
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"", b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>"]
    kids = []
    for lines in pages:
        page_no, content_no = len(objects) + 1, len(objects) + 2
        kids.append(f"{page_no} 0 R".encode())
        ops = b"".join(b"BT /F1 11 Tf 72 %d Td (%s) Tj ET\n" % (740 - 16 * i, _escape(line))
                       for i, line in enumerate(lines))
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents %d 0 R "
                       b"/Resources << /Font << /F1 3 0 R >> >> >>" % content_no)
        objects.append(b"<< /Length %d >>\nstream\n" % len(ops) + ops + b"\nendstream")
    objects[1] = b"<< /Type /Pages /Kids [" + b" ".join(kids) + b"] /Count %d >>" % count
    return write_pdf(path, objects)
