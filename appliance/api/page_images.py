"""PDF pages rendered as PNG on the server, so a citation can show the page it came from without
the browser loading a PDF viewer (or anything) from elsewhere."""

from __future__ import annotations

import difflib
import io
import re
import threading
from pathlib import Path
from typing import Any

MAX_PIXELS = 6_000_000  # a page of absurd proportions must not make a bitmap that fills the memory
MAX_SIDE = 4000  # nor a strip a million pixels long (a 0.01 x 10^7 pt page): slow to encode, useless to show
_WORD = re.compile(r"\w+")
_lock = threading.Lock()  # pdfium is not thread-safe: one rendering at a time in this process


MIN_RUN = 3  # words in a row that must match for a stretch of the page to count as the passage's
Rect = tuple[float, float, float, float]  # left, top, right, bottom in PDF points from the top-left


def render_page(path: Path, page: int, width: int = 900, passage: str | None = None) -> bytes:
    """Page `page` (1-based) of the PDF as PNG bytes, `width` pixels wide, with the lines of `passage`
    (a chunk's text) marked where they are on the page; IndexError if there is no such page."""
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
            rects = passage_rects(pdf_page, passage) if passage and not pdf_page.get_rotation() else []
            pdf_page.close()
        finally:
            pdf.close()
        if rects:
            image = _marked(image, rects, scale)
        # Encoded under the lock too: many requests at once hold one bitmap, not one each.
        out = io.BytesIO()
        image.save(out, format="PNG", optimize=True)
    return out.getvalue()


def passage_rects(pdf_page: Any, passage: str) -> list[Rect]:
    """Where a passage's text is on the page: its words matched, in runs, against the page's words (the
    parser's text and pdfium's differ in spaces, hyphens and ligatures, so no exact search), and each
    matched stretch given as pdfium's rectangles, one a line."""
    import pypdfium2.raw as raw

    text_page = pdf_page.get_textpage()
    try:
        chars = "".join(chr(raw.FPDFText_GetUnicode(text_page.raw, i)) for i in range(text_page.count_chars()))
        spans = [(m.start(), m.end()) for m in _WORD.finditer(chars)]
        page_words = [chars[a:b].lower() for a, b in spans]
        wanted = [w.lower() for w in _WORD.findall(passage)]
        least = min(MIN_RUN, len(wanted))
        blocks = difflib.SequenceMatcher(None, page_words, wanted, autojunk=False).get_matching_blocks()
        rects: list[Rect] = []
        height = pdf_page.get_height()
        for block in blocks:
            if block.size < least or block.size == 0:
                continue
            start, end = spans[block.a][0], spans[block.a + block.size - 1][1]
            for i in range(text_page.count_rects(start, end - start)):
                left, bottom, right, top = text_page.get_rect(i)
                rects.append((left, height - top, right, height - bottom))
        return rects
    finally:
        text_page.close()


def _marked(image: Any, rects: list[Rect], scale: float) -> Any:
    """The rendered page with a translucent highlight and an outline over each rectangle."""
    from PIL import Image, ImageDraw

    overlay = Image.new("RGBA", image.size, (0, 0, 0, 0))
    draw = ImageDraw.Draw(overlay)
    pad = 2
    for left, top, right, bottom in rects:
        box = (left * scale - pad, top * scale - pad, right * scale + pad, bottom * scale + pad)
        draw.rectangle(box, fill=(255, 214, 0, 90), outline=(191, 120, 0, 255), width=2)
    return Image.alpha_composite(image.convert("RGBA"), overlay).convert("RGB")
