"""OCR for PDF pages without a text layer and for image files, by Tesseract (Debian's `tesseract-ocr`).

Chosen by measurement against RapidOCR, whose ONNX models ship inside its wheels (docs/benchmarks.md,
"OCR"). On scans of 10 pages with a known text layer, at 300 dpi on 2 cores: Tesseract 5.3 got 96.2%
of the characters right (99.3% of the words) in 3.2 s a page with 0.2 GB resident; rapidocr 3.10
91.0% (95.7%) in 12.3 s with 1.2 GB, reading across the columns of two-column pages; and
rapidocr_onnxruntime 1.4.4 83.7%, dropping most spaces between English words. Tesseract is 23 MB of
Debian packages, RapidOCR about 220 MB of wheels (OpenCV mostly). Tesseract sends nothing; its models are the
`tesseract-ocr-LANG` packages' files under /usr/share/tesseract-ocr, and it is only ever given "stdin"
as its input (an http URL there would be fetched: it links libcurl).

One page at a time: a PDF page is rendered by pypdfium2 in grayscale at `dpi`, an image file's
frames are decoded by Pillow one by one, and each goes to a `tesseract` process as a PGM over stdin;
the text comes back on stdout. Memory holds one page image, whatever the file's length. Tesseract
runs on one thread (`OMP_THREAD_LIMIT=1`): with its OpenMP threads (Debian's default) a page took
4-5x longer on this 2-core machine, and the parse workers already use the cores in parallel.

Languages are ISO 639-1 codes (`en`, `de`), Tesseract's own names (`eng`, `deu`, `chi_sim`), or a
mix; several are read together (Tesseract's `eng+deu`). Each needs its language data, Debian's
`tesseract-ocr-LANG` package (`tesseract-ocr-eng` comes with `tesseract-ocr`).
"""

from __future__ import annotations

import functools
import io
import math
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from PIL import Image

PAGE_TIMEOUT_S = 300.0  # one page; a normal page takes 1-3 s at 300 dpi
MAX_PAGE_PIXELS = 40_000_000  # an A3 page at 400 dpi; larger pages are rendered at a lower resolution
IMAGE_DPI_RANGE = (70, 1200)  # an image's own resolution outside this is a wrong tag: Tesseract estimates it

# ISO 639-1 → Tesseract's language data names (the `tesseract-ocr-LANG` package is named after the latter).
ISO_639_1 = {
    "af": "afr", "ar": "ara", "bg": "bul", "ca": "cat", "cs": "ces", "cy": "cym", "da": "dan", "de": "deu",
    "el": "ell", "en": "eng", "es": "spa", "et": "est", "eu": "eus", "fa": "fas", "fi": "fin", "fr": "fra",
    "ga": "gle", "gl": "glg", "he": "heb", "hi": "hin", "hr": "hrv", "hu": "hun", "id": "ind", "is": "isl",
    "it": "ita", "ja": "jpn", "ko": "kor", "lt": "lit", "lv": "lav", "mt": "mlt", "nb": "nor", "nl": "nld",
    "nn": "nor", "no": "nor", "pl": "pol", "pt": "por", "ro": "ron", "ru": "rus", "sk": "slk", "sl": "slv",
    "sq": "sqi", "sr": "srp", "sv": "swe", "th": "tha", "tr": "tur", "uk": "ukr", "vi": "vie", "zh": "chi_sim",
}
_TESSERACT_NAME = re.compile(r"^[a-z]{3}(_[a-z]+)*$")


class OcrError(Exception):
    """OCR could not read a file or a page; the message is one line, fit for the ingest report."""


def available() -> str | None:
    """None when Tesseract is installed with at least one language, else a one-line reason."""
    binary = shutil.which("tesseract")
    if binary is None:
        return "OCR not installed: apt-get install tesseract-ocr tesseract-ocr-eng"
    try:
        if not _installed_languages(binary):
            return "OCR has no language data: apt-get install tesseract-ocr-eng"
    except OcrError as exc:
        return str(exc)
    return None


def installed_languages() -> frozenset[str]:
    """Tesseract's names of the languages whose data is installed (`eng`, ...); OcrError without Tesseract."""
    return _installed_languages(_binary())


def tesseract_languages(languages: Sequence[str]) -> str:
    """Tesseract's `-l` value for ISO 639-1 codes or Tesseract names; OcrError names what is missing."""
    installed = installed_languages()
    names: list[str] = []
    for code in languages:
        code = code.strip().lower().split("-")[0]  # en-US reads as en
        name = ISO_639_1.get(code, code)
        if not _TESSERACT_NAME.match(name):
            raise OcrError(f"unknown OCR language {code!r}: use an ISO 639-1 code (en) or Tesseract's name (eng)")
        if name not in names:
            names.append(name)
    if not names:
        names = ["eng"]
    missing = [n for n in names if n not in installed]
    if missing:
        packages = " ".join(f"tesseract-ocr-{n.replace('_', '-')}" for n in missing)
        raise OcrError(f"OCR language data not installed ({', '.join(missing)}): apt-get install {packages}")
    return "+".join(names)


def ocr_pdf_pages(path: Path, pages: list[int], languages: Sequence[str], dpi: int = 300) -> dict[int, str]:
    """Text of the given 1-based pages of a PDF, each rendered at `dpi` and read by Tesseract."""
    import pypdfium2 as pdfium

    lang = tesseract_languages(languages)
    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        raise OcrError(f"cannot open the PDF for OCR: {exc}") from None
    out: dict[int, str] = {}
    try:
        for number in pages:
            if not 1 <= number <= len(pdf):
                raise OcrError(f"page {number} is not in the PDF (it has {len(pdf)})")
            page = pdf[number - 1]
            try:
                width, height = page.get_size()
                scale = min(dpi / 72, math.sqrt(MAX_PAGE_PIXELS / max(width * height, 1.0)))
                bitmap = page.render(scale=scale, grayscale=True)
            except pdfium.PdfiumError as exc:
                raise OcrError(f"page {number} could not be rendered for OCR: {exc}") from None
            finally:
                page.close()
            try:  # the image shares the bitmap's memory: the bitmap lives until Tesseract has the pixels
                out[number] = _tesseract(bitmap.to_pil(), lang, round(scale * 72), f"page {number}")
            finally:
                bitmap.close()
    finally:
        pdf.close()
    return out


def ocr_image(path: Path, languages: Sequence[str]) -> list[str]:
    """Text of an image file (PNG, JPEG, TIFF, ...): one string per page of a multi-page TIFF, else one."""
    from PIL import Image, UnidentifiedImageError

    lang = tesseract_languages(languages)
    try:
        with Image.open(path) as image:
            return [_tesseract(frame, lang, _image_dpi(frame), f"page {n}")
                    for n, frame in enumerate(_frames(image), start=1)]
    except (UnidentifiedImageError, Image.DecompressionBombError, OSError, SyntaxError, ValueError) as exc:
        raise OcrError(f"cannot read the image for OCR: {str(exc)[:200]}") from None


def _frames(image: Image.Image) -> Iterator[Image.Image]:
    """Each page of a TIFF (one decoded at a time), grayscale on white; the first frame of other formats."""
    count = getattr(image, "n_frames", 1) if image.format == "TIFF" else 1
    for index in range(count):
        image.seek(index)
        yield _grayscale(image)


def _grayscale(image: Image.Image) -> Image.Image:
    from PIL import Image

    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):  # 16-bit or float scans: scale to 8 bits, not clip
        peak = max(image.getextrema()[1], 1)
        return image.point(lambda v: v * 255 / peak).convert("L")
    if image.mode in ("RGBA", "LA", "PA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("L")  # transparent text backgrounds read as paper
    return image.convert("L")


def _image_dpi(image: Image.Image) -> int | None:
    dpi = image.info.get("dpi")
    try:
        value = round(float(dpi[0])) if dpi else 0
    except (TypeError, ValueError, IndexError):
        return None
    return value if IMAGE_DPI_RANGE[0] <= value <= IMAGE_DPI_RANGE[1] else None


def _tesseract(image: Image.Image, lang: str, dpi: int | None, what: str) -> str:
    """One grayscale page through `tesseract stdin stdout`: its text, tidied (no form feed, no trailing blanks)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PPM")  # PGM for mode L: no compression to pay for, Leptonica reads it
    command = [_binary(), "stdin", "stdout", "-l", lang]
    if dpi:
        command += ["--dpi", str(dpi)]
    env = {**os.environ, "OMP_THREAD_LIMIT": "1"}
    try:
        done = subprocess.run(command, input=buffer.getvalue(), capture_output=True, env=env,
                              timeout=PAGE_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired:
        raise OcrError(f"{what}: OCR took longer than {PAGE_TIMEOUT_S:.0f} s") from None
    except OSError as exc:
        raise OcrError(f"{what}: tesseract does not run: {exc}") from None
    if done.returncode != 0:
        detail = done.stderr.decode("utf-8", "replace").strip().splitlines()
        raise OcrError(f"{what}: tesseract failed ({detail[-1][:200] if detail else f'exit {done.returncode}'})")
    text = done.stdout.decode("utf-8", "replace").replace("\f", "")
    lines = [line.rstrip() for line in text.splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def _binary() -> str:
    binary = shutil.which("tesseract")
    if binary is None:
        raise OcrError("OCR not installed: apt-get install tesseract-ocr tesseract-ocr-eng")
    return binary


@functools.lru_cache(maxsize=4)
def _installed_languages(binary: str) -> frozenset[str]:
    """The language data Tesseract finds (`tesseract --list-langs`), read once per process."""
    try:
        done = subprocess.run([binary, "--list-langs"], capture_output=True, timeout=30, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise OcrError(f"tesseract does not run: {exc}") from None
    if done.returncode != 0:
        raise OcrError(f"tesseract does not run: exit {done.returncode}")
    lines = done.stdout.decode("utf-8", "replace").splitlines()[1:]  # the first line names the folder
    return frozenset(line.strip() for line in lines if line.strip() and line.strip() != "osd")
