"""Turn one file into a list of Elements (text with its page, heading path and kind).

PDFs go through pypdfium2's text layer (measured ~25x faster than unstructured's `fast`
strategy on these machines, with the same page numbers; see docs/benchmarks.md), with the
PDF outline giving the heading path. Pages without a text layer go to OCR (unstructured's
``ocr_only`` with tesseract) when it is installed, and are reported otherwise. Every other
format goes through unstructured, which parses them well.
"""

from __future__ import annotations

import codecs
import re
import shutil
import tempfile
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ingest import metadata
from ingest.metadata import DocumentMeta
from ingest.sniff import OFFICE_VARIANTS, modern_twin, problem

# What each extension is parsed as; anything else is skipped as unsupported.
UNSTRUCTURED_TYPES: dict[str, str] = {
    ".docx": "docx", ".pptx": "pptx", ".xlsx": "xlsx", ".csv": "csv", ".tsv": "tsv",
    ".html": "html", ".htm": "html", ".xhtml": "html", ".md": "md", ".markdown": "md",
    ".txt": "text", ".text": "text", ".log": "text", ".eml": "eml", ".msg": "msg", ".epub": "epub",
    ".odt": "odt", ".rtf": "rtf", ".rst": "rst", ".org": "org", ".xml": "xml",
    ".doc": "doc", ".ppt": "ppt", ".xls": "xls",
    **{variant: plain.lstrip(".") for variant, plain in OFFICE_VARIANTS.items()},  # .docm, .ppsx, .xlsm...
}
IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})  # read by OCR (ingest.ocr)
SUPPORTED_SUFFIXES = frozenset({".pdf", *UNSTRUCTURED_TYPES, *IMAGE_SUFFIXES})
LEGACY_OFFICE = frozenset({".doc", ".ppt"})  # unstructured converts these with LibreOffice
MIN_PAGE_CHARS = 16  # fewer characters than this on a PDF page: treat it as scanned
OBJECT_REPR = re.compile(r"'?<[\w.]+ object at 0x[0-9a-fA-F]+>'?")  # in a library's error text: not for readers
CAPTION_MAX_CHARS = 160  # a paragraph this short right before a table is its caption, kept in its heading path


class ParseError(Exception):
    """The file cannot be parsed; the message is the one-line reason shown to the user."""


@dataclass(frozen=True)
class Element:
    text: str
    kind: str  # unstructured's category: Title, NarrativeText, ListItem, Table, ...
    page: int | None = None  # PDF page, slide or sheet number (1-based)
    page_name: str | None = None  # sheet name for spreadsheets
    section: tuple[str, ...] = ()  # heading path
    table_html: str | None = None


@dataclass
class ParsedFile:
    elements: list[Element]
    parser: str
    pages: int | None = None
    notes: list[str] = field(default_factory=list)
    meta: DocumentMeta = field(default_factory=DocumentMeta)
    running: dict[int, list[str]] = field(default_factory=dict)  # page -> running header/footer lines left out


@dataclass(frozen=True)
class OcrOptions:
    """ingest.ocr: auto (pages without a text layer, and images), force (every PDF page: for text layers
    that are junk), off; the languages (ISO codes or Tesseract's names) and the dpi pages are read at."""

    mode: str = "auto"
    languages: tuple[str, ...] = ("en",)
    dpi: int = 300


def parse_file(path: Path, pdf_parser: str = "pypdfium2", ocr: str | OcrOptions = "auto",
               pdf_tables: bool = True, drop_running: bool = True) -> ParsedFile:
    """The file's elements and what it says about itself (its title at least: see ingest.metadata).
    drop_running=False keeps PDFs' running headers and footers (for benchmarks.dedup's comparison)."""
    options = ocr if isinstance(ocr, OcrOptions) else OcrOptions(mode=ocr)
    parsed = _parse(path, pdf_parser, options, pdf_tables, drop_running)
    parsed.meta = metadata.with_title(parsed.meta, _first_heading(parsed.elements), path)
    return parsed


def _first_heading(elements: list[Element]) -> str | None:
    for el in elements[:50]:
        if el.kind == "Title":
            return el.text
    return next((el.section[0] for el in elements[:50] if el.section), None)


def _parse(path: Path, pdf_parser: str, ocr: OcrOptions, pdf_tables: bool, drop_running: bool = True) -> ParsedFile:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise ParseError(f"unsupported file type {suffix or '(no extension)'!r}")
    twin = modern_twin(path, suffix)
    if twin is not None:
        # A .doc/.ppt/.xls that is really the modern format (common after a "Save as" rename).
        parsed = _parse_with_unstructured(path, UNSTRUCTURED_TYPES[twin])
        parsed.notes.append(f"saved as {suffix} but is a {twin} file; parsed by its content")
        return parsed
    reason = problem(path, suffix)
    if reason is not None:
        raise ParseError(reason)
    if suffix == ".pdf":
        if pdf_parser == "unstructured":
            return _parse_with_unstructured(path, "pdf")
        return parse_pdf(path, ocr=ocr, tables=pdf_tables, drop_running=drop_running)
    if suffix in IMAGE_SUFFIXES:
        return parse_image(path, ocr)
    if UNSTRUCTURED_TYPES[suffix] == "text":
        return parse_plain_text(path)
    if suffix in LEGACY_OFFICE and shutil.which("soffice") is None:
        raise ParseError(f"legacy {suffix} needs LibreOffice to convert it: "
                         "apt-get install libreoffice-writer-nogui libreoffice-impress-nogui")
    return _parse_with_unstructured(path, UNSTRUCTURED_TYPES[suffix])


# -- PDF ---------------------------------------------------------------------------------------------


def parse_pdf(path: Path, ocr: OcrOptions = OcrOptions(), tables: bool = True,
              drop_running: bool = True) -> ParsedFile:
    """The text layer, page by page, with the tables on it as Table elements (ingest.pdf_tables) and the
    outline as heading path; pages without a text layer (or every page, with OCR forced) go to OCR.
    Running headers and footers are dropped after their first page (ingest.running; ParsedFile.running)."""
    import pypdfium2 as pdfium

    from ingest.pdf_tables import PageTable, find_tables, split_page
    from ingest.running import drop_running_lines

    try:
        pdf = pdfium.PdfDocument(str(path))
    except pdfium.PdfiumError as exc:
        reason = str(exc)
        if "password" in reason.lower():
            raise ParseError("encrypted PDF (password required)") from None
        raise ParseError(f"corrupt PDF: {reason}") from None
    try:
        sections = _outline_by_page(pdf)
        elements: list[Element] = []
        scanned: list[int] = []
        current: tuple[str, ...] = ()
        page_pieces: list[list[str | PageTable]] = []
        for index in range(len(pdf)):
            page = pdf[index]
            textpage = page.get_textpage()
            pieces: list[str | PageTable] = []
            if ocr.mode != "force" and len(_clean_pdf_text(textpage.get_text_range() or "").strip()) >= MIN_PAGE_CHARS:
                # Tables are read while the page is open: their text is left out of the paragraphs around them.
                pieces = split_page(textpage, find_tables(page, textpage) if tables else [])
            textpage.close()
            page.close()
            if not pieces:
                scanned.append(index + 1)
            page_pieces.append([_clean_pdf_text(p) if isinstance(p, str) else p for p in pieces])
        running: dict[int, list[str]] = {}
        if drop_running:
            page_pieces, dropped = drop_running_lines(page_pieces)
            running = {index + 1: lines for index, lines in dropped.items()}
        for index, pieces in enumerate(page_pieces):
            current = sections.get(index, current)
            caption = ""  # a short paragraph right before a table names it ("CONSOLIDATED BALANCE SHEETS")
            for piece in pieces:
                if isinstance(piece, PageTable):
                    elements.append(Element(text=piece.text(), kind="Table", page=index + 1,
                                            section=(*current, caption) if caption else current,
                                            table_html=piece.html()))
                    continue
                paras = _paragraphs(piece)
                caption = paras[-1] if paras and len(paras[-1]) <= CAPTION_MAX_CHARS else ""
                for para in paras:
                    elements.append(Element(text=para, kind="NarrativeText", page=index + 1, section=current))
        pages = len(pdf)
        meta = metadata.from_pdf(pdf)
    finally:
        pdf.close()
    notes: list[str] = []
    parser = "pypdfium2"
    if scanned:
        elements, notes = _ocr_pages(path, scanned, elements, sections, ocr)
        if ocr.mode == "force" or any("read by OCR" in n for n in notes):
            parser = "pypdfium2+tesseract"
    if not elements:
        raise ParseError(notes[0] if notes else "no text found")
    return ParsedFile(elements=elements, parser=parser, pages=pages, notes=notes, meta=meta, running=running)


def _outline_by_page(pdf: Any) -> dict[int, tuple[str, ...]]:
    """Map page index -> heading path from the PDF's bookmarks (the first heading starting there)."""
    out: dict[int, tuple[str, ...]] = {}
    stack: list[str] = []
    try:
        for item in pdf.get_toc(max_depth=4):
            title = (item.title or "").strip()
            if not title or item.page_index is None:
                continue
            del stack[item.level:]
            stack.append(title)
            out.setdefault(item.page_index, tuple(stack))
    except Exception:  # a broken outline must not lose the text
        return {}
    return out


def _clean_pdf_text(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    # pdfium marks soft hyphens at line ends with \x02 / \ufffe
    return text.replace("\x02\n", "").replace("\ufffe\n", "").replace("\x02", "").replace("\ufffe", "")


def _paragraphs(text: str) -> list[str]:
    """Split page text into paragraphs: blank lines, or a line ending a sentence then a short line."""
    paras: list[str] = []
    buf: list[str] = []
    for line in text.split("\n"):
        stripped = line.strip()
        if not stripped:
            if buf:
                paras.append(" ".join(buf))
                buf = []
            continue
        buf.append(stripped)
    if buf:
        paras.append(" ".join(buf))
    return [p for p in paras if p]


def _ocr_pages(path: Path, pages: list[int], elements: list[Element],
               sections: dict[int, tuple[str, ...]], ocr: OcrOptions) -> tuple[list[Element], list[str]]:
    from ingest import ocr as engine

    listed = ", ".join(str(p) for p in pages[:10]) + (" ..." if len(pages) > 10 else "")
    what = "page(s)" if ocr.mode == "force" else "page(s) without a text layer"
    if ocr.mode == "off":
        return elements, [f"{len(pages)} {what} skipped (OCR off: ingest.ocr): {listed}"]
    missing = engine.available()
    if missing is not None:
        if ocr.mode == "force":
            raise ParseError(f"ingest.ocr is force, but {missing}")
        return elements, [f"{len(pages)} {what} skipped ({missing}): {listed}"]
    try:
        texts = engine.ocr_pdf_pages(path, pages, ocr.languages, ocr.dpi)
    except engine.OcrError as exc:  # keep the pages that had text
        return elements, [f"{len(pages)} {what} skipped (OCR failed: {exc}): {listed}"]
    extra = [Element(text=para, kind="NarrativeText", page=page, section=_section_at(sections, page - 1))
             for page, text in sorted(texts.items()) for para in _paragraphs(_clean_pdf_text(text))]
    merged = sorted([*elements, *extra], key=lambda e: e.page or 0)  # stable: a page's own order is kept
    read = sum(1 for t in texts.values() if t.strip())
    return merged, [f"{read} of {len(pages)} {what} read by OCR: {listed}"]


def _section_at(sections: dict[int, tuple[str, ...]], index: int) -> tuple[str, ...]:
    """The heading path in force on a page: the outline entry starting there, else the last one before."""
    starts = [i for i in sections if i <= index]
    return sections[max(starts)] if starts else ()


def parse_image(path: Path, ocr: OcrOptions) -> ParsedFile:
    """A scan or photo of a document (PNG, JPEG, TIFF with one page per frame), read by OCR."""
    from ingest import ocr as engine

    if ocr.mode == "off":
        raise ParseError("an image: its text is read by OCR, which is off (ingest.ocr)")
    missing = engine.available()
    if missing is not None:
        raise ParseError(f"an image: {missing}")
    try:
        frames = engine.ocr_image(path, ocr.languages)
    except engine.OcrError as exc:
        raise ParseError(f"OCR failed: {exc}") from None
    elements = [Element(text=para, kind="NarrativeText", page=n if len(frames) > 1 else None)
                for n, text in enumerate(frames, start=1) for para in _paragraphs(text)]
    if not elements:
        raise ParseError("no text found by OCR")
    return ParsedFile(elements=elements, parser="tesseract", pages=len(frames),
                      notes=[f"{len(frames)} page(s) read by OCR"])


# -- plain text ----------------------------------------------------------------------------------------

TITLE_MAX_CHARS = 200
TITLE_MAX_WORDS = 30


def parse_plain_text(path: Path) -> ParsedFile:
    """Paragraphs of a text file, in whatever encoding it is.

    unstructured classifies every paragraph of a .txt with spaCy (minutes for a book, measured
    in docs/benchmarks.md) and adds nothing else for plain text, so only its encoding detection
    is used here.
    """
    from unstructured.file_utils.encoding import detect_file_encoding

    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            encoding, text = detect_file_encoding(filename=str(path))
    except Exception as exc:
        raise ParseError(f"cannot decode text: {_reason(exc, path.suffix.lower())}") from None
    notes = [f"encoding guessed as {encoding}"] if caught else []
    text = text.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "")
    paragraphs = _paragraphs(text)
    if not paragraphs:
        raise ParseError("no text found (only whitespace)")
    first_line = text.lstrip().split("\n", 1)[0].strip()
    if (len(paragraphs) > 1 and paragraphs[0] == first_line and len(first_line) <= TITLE_MAX_CHARS
            and len(first_line.split()) <= TITLE_MAX_WORDS and not first_line.endswith((",", ":", ";"))
            and len(first_line) < len(paragraphs[1])):
        # A first line standing alone is the document's title: it heads every chunk, as a heading does
        # in other formats, so that each chunk is embedded and cited with it.
        section = (first_line,)
        elements = [Element(text=first_line, kind="Title", section=section)]
        elements += [Element(text=p, kind="NarrativeText", section=section) for p in paragraphs[1:]]
    else:
        elements = [Element(text=p, kind="NarrativeText") for p in paragraphs]
    return ParsedFile(elements=elements, parser="text", notes=notes)


# -- everything else: unstructured -------------------------------------------------------------------


def _parse_with_unstructured(path: Path, file_type: str) -> ParsedFile:
    from ingest.mail_leniency import lenient_mail
    from ingest.office_copies import readable_copy

    notes: list[str] = []
    try:
        with readable_copy(path, file_type) as readable, _utf8_copy(path, file_type) as text, \
                (lenient_mail(notes) if file_type in {"eml", "msg"} else nullcontext()):
            raw = _partitioner(file_type)(filename=str(text or readable))
    except ParseError:
        raise
    except Exception as exc:
        if file_type in {"csv", "tsv"} and type(exc).__name__ == "ParserError":
            # Rows of differing lengths (pandas refuses them): the text is kept, as plain text.
            parsed = parse_plain_text(path)
            parsed.notes.append(f"rows have differing numbers of fields ({_reason(exc, path.suffix.lower())}): "
                                "read as plain text")
            return parsed
        raise ParseError(_reason(exc, path.suffix.lower())) from None
    elements = _to_elements(raw)
    if not elements:
        if file_type in {"eml", "msg"}:
            raise ParseError("no text found: the message is empty or encrypted (S/MIME)")
        raise ParseError("no text found")
    pages = max((e.page for e in elements if e.page), default=None)
    meta = metadata.from_elements_metadata(raw[0].metadata) if file_type == "msg" else metadata.read(path, file_type)
    return ParsedFile(elements=elements, parser=f"unstructured:{file_type}", pages=pages, meta=meta, notes=notes)


@contextmanager
def _utf8_copy(path: Path, file_type: str) -> Iterator[Path | None]:
    """A UTF-8 copy of a CSV/TSV in another encoding while the block runs, else None: unstructured reads them
    as UTF-8 (and, given another encoding, splits UTF-16 lines at the wrong byte)."""
    encoding = _text_encoding(path) if file_type in {"csv", "tsv"} else None
    if encoding is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="appliance-text-") as folder:
        copy = Path(folder) / f"copy.{file_type}"
        with path.open("r", encoding=encoding, errors="replace", newline="") as source, \
                copy.open("w", encoding="utf-8", newline="") as target:
            shutil.copyfileobj(source, target)
        yield copy


def _text_encoding(path: Path) -> str | None:
    """The encoding of a text file unstructured would read as UTF-8 (its CSV reader's default): a byte-order
    mark's (Excel's "Unicode text" is UTF-16), else None when it is UTF-8, else the one detected."""
    with path.open("rb") as handle:
        head = handle.read(4)
        if head.startswith((codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
            return "utf-32"
        if head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
            return "utf-16"
        handle.seek(0)
        decoder = codecs.getincrementaldecoder("utf-8")()
        try:
            while block := handle.read(1 << 20):
                decoder.decode(block)
            decoder.decode(b"", final=True)
            return None
        except UnicodeDecodeError:
            pass
    from unstructured.file_utils.encoding import detect_file_encoding

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoding, _ = detect_file_encoding(filename=str(path))
    return encoding


def _partitioner(file_type: str) -> Callable[..., list[Any]]:
    from unstructured.partition.auto import partition

    def run(filename: str, **extra: Any) -> list[Any]:
        kwargs: dict[str, Any] = {"languages": ["eng"], **extra}
        if file_type in {"text", "md", "rst", "org"}:
            kwargs["encoding"] = None  # let unstructured detect UTF-16/32 and legacy encodings
        if file_type == "xml":
            kwargs["xml_keep_tags"] = False
        result: list[Any] = partition(filename=filename, **kwargs)
        return result

    return run


def _reason(exc: Exception, suffix: str) -> str:
    text = OBJECT_REPR.sub("an object", " ".join(str(exc).split())) or type(exc).__name__
    lowered = text.lower()
    if type(exc).__name__ in {"UnsupportedFileFormatError", "UnprocessableEntityError", "BadZipFile",
                              "PackageNotFoundError", "InvalidFileException"}:
        return f"not a valid {suffix} file (corrupt, truncated or another format): {text[:120]}"
    if suffix == ".msg" and type(exc).__name__ in {"KeyError", "error", "IndexError"}:  # oxmsg on a damaged file
        return f"not a valid .msg file (damaged): {type(exc).__name__}: {text[:100]}"
    if "password" in lowered or "encrypt" in lowered:
        return f"encrypted or password-protected file ({type(exc).__name__})"
    if "soffice" in lowered or "libreoffice" in lowered:
        return "needs LibreOffice to convert it: apt-get install libreoffice-writer-nogui libreoffice-impress-nogui"
    if len(text) > 200:
        text = text[:197] + "..."
    return f"{type(exc).__name__}: {text}"


def _to_elements(raw: list[Any]) -> list[Element]:
    out: list[Element] = []
    headings: list[tuple[int, str]] = []  # (depth, text)
    for el in raw:
        text = (el.text or "").strip()
        if not text:
            continue
        kind = el.category
        meta = el.metadata
        if kind == "Title":
            depth = getattr(meta, "category_depth", None) or 0
            headings = [h for h in headings if h[0] < depth]
            headings.append((depth, text[:200]))
        if kind in {"PageBreak", "Header", "Footer", "PageNumber"}:
            continue
        out.append(
            Element(
                text=text,
                kind=kind,
                page=getattr(meta, "page_number", None),
                page_name=getattr(meta, "page_name", None),
                section=tuple(h[1] for h in headings),
                table_html=getattr(meta, "text_as_html", None) if kind == "Table" else None,
            )
        )
    return out
