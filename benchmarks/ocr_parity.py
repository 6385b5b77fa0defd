"""OCR retrieval parity (issue 19): the same PDF ingested from its text layer and from an image-only scan of
it, the same questions asked of both, recall@5 of the page that holds each answer.

    .venv/bin/python -m benchmarks.ocr_parity [--pdf PATH] [--questions 20] [--dpi 300]
    .venv/bin/python -m benchmarks.run --only ocr_parity   (the same rows)

The scan: every page rendered by pypdfium2 in grayscale at --dpi and saved by Pillow as one image-only PDF
(no text layer, its pixels as JPEG, as benchmarks/ocr.py and tests/support/scans.py make them), so ingest
reads it through Tesseract (ingest.ocr, `ingest.ocr: auto`). Each copy is ingested by the real pipeline
into a store of its own (a temporary data dir) with the default settings, but for a parse timeout of an
hour (the default 300 s stopped the 13-page scan under a load average of 20).

The questions are sentences of the pages' text layer (12 to 40 words, hyphenated line ends joined),
taken round-robin over the pages, one from the middle of each page first, then one from its last third:
a question is answered when a chunk of its page is among the five that the search `ask` runs returns
(recall@1 and MRR@5 of the page are shown beside it).
Verbatim sentences favour BM25's exact words, which is where OCR's misread characters cost most.
The goal is the scan's recall@5 at 0.9x the text layer's or better.

Default PDF: `multi-column.pdf` of ../shared/corpus/unstructured-example-docs (Apache-2.0), 13 pages of a
two-column paper; skipped with a note where the corpus is absent.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PDF = ROOT.parent / "shared" / "corpus" / "unstructured-example-docs" / "pdf" / "multi-column.pdf"
Row = tuple[str, str, str]


def page_texts(pdf_path: Path) -> list[str]:
    """Each page's text layer, soft and line-end hyphens joined and whitespace made single spaces."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(pdf_path))
    texts = []
    for page in pdf:
        textpage = page.get_textpage()
        raw = textpage.get_text_range()
        textpage.close()
        page.close()
        raw = re.sub(r"\ufffe\s*|\x02\s*", "", raw)  # pdfium's soft hyphens
        raw = re.sub(r"(\w)-\s*[\r\n]+\s*(\w)", r"\1\2", raw)
        texts.append(" ".join(raw.split()))
    pdf.close()
    return texts


def _sentences(text: str) -> list[str]:
    out = []
    for s in re.split(r"(?<=[.?!])\s+(?=[A-Z])", text):
        words = s.split()
        letters = sum(c.isalpha() for c in s)
        if 12 <= len(words) <= 40 and letters > 0.7 * len(s.replace(" ", "")):
            out.append(s)
    return out


def questions(texts: list[str], count: int) -> list[tuple[int, str]]:
    """(1-based page, sentence): round-robin over the pages, the middle sentence of each, then a later one."""
    picks: list[list[str]] = []
    for text in texts:
        found = _sentences(text)
        picks.append([found[len(found) // 2], found[(len(found) * 5) // 6]] if len(found) >= 2 else found)
    out: list[tuple[int, str]] = []
    for round_ in range(2):
        for number, chosen in enumerate(picks, start=1):
            if round_ < len(chosen) and chosen[round_] not in (q for _, q in out) and len(out) < count:
                out.append((number, chosen[round_]))
    return out


def make_scan(source: Path, target: Path, dpi: int) -> Path:
    """An image-only copy of `source`: every page rendered at `dpi`, no text layer."""
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(str(source))
    images = [page.render(scale=dpi / 72, grayscale=True).to_pil() for page in pdf]
    pdf.close()
    images[0].save(target, format="PDF", resolution=dpi, save_all=True, append_images=images[1:])
    return target


def recall_at_5(pdf_path: Path, data_dir: Path, asked: list[tuple[int, str]]) -> dict[str, Any]:
    """Ingest `pdf_path` alone into `data_dir`, then ask each question: the share whose page is in the top 5."""
    from appliance.services import build_services
    from appliance.settings import load_settings

    # The per-file parse timeout (300 s) is a guard against stuck parsers; on a loaded 2-core machine Tesseract
    # may need longer than that for a dozen pages at 300 dpi, which is not what this measures.
    services = build_services(load_settings(None, {"data_dir": data_dir, "ingest": {"file_timeout_s": 3600}}))
    try:
        started = time.perf_counter()
        report = services.ingest_pipeline.run([pdf_path])
        seconds = time.perf_counter() - started
        failed = [f"{f.path}: {f.error}" for f in report.files if f.status == "failed"]
        hits, firsts, rr, misses = 0, 0, 0.0, []
        for page, question in asked:
            pages = [s.page for s in services.rag.search(question, limit=5)]
            if page in pages:
                hits += 1
                firsts += pages[0] == page
                rr += 1 / (pages.index(page) + 1)
            else:
                misses.append(f"p{page}->{pages}")
        return {"recall": hits / len(asked), "hits": hits, "at1": firsts / len(asked), "mrr": rr / len(asked),
                "chunks": services.store.count(), "seconds": seconds, "failed": failed, "misses": misses}
    finally:
        services.close()


def measure(pdf_path: Path, count: int, dpi: int) -> dict[str, Any]:
    asked = questions(page_texts(pdf_path), count)
    with tempfile.TemporaryDirectory() as tmp:
        scan = make_scan(pdf_path, Path(tmp) / f"{pdf_path.stem}-scan.pdf", dpi)
        text = recall_at_5(pdf_path, Path(tmp) / "text", asked)
        scanned = recall_at_5(scan, Path(tmp) / "scan", asked)
    return {"questions": len(asked), "pages": len({p for p, _ in asked}), "text": text, "scan": scanned}


def bench_ocr_parity(pdf_path: Path = PDF, count: int = 20, dpi: int = 300) -> list[Row]:
    """benchmarks.run's rows: recall@5 from the text layer, from the scan, and their ratio."""
    from ingest.ocr import available

    if not pdf_path.exists():
        return [("OCR retrieval parity", "skipped", f"{pdf_path} not found")]
    if (missing := available()) is not None:
        return [("OCR retrieval parity", "skipped", f"OCR not available: {missing}")]
    m = measure(pdf_path, count, dpi)
    rows: list[Row] = []
    for key, label in (("text", "text layer"), ("scan", f"image-only scan, {dpi} dpi, OCR")):
        r = m[key]
        rows.append((f"OCR parity, {pdf_path.name}: {label}", f"recall@5 {r['recall']:.2f}",
                     f"{r['hits']}/{m['questions']} questions over {m['pages']} pages; recall@1 {r['at1']:.2f}, "
                     f"MRR@5 {r['mrr']:.2f}; {r['chunks']} chunks; "
                     f"ingest {r['seconds']:.0f}s" + (f"; failed: {r['failed']}" if r["failed"] else "")
                     + (f"; missed {', '.join(r['misses'])}" if r["misses"] else "")))
    text, scan = m["text"]["recall"], m["scan"]["recall"]
    ratio = scan / text if text else float("nan")
    rows.append((f"OCR parity, {pdf_path.name}: scan / text layer", f"{ratio:.2f}",
                 "goal: 0.90 or more " + ("(met)" if ratio >= 0.9 else "(NOT met)")))
    return rows


def main() -> None:
    from appliance.offline import enforce_offline

    enforce_offline()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=PDF)
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--dpi", type=int, default=300)
    parser.add_argument("--show-questions", action="store_true")
    args = parser.parse_args()
    if args.show_questions and args.pdf.exists():
        for page, q in questions(page_texts(args.pdf), args.questions):
            print(f"p{page}: {q}")
    rows = bench_ocr_parity(args.pdf, args.questions, args.dpi)
    print("| what | result | note |\n|---|---|---|")
    for what, result, note in rows:
        print(f"| {what} | {result} | {note} |")


if __name__ == "__main__":
    main()
