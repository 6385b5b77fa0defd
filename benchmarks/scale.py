"""Ingestion at file-share scale: our `appliance ingest` beside the baseline, a synthetic share, re-sync, delete.

    .venv/bin/python -m benchmarks.run --only scale [--share-files 10000]

Every ingest runs as a fresh process (start-up included), and its memory is the peak of the summed
resident memory of its whole process tree (parse workers included), sampled every 0.2 s. The
baseline (`../shared/bench/baseline_ingest.py`, PrivateGPT 0.6.2's way) runs from its own virtual
environment, made by `benchmarks/setup_baseline.sh`; without it its rows say so.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.synthetic import change, make_share

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"
CORPUS = SHARED / "corpus"
BASELINE = SHARED / "bench" / "baseline_ingest.py"
BASELINE_PYTHON = ROOT / ".venv-baseline" / "bin" / "python"
Row = tuple[str, str, str]


def _run_measured(args: list[str], env: dict[str, str] | None = None) -> tuple[float, float, str]:
    """(wall seconds, peak MB of the process tree's summed RSS, stdout) of one command."""
    import psutil

    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                            env={**os.environ, **(env or {})})
    peak = 0
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        root = psutil.Process(proc.pid)
        while not done.wait(0.2):
            try:
                tree = [root, *root.children(recursive=True)]
                peak = max(peak, sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                continue

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, _ = proc.communicate()
    done.set()
    sampler.join()
    return time.perf_counter() - started, peak / 2**20, out


def _ours(target: Path, data: Path) -> tuple[float, float, dict[str, Any]]:
    seconds, peak, out = _run_measured([sys.executable, "-m", "appliance.cli", "ingest", str(target), "--json",
                                        "--no-progress", "--data-dir", str(data)])
    return seconds, peak, json.loads(out)


def _pages(folder: Path) -> int:
    """The baseline's page convention: a PDF's page count, 1 for any other file (or an unreadable PDF)."""
    import pypdfium2

    total = 0
    for path in sorted(p for p in folder.rglob("*") if p.is_file() and not p.name.startswith(".")):
        if path.suffix.lower() == ".pdf":
            try:
                pdf = pypdfium2.PdfDocument(str(path))
                total += max(1, len(pdf))
                pdf.close()
                continue
            except Exception:
                pass
        total += 1
    return total


def bench_corpus_vs_baseline() -> list[Row]:
    """All of ../shared/corpus, ingested by us and by the baseline, one after the other in this run."""
    if not CORPUS.is_dir():
        return [("corpus vs baseline", "skipped", f"{CORPUS} not found")]
    pages = _pages(CORPUS)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        seconds, peak, report = _ours(CORPUS, Path(tmp) / "ours")
        stages = ", ".join(f"{k} {v:.0f}s" for k, v in report["stage_seconds"].items())
        files = len(report["files"])
        rows.append(("ingest ../shared/corpus (ours)", f"{pages / seconds:.2f} pages/s, {files / seconds:.2f} files/s",
                     f"{report['added']} files added, {report['chunks']} chunks ({report['chunks'] / seconds:.1f}/s), "
                     f"{report['failed']} failed, {report['skipped']} skipped, {seconds:.0f}s wall, "
                     f"peak {peak:,.0f} MB; stages: {stages}"))
        ours = pages / seconds
        again, _, same = _ours(CORPUS, Path(tmp) / "ours")
        rows.append(("  re-run, nothing changed", f"{again:.1f}s", f"{same['unchanged']} unchanged"))
        if not BASELINE_PYTHON.exists() or not BASELINE.exists():
            rows.append(("ingest ../shared/corpus (baseline)", "not run",
                         "needs benchmarks/setup_baseline.sh and ../shared/bench"))
            return rows
        b_seconds, b_peak, out = _run_measured([str(BASELINE_PYTHON), str(BASELINE), str(CORPUS), "--data-dir",
                                                str(Path(tmp) / "baseline"), "--queries", "0", "--json"])
        try:
            base = json.loads(out.strip().splitlines()[-1])
            detail = (f"{base['chunks']:,} nodes, {base['failed_files']} failed; its own count: {base['pages']} "
                      f"pages, {base['pages_per_s']} pages/s over its ingest stage ({base['ingest_s']:.0f}s)")
        except (ValueError, IndexError, KeyError):
            detail = "its report could not be read"
        rows.append(("ingest ../shared/corpus (baseline)", f"{pages / b_seconds:.2f} pages/s, "
                     f"{files / b_seconds:.2f} files/s",
                     f"{detail}, {b_seconds:.0f}s wall, peak {b_peak:,.0f} MB"))
        rows.append(("  ratio ours / baseline", f"{ours / (pages / b_seconds):.1f}x",
                     f"{pages} pages by the baseline's convention, wall times of whole runs"))
    return rows


def bench_share(files: int) -> list[Row]:
    """A synthetic share: ingest, re-sync unchanged, re-sync with 1% changed, delete; memory at two sizes."""
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        small_files = max(1, files // 10)
        for n in (small_files, files):
            share = Path(tmp) / f"share-{n}"
            paths = make_share(share, n)
            data = Path(tmp) / f"data-{n}"
            pages = _pages(share)
            seconds, peak, report = _ours(share, data)
            stages = ", ".join(f"{k} {v:.0f}s" for k, v in report["stage_seconds"].items())
            rows.append((f"ingest synthetic share, {n:,} files", f"{n / seconds:.1f} files/s, {pages / seconds:.1f} "
                         f"pages/s", f"{report['chunks'] / seconds:.1f} chunks/s, {report['chunks']:,} chunks, "
                         f"{report['failed']} failed, {seconds:.0f}s wall, peak {peak:,.0f} MB; stages: {stages}"))
            if n != files:
                rows += _delete_times(data, paths)
                shutil.rmtree(share)
                continue
            resync = []
            for _ in range(3):
                s, _, again = _ours(share, data)
                resync.append(s)
            rows.append((f"  re-sync, nothing changed ({n:,} files)", f"{statistics.median(resync):.2f}s",
                         f"median of 3 whole runs, start-up included; {again['unchanged']:,} unchanged"))
            changed = change(paths, 0.01)
            s, _, again = _ours(share, data)
            rows.append((f"  re-sync, 1% changed ({len(changed)} files)", f"{s:.1f}s",
                         f"{again['updated']} updated, {again['unchanged']:,} unchanged"))
            rows += _delete_times(data, paths)
    return rows


def _delete_times(data: Path, paths: list[Path]) -> list[Row]:
    """`docs rm`'s work for one file: its chunks deleted by id, its manifest row removed."""
    from appliance.services import build_services
    from appliance.settings import load_settings

    services = build_services(load_settings(None, {"data_dir": data}))
    try:
        points = services.store.count()
        times = []
        for path in paths[: 200: 10]:
            started = time.perf_counter()
            services.ingest_pipeline.remove(str(path))
            times.append(time.perf_counter() - started)
        return [(f"  delete one document ({points:,} chunks in the store)",
                 f"{statistics.median(times) * 1000:.1f} ms", f"median of {len(times)}, flush included")]
    finally:
        services.close()
