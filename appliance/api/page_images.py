"""PDF pages rendered as PNG on the server, so a citation can show the page it came from without
the browser loading a PDF viewer (or anything) from elsewhere."""

from __future__ import annotations

import io
import threading
from pathlib import Path

MAX_PIXELS = 6_000_000  # a page of absurd proportions must not make a bitmap that fills the memory
MAX_SIDE = 4000  # nor a strip a million pixels long (a 0.01 x 10^7 pt page): slow to encode, useless to show
_lock = threading.Lock()  # pdfium is not thread-safe: one rendering at a time in this process


def render_page(path: Path, page: int, width: int = 900) -> bytes:
    """Page `page` (1-based) of the PDF as PNG bytes, `width` pixels wide; IndexError if there is no such page."""
    import pypdfium2 as pdfium

    with _lock:
        pdf = pdfium.PdfDocument(str(path))
        try:
            if not 1 <= page <= len(pdf):
                raise IndexError(f"{path.name} has {len(pdf)} pages, not a page {page}")
            pdf_page = pdf[page - 1]
            w, h = max(pdf_page.get_width(), 1.0), max(pdf_page.get_height(), 1.0)
            scale = min(width / w, MAX_SIDE / h, (MAX_PIXELS / (w * h)) ** 0.5)
            image = pdf_page.render(scale=scale).to_pil()
            pdf_page.close()
        finally:
            pdf.close()
        # Encoded under the lock too: many requests at once hold one bitmap, not one each.
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
    return out.getvalue()
