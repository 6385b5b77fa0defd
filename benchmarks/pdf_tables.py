"""Tables in text-layer PDFs: our detector on pdfium's geometry (ingest/pdf_tables.py) against pdfplumber,
side by side in one run.

    .venv/bin/python -m benchmarks.pdf_tables [--repeats 3] [--plumber-pages N]
    .venv/bin/python -m benchmarks.run --only tables [--repeats 3] [--plumber-pages N]   (the same rows)

pdfplumber is not a dependency of the appliance; to compare with it, install it aside and put it on the path:

    .venv/bin/pip install --target /tmp/plumber-site --no-deps pdfplumber==0.11.11 pdfminer.six==20260107
    PYTHONPATH=/tmp/plumber-site .venv/bin/python -m benchmarks.pdf_tables

Speed is measured on DA-619p.pdf (a 619-page book without tables: what most pages cost), quality on pages
with tables whose key rows are known (cells compared after dropping empty cells and currency signs), and on
pages without tables (every table found there is a false one).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PDFS = ROOT.parent / "shared" / "corpus" / "unstructured-example-docs" / "pdf"
BIG_PDF = PDFS / "DA-619p.pdf"
TEN_K = ROOT / "tests" / "fixtures" / "tables" / "galaxy-gaming-10k-2021-statements.pdf"
Row = tuple[str, str, str]
Tables = list[list[list[str]]]  # tables, rows, cells

# (file, page index, tables on the page, key rows: cells as printed, None for a cell not compared)
CASES: list[tuple[Path, int, int, list[list[str | None]]]] = [
    (PDFS / "all-number-table.pdf", 0, 1, [["1000.01", "9"], ["1600.01", "15"]]),
    (PDFS / "layout-parser-paper-with-table.pdf", 0, 1, [
        ["TableBank [18]", "F", "F", "Table region on modern scientific and business document"],
        ["HJDataset [31]", "F / M", "-", "Layouts of history Japanese documents"]]),
    (PDFS / "embedded-images-tables.pdf", 0, 1, [
        ["Inhibitor concentration (g)", "bc (V/dec)", "ba (V/dec)", "Ecorr (V)", None,
         "Polarization resistance (Ω)", "Corrosion rate (mm/year)"],
        ["6", "0.3233", "0.0540", None, "5.39E-05", "373.180", "0.4318"]]),
    (PDFS / "korean-text-with-tables.pdf", 0, 2, [
        ["할인점", "이마트, 이마트 트레이더스, 롯데마트, 홈플러스"],
        ["커피전문점", "스타벅스, 투썸플레이스, 카페베네, 탐앤탐스, 커피빈, 엔제리너스, "
                  "할리스커피, 파스쿠찌, 아티제, 폴 바셋"],
        ["편의점", "CU, GS25, 세븐일레븐, 미니스톱"]]),
    (PDFS / "reliance.pdf", 0, 0, []),
    (PDFS / "reliance.pdf", 1, 0, []),
    (TEN_K, 0, 0, []),  # the auditor's report: running text
    (TEN_K, 1, 1, [["Total assets", "40,452,705", "30,574,594"],
                   ["Accounts receivable, net of allowance of 348,695 and 145,000, respectively",
                    "4,377,165", "2,493,254"]]),
    (TEN_K, 2, 1, [["Total revenue", "19,984,378", "10,230,316"], ["Net income (loss)", "2,111,812", "(2,208,887)"]]),
    (TEN_K, 3, 1, [["Depreciation and amortization", "2,858,991", "2,222,042"],
                   ["Net cash provided by (used in) operating activities", "6,003,576", "(1,633,132)"]]),
]


def _norm(row: list[str | None]) -> list[str]:
    cells = [" ".join((c or "").replace("$", " ").split()) for c in row]
    return [c for c in cells if c]


def _has_row(tables: Tables, expected: list[str | None]) -> bool:
    want = [" ".join(c.replace("$", " ").split()) if c is not None else None for c in expected]
    for table in tables:
        for row in table:
            got = _norm(list(row))
            if len(got) == len(want) and all(w is None or w == g for w, g in zip(want, got, strict=True)):
                return True
    return False


# -- the methods: each reads one page's tables as lists of rows -------------------------------------


def _ours(pdf: Any, index: int) -> Tables:
    from ingest.pdf_tables import find_tables

    page = pdf[index]
    textpage = page.get_textpage()
    try:
        return [t.rows for t in find_tables(page, textpage)]
    finally:
        textpage.close()
        page.close()


def _plumber(strategy: str) -> Callable[[Any, int], Tables]:
    settings = {"vertical_strategy": strategy, "horizontal_strategy": strategy}

    def run(pdf: Any, index: int) -> Tables:
        page = pdf.pages[index]
        try:
            return [[[c or "" for c in row] for row in t.extract()] for t in page.find_tables(settings)]
        finally:
            page.close()

    return run


def _open_ours(path: Path) -> Any:
    import pypdfium2 as pdfium

    return pdfium.PdfDocument(str(path))


def _open_plumber(path: Path) -> Any:
    import pdfplumber

    return pdfplumber.open(str(path))


def _plumber_available() -> bool:
    try:
        import pdfplumber  # noqa: F401
    except ImportError:
        return False
    return True


# -- speed -------------------------------------------------------------------------------------------


def bench_speed(repeats: int, plumber_pages: int) -> list[Row]:
    import pypdfium2 as pdfium

    from ingest.pdf_tables import find_tables, might_have_tables

    pdf = pdfium.PdfDocument(str(BIG_PDF))
    n = len(pdf)

    def text_only() -> None:
        for i in range(n):
            page = pdf[i]
            textpage = page.get_textpage()
            textpage.get_text_range()
            textpage.close()
            page.close()

    found: list[int] = []

    def with_tables() -> None:
        found.clear()
        for i in range(n):
            page = pdf[i]
            textpage = page.get_textpage()
            textpage.get_text_range()
            found.append(len(find_tables(page, textpage)))
            textpage.close()
            page.close()

    candidates: list[int] = []

    def precheck_only() -> None:
        candidates.clear()
        for i in range(n):
            page = pdf[i]
            textpage = page.get_textpage()
            textpage.get_text_range()
            if might_have_tables(page, textpage):
                candidates.append(i)
            textpage.close()
            page.close()

    times: dict[str, list[float]] = {"text": [], "check": [], "tables": []}
    for _ in range(repeats):  # interleaved, so that a busy machine slows each alike
        for name, fn in (("text", text_only), ("check", precheck_only), ("tables", with_tables)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    text_s, check_s, tables_s = (statistics.median(times[k]) for k in ("text", "check", "tables"))
    rows: list[Row] = [
        ("DA-619p.pdf, text layer only (pypdfium2)", f"{n / text_s:,.0f} pages/s",
         f"{n} pages in {text_s:.2f} s, median of {repeats}: what parse_pdf reads today"),
        ("  + cheap check (runs, rules)", f"{n / check_s:,.0f} pages/s",
         f"+{(check_s - text_s) / n * 1000:.2f} ms/page; {len(candidates)} of {n} pages pass it"),
        ("  + ours: find_tables", f"{n / tables_s:,.0f} pages/s",
         f"+{(tables_s - text_s) / n * 1000:.2f} ms/page over text; {sum(found)} tables found (the book has none)"),
    ]
    if not _plumber_available():
        rows.append(("  pdfplumber find_tables", "not measured",
                     "pip install --target /tmp/plumber-site --no-deps pdfplumber pdfminer.six; PYTHONPATH=..."))
        return rows
    count = min(n, plumber_pages) if plumber_pages else n
    per_page: list[float] = []
    plumber_found = 0
    with _open_plumber(BIG_PDF) as doc:
        for i in range(count):
            t = time.perf_counter()
            plumber_found += len(_plumber("lines")(doc, i))
            per_page.append(time.perf_counter() - t)
    total = sum(per_page)
    rows.append(("  pdfplumber find_tables (lines, default)", f"{count / total:,.1f} pages/s",
                 f"{count} pages in {total:.1f} s, one pass; median {statistics.median(per_page) * 1000:.0f} "
                 f"ms/page; {plumber_found} tables found"))
    if count == n:
        hybrid = check_s - text_s + sum(per_page[i] for i in candidates)
        rows.append(("  our check, then pdfplumber on passing pages", f"{n / (text_s + hybrid):,.0f} pages/s",
                     f"+{hybrid / n * 1000:.2f} ms/page over text (from the times above)"))
    return rows


# -- quality -----------------------------------------------------------------------------------------


def bench_quality() -> list[Row]:
    methods: list[tuple[str, Callable[[Path], Any], Callable[[Any, int], Tables]]] = [("ours", _open_ours, _ours)]
    if _plumber_available():
        methods += [("pdfplumber lines", _open_plumber, _plumber("lines")),
                    ("pdfplumber text", _open_plumber, _plumber("text"))]
    cases = [c for c in CASES if c[0].exists()]
    rows: list[Row] = []
    for name, opener, method in methods:
        keys = exact = false = 0
        ms: list[float] = []
        misses: list[str] = []
        for path, index, expected, key_rows in cases:
            doc = opener(path)
            try:
                t = time.perf_counter()
                tables = method(doc, index)
                ms.append((time.perf_counter() - t) * 1000)
            finally:
                doc.close()
            hits = sum(_has_row(tables, key) for key in key_rows)
            keys += hits
            exact += len(tables) == expected
            false += len(tables) if expected == 0 else 0
            if hits < len(key_rows) or len(tables) != expected:
                misses.append(f"{path.stem}#{index + 1}: {len(tables)}/{expected} tables, {hits}/{len(key_rows)} rows")
        total_keys = sum(len(c[3]) for c in cases)
        rows.append((f"{name}: key rows right", f"{keys}/{total_keys}",
                     f"tables counted right on {exact}/{len(cases)} pages; {false} false tables on pages without; "
                     f"median {statistics.median(ms):.0f} ms/page"))
        rows.extend((f"  {name} missed", m, "") for m in misses)
    return rows


def bench_tables(repeats: int, plumber_pages: int) -> list[Row]:
    """Quality on the pages at hand, then speed on DA-619p.pdf; pdfplumber's rows only where it imports."""
    if not BIG_PDF.exists():
        return [*bench_quality(), ("DA-619p.pdf speed", "skipped", f"{BIG_PDF} not found")]
    return bench_quality() + bench_speed(repeats, plumber_pages)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--plumber-pages", type=int, default=0, help="pdfplumber on the first N pages (0: all)")
    args = parser.parse_args(argv)
    if not BIG_PDF.exists():
        sys.exit(f"{BIG_PDF} not found")
    rows = bench_tables(args.repeats, args.plumber_pages)
    width = max(len(r[0]) for r in rows)
    rwidth = max(len(r[1]) for r in rows)
    print(f"| {'what':<{width}} | {'result':<{rwidth}} | note |")
    print(f"|{'-' * (width + 2)}|{'-' * (rwidth + 2)}|---|")
    for what, result, note in rows:
        print(f"| {what:<{width}} | {result:<{rwidth}} | {note} |")


if __name__ == "__main__":
    main()
