"""OCR engines side by side on scans made from PDF pages with a known text layer (issue 19).

    .venv/bin/python -m benchmarks.ocr [--dpi 150,300] [--engines tesseract,tesseract-omp,rapidocr-v1,rapidocr-v3]
    .venv/bin/python -m benchmarks.run --only ocr [--ocr-dpi 150,300] [--ocr-engines ...]   (the same, as rows)

Each page is rendered by pypdfium2 in grayscale at the resolution under test and saved by Pillow as
an image-only PDF (its pixels as JPEG, like a scanner's); its text layer is the reference. Every
engine reads those scans one page at a time, render included, each engine in a process of its own
(its peak memory is its own), after one page to warm up. Characters correct is
1 - Levenshtein(OCR, text layer) / len(text layer), both NFKC-normalised with runs of whitespace made
one space, so reading order counts; words found is the share of the text layer's words (lower case,
with repeats) that the OCR has anywhere on the page, whatever the order.

Engines: `tesseract` is ingest.ocr as the parse workers run it (one thread); `tesseract-omp` the same
binary with its OpenMP threads (Debian's build uses them by default); `rapidocr-v1` is
rapidocr_onnxruntime 1.4.4 (PP-OCRv4 models in its wheel) and `rapidocr-v3` rapidocr 3.10.0
(PP-OCRv6 small models in its wheel), measured where they import: they are no dependency of the
appliance (`pip install rapidocr_onnxruntime==1.4.4 rapidocr==3.10.0` into a scratch venv and run
this module with it from the repository root).
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import re
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
CORPUS = ROOT.parent / "shared" / "corpus" / "unstructured-example-docs" / "pdf"
# (file, 1-based page): a memo, a paper's title page and body, a two-column rulebook, a manual page,
# a 1977 two-column paper, a course outline, a two-column paper with formulas, a book page, a brochure page
# (text over a photograph). Not reliance.pdf: its text layer holds a contents list that the page does not show.
PAGES = [
    (ROOT / "samples" / "fake-memo.pdf", 1),
    (ROOT / "samples" / "layout-parser-paper-fast.pdf", 1),
    (ROOT / "samples" / "layout-parser-paper-fast.pdf", 2),
    (CORPUS / "DA-1p.pdf", 1),
    (CORPUS / "interface-config-guide-p93.pdf", 1),
    (CORPUS / "a1977-backus-p21.pdf", 1),
    (CORPUS / "list-item-example.pdf", 1),
    (CORPUS / "multi-column.pdf", 3),
    (CORPUS / "DA-619p.pdf", 200),
    (CORPUS / "chevron-page.pdf", 1),
]
ENGINES = ["tesseract", "tesseract-omp", "rapidocr-v1", "rapidocr-v3"]
Outcome = tuple[str, str | None, list[dict[str, Any]]]  # (engine, why it has no rows or None, per-scan rows)
Row = tuple[str, str, str]  # benchmarks.run's (what, result, note)


def normalise(text: str) -> str:
    text = unicodedata.normalize("NFKC", text).replace("\x02", "").replace("\ufffe", "")
    return re.sub(r"\s+", " ", text).strip()


def chars_correct(ocr: str, reference: str) -> float:
    from rapidfuzz.distance import Levenshtein

    ocr, reference = normalise(ocr), normalise(reference)
    return max(0.0, 1 - Levenshtein.distance(ocr, reference) / max(len(reference), 1))


def words_found(ocr: str, reference: str) -> float:
    def words(text: str) -> collections.Counter[str]:
        return collections.Counter(re.findall(r"\w+", normalise(text).lower()))

    ref, got = words(reference), words(ocr)
    return sum(min(n, got[w]) for w, n in ref.items()) / max(sum(ref.values()), 1)


def make_scans(folder: Path, dpis: list[int]) -> list[dict[str, Any]]:
    """Image-only PDFs of PAGES at each resolution, with their text layers: the test set."""
    import pypdfium2 as pdfium

    scans = []
    for source, number in PAGES:
        if not source.exists():
            print(f"skipped (missing): {source}", file=sys.stderr)
            continue
        pdf = pdfium.PdfDocument(str(source))
        page = pdf[number - 1]
        textpage = page.get_textpage()
        reference = textpage.get_text_range()
        textpage.close()
        for dpi in dpis:
            image = page.render(scale=dpi / 72, grayscale=True).to_pil()
            scan = folder / f"{source.stem}-p{number}-{dpi}dpi.pdf"
            image.save(scan, format="PDF", resolution=dpi)
            scans.append({"name": f"{source.stem} p{number}", "dpi": dpi, "scan": str(scan), "reference": reference})
        page.close()
        pdf.close()
    return scans


def _render(scan: str, dpi: int) -> Any:
    import pypdfium2 as pdfium

    pdf = pdfium.PdfDocument(scan)
    image = pdf[0].render(scale=dpi / 72, grayscale=True).to_pil()
    pdf.close()
    return image


def _reader(engine: str) -> Callable[[str, int], str]:
    """A function (scan PDF, dpi) -> text for the engine, loaded now (models included)."""
    if engine == "tesseract":
        from ingest.ocr import ocr_pdf_pages

        return lambda scan, dpi: ocr_pdf_pages(Path(scan), [1], ["en"], dpi=dpi)[1]
    if engine == "tesseract-omp":
        import io

        def omp(scan: str, dpi: int) -> str:
            buffer = io.BytesIO()
            _render(scan, dpi).save(buffer, format="PPM")
            env = {k: v for k, v in os.environ.items() if k != "OMP_THREAD_LIMIT"}
            done = subprocess.run(["tesseract", "stdin", "stdout", "-l", "eng", "--dpi", str(dpi)],
                                  input=buffer.getvalue(), capture_output=True, env=env, check=True)
            return done.stdout.decode()

        return omp
    import numpy as np

    os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")  # onnxruntime >= 1.29 phones home otherwise
    if engine == "rapidocr-v1":
        from rapidocr_onnxruntime import RapidOCR as RapidOCRv1  # type: ignore[import-not-found]

        v1 = RapidOCRv1()

        def read_v1(scan: str, dpi: int) -> str:
            result, _ = v1(np.asarray(_render(scan, dpi).convert("RGB")))
            return "\n".join(line[1] for line in result or [])

        return read_v1
    if engine == "rapidocr-v3":
        from rapidocr import RapidOCR as RapidOCRv3  # type: ignore[import-not-found]

        v3 = RapidOCRv3(params={"Global.log_level": "error"})

        def read_v3(scan: str, dpi: int) -> str:
            return "\n".join(v3(np.asarray(_render(scan, dpi).convert("RGB"))).txts or ())

        return read_v3
    raise SystemExit(f"unknown engine {engine!r}")


def _available(engine: str) -> str | None:
    import importlib.util

    if engine.startswith("tesseract"):
        from ingest.ocr import available

        return available()
    module = {"rapidocr-v1": "rapidocr_onnxruntime", "rapidocr-v3": "rapidocr"}[engine]
    return None if importlib.util.find_spec(module) else f"{module} not installed"


def run_engine(engine: str, scans: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """In this process: every scan read once by `engine`, after one warm-up page."""
    read = _reader(engine)
    read(scans[0]["scan"], scans[0]["dpi"])
    rows = []
    for scan in scans:
        start = time.perf_counter()
        text = read(scan["scan"], scan["dpi"])
        seconds = time.perf_counter() - start
        rows.append({"name": scan["name"], "dpi": scan["dpi"], "seconds": seconds,
                     "chars": chars_correct(text, scan["reference"]), "words": words_found(text, scan["reference"])})
    peak = max(resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    for row in rows:
        row["peak_mb"] = peak / 1024
    return rows


def measured(engines: list[str], scans: list[dict[str, Any]], folder: Path) -> Iterator[Outcome]:
    """Each engine run on the scans in a process of its own, one after the other: its outcome."""
    listing = folder / "scans.json"
    listing.write_text(json.dumps(scans))
    for engine in engines:
        missing = "no page to scan" if not scans else _available(engine)
        if missing:
            yield engine, f"skipped: {missing}", []
            continue
        done = subprocess.run([sys.executable, "-m", "benchmarks.ocr", "--child", f"{engine}:{listing}"],
                              cwd=ROOT, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            why = (done.stderr.strip().splitlines() or [f"exit status {done.returncode}"])[-1]
            yield engine, f"failed: {why[:150]}", []
            continue
        yield engine, None, json.loads(done.stdout.strip().splitlines()[-1])


def summary(rows: list[dict[str, Any]], dpi: int) -> dict[str, Any]:
    """One engine's medians over the pages at one resolution, and its worst page."""
    at = [r for r in rows if r["dpi"] == dpi]
    worst = min(at, key=lambda r: r["chars"])
    return {"chars": statistics.median(r["chars"] for r in at), "worst": worst["chars"], "worst_page": worst["name"],
            "words": statistics.median(r["words"] for r in at), "seconds": statistics.median(r["seconds"] for r in at),
            "peak_mb": at[0]["peak_mb"]}


def bench_ocr(engines: list[str], dpis: list[int]) -> list[Row]:
    """benchmarks.run's rows: each engine at each resolution, or why it was not measured."""
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        scans = make_scans(Path(tmp), dpis)
        pages = len({s["name"] for s in scans})
        for engine, why, rows in measured(engines, scans, Path(tmp)):
            if why is not None:
                result, _, note = why.partition(": ")
                out.append((f"OCR {engine}", result, note))
                continue
            for dpi in dpis:
                m = summary(rows, dpi)
                out.append((f"OCR {engine}, {dpi} dpi", f"{m['chars']:.1%} chars correct",
                            f"worst {m['worst']:.1%} ({m['worst_page']}); {m['words']:.1%} words found; "
                            f"{m['seconds']:.2f} s/page; peak {m['peak_mb']:.0f} MB; median of {pages} pages"))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dpi", default="150,300")
    parser.add_argument("--engines", default=",".join(ENGINES))
    parser.add_argument("--per-page", action="store_true", help="print every page's result too")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # ENGINE:SCANS.json, run by the parent
    args = parser.parse_args()
    if args.child:
        engine, listing = args.child.split(":", 1)
        print(json.dumps(run_engine(engine, json.loads(Path(listing).read_text()))))
        return
    dpis = [int(d) for d in args.dpi.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        scans = make_scans(Path(tmp), dpis)
        pages = len({s["name"] for s in scans})
        print(f"{pages} pages, {len(dpis)} resolutions, {os.cpu_count()} cores\n")
        print("| engine | dpi | chars correct (median) | worst page | words found (median) | s/page (median) "
              "| pages/s | peak RSS |")
        print("|---|---|---|---|---|---|---|---|")
        details = []
        for engine, why, rows in measured(args.engines.split(","), scans, Path(tmp)):
            if why is not None:
                print(f"| {engine} | | {why} | | | | | |")
                continue
            for dpi in dpis:
                m = summary(rows, dpi)
                print(f"| {engine} | {dpi} | {m['chars']:.1%} | {m['worst']:.1%} ({m['worst_page']}) "
                      f"| {m['words']:.1%} | {m['seconds']:.2f} | {1 / m['seconds']:.2f} | {m['peak_mb']:.0f} MB |")
            details += [(engine, r) for r in rows]
    if args.per_page:
        print("\n| engine | page | dpi | chars correct | words found | s |\n|---|---|---|---|---|---|")
        for engine, r in details:
            print(f"| {engine} | {r['name']} | {r['dpi']} | {r['chars']:.1%} | {r['words']:.1%} "
                  f"| {r['seconds']:.2f} |")


if __name__ == "__main__":
    main()
