"""Line-item questions over financial statements (issue 19): does the chunk that holds the figure rank
first, with PDF table detection on (`ingest.pdf_tables: true`, the default) and off, in one run?

    .venv/bin/python -m benchmarks.table_questions
    .venv/bin/python -m benchmarks.run --only table_questions   (the same rows)

The document is tests/fixtures/tables/galaxy-gaming-10k-2021-statements.pdf (four pages of a real 10-K:
the auditor's report, the balance sheet, the statement of operations, the cash flows; see its README).
It is ingested by the real pipeline twice, into two temporary data dirs, once per setting. Each question
is asked in words (not the line's own label), through the search `ask` runs; hit@1 counts a question when
the first chunk's text holds the line item's 2021 figure (a figure printed in two statements, as net
income and depreciation are, counts from either). MRR@5 over the same ranks is shown beside it.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEN_K = ROOT / "tests" / "fixtures" / "tables" / "galaxy-gaming-10k-2021-statements.pdf"
Row = tuple[str, str, str]

# (question, the 2021 figure as printed)
QUESTIONS: list[tuple[str, str]] = [
    ("What were Galaxy Gaming's total assets at December 31, 2021?", "40,452,705"),
    ("How much cash and cash equivalents did the company hold at the end of 2021?", "16,058,714"),
    ("What was the value of inventory on the 2021 balance sheet?", "770,248"),
    ("What were total liabilities in 2021?", "57,739,128"),
    ("How large was the accumulated deficit at the end of 2021?", "33,543,351"),
    ("How much revenue came from licensing fees in 2021?", "19,984,378"),
    ("How much was spent on research and development in 2021?", "520,449"),
    ("What was the interest expense for 2021?", "1,505,386"),
    ("What were selling, general and administrative expenses in 2021?", "10,646,524"),
    ("How many diluted weighted-average shares were outstanding in 2021?", "21,840,609"),
    ("How much cash did operating activities provide in 2021?", "6,003,576"),
    ("How much long-term debt principal was repaid in 2021?", "13,104,942"),
    ("How much did the company pay in debt issuance costs in 2021?", "3,138,521"),
    ("How much cash was paid for interest in 2021?", "940,097"),
]


def ranks(pdf: Path, data_dir: Path, tables: bool) -> dict[str, Any]:
    """Ingest `pdf` with pdf_tables on or off; for each question, the 1-based rank of the first chunk
    holding its figure among the top 5 (None if none)."""
    from appliance.services import build_services
    from appliance.settings import load_settings

    services = build_services(load_settings(None, {"data_dir": data_dir, "ingest": {"pdf_tables": tables}}))
    try:
        started = time.perf_counter()
        report = services.ingest_pipeline.run([pdf])
        seconds = time.perf_counter() - started
        found: list[int | None] = []
        for question, figure in QUESTIONS:
            sources = services.rag.search(question, limit=5)
            found.append(next((i for i, s in enumerate(sources, start=1) if figure in s.text), None))
        return {"ranks": found, "chunks": services.store.count(), "seconds": seconds,
                "failed": [f.error for f in report.files if f.status == "failed"]}
    finally:
        services.close()


def bench_table_questions(pdf: Path = TEN_K) -> list[Row]:
    """benchmarks.run's rows: hit@1 with table detection off, then on, and the questions that differ."""
    if not pdf.exists():
        return [("table questions", "skipped", f"{pdf} not found")]
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tables in (False, True):
            runs[tables] = ranks(pdf, Path(tmp) / f"tables-{tables}", tables)
    rows: list[Row] = []
    n = len(QUESTIONS)
    for tables in (False, True):
        r = runs[tables]
        hits = sum(1 for k in r["ranks"] if k == 1)
        mrr = sum(1 / k for k in r["ranks"] if k) / n
        missed = [f"q{i}:{'-' if k is None else k}" for i, k in enumerate(r["ranks"], start=1) if k != 1]
        rows.append((f"table questions, 10-K statements: pdf_tables {str(tables).lower()}",
                     f"hit@1 {hits}/{n} ({hits / n:.2f})",
                     f"MRR@5 {mrr:.2f}; {r['chunks']} chunks; ingest {r['seconds']:.1f}s"
                     + (f"; not first (question:rank): {', '.join(missed)}" if missed else "")
                     + (f"; failed: {r['failed']}" if r["failed"] else "")))
    return rows


def main() -> None:
    from appliance.offline import enforce_offline

    enforce_offline()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pdf", type=Path, default=TEN_K)
    args = parser.parse_args()
    rows = bench_table_questions(args.pdf)
    print("| what | result | note |\n|---|---|---|")
    for what, result, note in rows:
        print(f"| {what} | {result} | {note} |")
    for i, (question, figure) in enumerate(QUESTIONS, start=1):
        print(f"q{i}: {question} ({figure})")


if __name__ == "__main__":
    main()
