"""Scans as a scanner makes them: text drawn on a page image and saved as an image-only PDF (no text
layer), for tests of OCR through the whole flow."""

from __future__ import annotations

from pathlib import Path

NOTICE = ["Facilities notice, March 2025", "",
          "The Kestrel build server was moved to basement room B-113.",
          "Badge access to room B-113 is granted by the facilities desk.", "",
          "Questions: facilities@example.com"]


def make_scan(path: Path, lines: list[str] = NOTICE, dpi: int = 200) -> Path:
    """A one-page, image-only PDF of `lines` (Pillow's own font: no system font needed)."""
    from PIL import Image, ImageDraw, ImageFont

    page = Image.new("L", (int(8.5 * dpi), 11 * dpi), 255)
    draw = ImageDraw.Draw(page)
    font = ImageFont.load_default(size=dpi // 5)
    for i, line in enumerate(lines):
        draw.text((dpi * 3 // 4, dpi + i * dpi // 3), line, fill=0, font=font)
    path.parent.mkdir(parents=True, exist_ok=True)
    page.save(path, format="PDF", resolution=dpi)
    return path
