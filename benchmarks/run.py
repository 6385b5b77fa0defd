"""Benchmarks of the embedded default, printed as one table.

    .venv/bin/python -m benchmarks.run [--only pdf,embed,ingest,store,ask,retrieval,grounding,api,scale,database,
                                              ocr,tables,band,claims,embed_service,
                                              ocr_parity,table_questions,chunk_header,dedup,embed_runtime,
                                              versus_baseline]
                                       [--points 100000] [--share-files 10000]
                                       [--versus-target PATH ...] [--versus-rounds 2]
                                       [--ocr-engines tesseract,...] [--ocr-dpi 150,300] [--plumber-pages N]

Needs ../shared/corpus for the pdf and ingest rows and ../shared/eval for the retrieval table (skipped
with a note otherwise); the eval stores are kept under ./data/eval/ (as `appliance eval` keeps them),
so only the first retrieval run ingests (--data-dir moves them). Speeds on a
shared 2-core machine are noisy: each row reports a median over repeats where it can.
scale, database, ocr, tables, band, claims (benchmarks/answers.py), embed_service, ocr_parity, table_questions,
chunk_header, embed_runtime and versus_baseline run only when named. ocr skips the
engines that are not installed (Tesseract, the optional RapidOCR wheels) and tables skips pdfplumber where
it does not import (put the side install on PYTHONPATH, as docs/benchmarks.md shows); each says why in its row.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.ocr import ENGINES as OCR_ENGINES

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval"
CORPUS = ROOT.parent / "shared" / "corpus" / "unstructured-example-docs"
BIG_PDF = CORPUS / "pdf" / "DA-619p.pdf"
Row = tuple[str, str, str]  # (what, result, note)


def _median_time(fn: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def bench_pdf(repeats: int) -> list[Row]:
    """Text-layer extraction of DA-619p.pdf: pypdfium2 (ours) against unstructured's `fast` strategy."""
    if not BIG_PDF.exists():
        return [("pdf parsers", "skipped", f"{BIG_PDF} not found")]
    from ingest.parse import parse_pdf

    seconds, parsed = _median_time(lambda: parse_pdf(BIG_PDF), repeats)
    pages = parsed.pages or 0
    rows: list[Row] = [("PDF text, pypdfium2 (DA-619p.pdf)", f"{pages / seconds:,.0f} pages/s",
                        f"{pages} pages in {seconds:.2f}s, median of {repeats}")]
    try:
        from unstructured.partition.pdf import partition_pdf
    except ImportError:
        rows.append(("PDF text, unstructured fast", "not measured", "needs pip install 'unstructured[pdf]'"))
        return rows
    t = time.perf_counter()
    elements = partition_pdf(filename=str(BIG_PDF), strategy="fast")
    fast_s = time.perf_counter() - t
    fast_pages = max((e.metadata.page_number or 0) for e in elements)
    rows.append(("PDF text, unstructured fast (DA-619p.pdf)", f"{fast_pages / fast_s:,.1f} pages/s",
                 f"{fast_pages} pages in {fast_s:.1f}s, one run; ratio {seconds and fast_s / seconds:.0f}x"))
    return rows


def _ingest_cli(path: Path, data: Path) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-m", "appliance.cli", "ingest", str(path), "--json", "--data-dir",
                           str(data)], capture_output=True, text=True, cwd=ROOT)
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


def bench_ingest(folder_too: bool) -> list[Row]:
    """Whole `appliance ingest` runs in a fresh process, start-up included."""
    if not BIG_PDF.exists():
        return [("ingest", "skipped", f"{CORPUS} not found")]
    rows: list[Row] = []
    targets = [("ingest DA-619p.pdf", BIG_PDF)]
    if folder_too:
        targets.append(("ingest unstructured-example-docs/", CORPUS))
    for label, target in targets:
        with tempfile.TemporaryDirectory() as tmp:
            t = time.perf_counter()
            report = _ingest_cli(target, Path(tmp) / "data")
            seconds = time.perf_counter() - t
            pages = _manifest_pages(Path(tmp) / "data")
            chunks = report["chunks"]
            rows.append((label, f"{pages / seconds:,.1f} pages/s, {chunks / seconds:,.0f} chunks/s",
                         f"{report['added']} files, {pages} pages, {chunks} chunks, {report['failed']} failed, "
                         f"{seconds:.0f}s wall"))
            t = time.perf_counter()
            again = _ingest_cli(target, Path(tmp) / "data")
            rows.append((f"  re-run (all unchanged: {again['unchanged'] == len(again['files'])})",
                         f"{time.perf_counter() - t:.1f}s", "size+mtime check, nothing parsed"))
    return rows


def _manifest_pages(data: Path) -> int:
    """Pages of paged formats, and 1 per file for the others (a page-less file counts as one page)."""
    from ingest.manifest import Manifest

    manifest = Manifest(data / "manifest.sqlite")
    try:
        return sum((r.pages or 1) for r in manifest.all() if r.status == "ok")
    finally:
        manifest.close()


def bench_embed(repeats: int) -> list[Row]:
    """Embedding throughput by batch size in tokens, on full chunks and on short sentences."""
    from appliance.backends.embeddings import build_embedding
    from appliance.settings import EmbeddedEmbeddingSettings

    source = CORPUS / "book-war-and-peace-1225p.txt"
    text = source.read_text(errors="ignore") if source.exists() else " ".join(
        p.read_text(errors="ignore") for p in sorted((ROOT / "samples").glob("*.md")))
    words = text.split()
    chunks = [" ".join(words[i * 170:(i + 1) * 170]) for i in range(96)]  # ~230 tokens each
    sentences = [" ".join(words[i * 12:(i + 1) * 12]) for i in range(512)]
    rows: list[Row] = []
    for batch_tokens in (256, 1024, 8192):
        model = build_embedding(EmbeddedEmbeddingSettings(batch_tokens=batch_tokens))
        model.embed(chunks[:4])
        long_s, _ = _median_time(lambda m=model: m.embed(chunks), repeats)
        short_s, _ = _median_time(lambda m=model: m.embed(sentences), repeats)
        rows.append((f"embed, batch_tokens={batch_tokens}", f"{len(chunks) / long_s:.1f} chunks/s",
                     f"230-token chunks; {len(sentences) / short_s:.0f} sentences/s on 12-word sentences"))
    return rows


def bench_store(points: int) -> list[Row]:
    """The embedded store (Qdrant Edge, through our adapter) at `points` chunks of real-looking data."""
    import numpy as np

    from appliance.backends.embeddings import build_embedding
    from appliance.backends.store import EdgeStore, SearchSpec, StorePoint
    from appliance.settings import EmbeddedEmbeddingSettings

    embedding = build_embedding(EmbeddedEmbeddingSettings())
    base_texts = [p.read_text(errors="ignore") for p in sorted((ROOT / "samples").glob("*.md"))]
    words = " ".join(base_texts).split() or ["lorem", "ipsum"]
    rng = np.random.default_rng(0)
    # Real embeddings of 512 text windows, then jittered copies: clustered like real corpora.
    windows = [" ".join(words[(i * 37) % len(words):(i * 37) % len(words) + 60]) for i in range(512)]
    seeds = embedding.embed(windows)
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        store = EdgeStore(Path(tmp) / "edge", embedding.dimension)
        batch, t0 = 1000, time.perf_counter()
        for start in range(0, points, batch):
            n = min(batch, points - start)
            idx = rng.integers(0, len(seeds), n)
            vecs = seeds[idx] + rng.normal(0, 0.05, (n, embedding.dimension)).astype(np.float32)
            vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
            store.upsert([
                StorePoint(id=f"00000000-0000-0000-0000-{start + i:012d}", vector=vecs[i].tolist(),
                           text=windows[idx[i]], payload={"acl_groups": ["everyone"] if i % 2 else ["hr"],
                                                          "path": f"/share/{idx[i]}.txt", "doc_id": str(idx[i])})
                for i in range(n)
            ])
        upsert_s = time.perf_counter() - t0
        rows.append((f"store upsert, {points:,} chunks (dense + BM25 + payload)", f"{points / upsert_s:,.0f} points/s",
                     f"{upsert_s:.1f}s"))
        queries = embedding.embed(windows[:50])
        cases = ((f"hybrid query (dense+BM25, {SearchSpec().fusion.upper()})", None),
                 ("hybrid query, ACL-filtered", ["hr"]))

        def run_queries(groups: list[str] | None) -> list[float]:
            lat = []
            for q, text in zip(queries, windows[:50], strict=True):
                t = time.perf_counter()
                store.search(q.tolist(), text[:80], limit=10, candidates=30, groups=groups)
                lat.append((time.perf_counter() - t) * 1000)
            return lat

        for label, groups in cases:
            lat = run_queries(groups)
            rows.append((f"{label}, before optimize", f"{statistics.median(lat):.1f} ms p50",
                         f"p95 {sorted(lat)[int(len(lat) * 0.95) - 1]:.1f} ms"))
        t = time.perf_counter()
        store.optimize()
        rows.append(("optimize (HNSW build)", f"{time.perf_counter() - t:.1f}s", ""))
        for label, groups in cases:
            lat = run_queries(groups)
            rows.append((f"{label}, after optimize", f"{statistics.median(lat):.1f} ms p50",
                         f"p95 {sorted(lat)[int(len(lat) * 0.95) - 1]:.1f} ms"))
        # A permission change (`appliance acl apply`): new readers for a tenth of the chunks, nothing re-embedded.
        changed = [f"00000000-0000-0000-0000-{i:012d}" for i in range(0, points, 10)]
        t = time.perf_counter()
        for start in range(0, len(changed), 256):
            store.set_groups(changed[start: start + 256], ["hr", "finance"])
        store.flush()
        took = time.perf_counter() - t
        rows.append((f"permission change: new groups on {len(changed):,} chunks",
                     f"{len(changed) / took:,.0f} chunks/s", f"{took:.2f}s, payload only"))
        lat = run_queries(["finance"])
        rows.append(("hybrid query, ACL-filtered, after the change", f"{statistics.median(lat):.1f} ms p50",
                     f"p95 {sorted(lat)[int(len(lat) * 0.95) - 1]:.1f} ms"))
        store.close()
        t = time.perf_counter()
        reopened = EdgeStore(Path(tmp) / "edge", embedding.dimension)
        rows.append(("reopen", f"{(time.perf_counter() - t) * 1000:.0f} ms", f"{reopened.count():,} points"))
        reopened.close()
    return rows


def bench_ask(repeats: int) -> list[Row]:
    """Time to first token and generation speed of `ask` on the samples (retrieval included in TTFT)."""
    from appliance.rag import Answer
    from appliance.services import build_services
    from appliance.settings import load_settings

    questions = ["How many bottles of water were delivered?", "What activities are planned for the family day?",
                 "Which command line tool manages Rust versions?", "What was Anna Pavlovna Scherer's position?"]
    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(load_settings(None, {"data_dir": Path(tmp) / "data"}))
        services.ingest_pipeline.run([ROOT / "samples"])
        t = time.perf_counter()
        services.llm.count_tokens("warm")
        load_s = time.perf_counter() - t
        ttft, tps = [], []
        for _ in range(repeats):
            for q in questions:
                start = time.perf_counter()
                first, deltas, final = None, 0, None
                for event in services.rag.stream(q):
                    if isinstance(event, Answer):
                        final = event
                        continue
                    first = first or time.perf_counter()
                    deltas += 1
                end = time.perf_counter()
                if first is None or final is None:
                    continue
                ttft.append((first - start) * 1000)
                tokens = services.llm.count_tokens(final.text)
                if end > first and tokens > 1:
                    tps.append((tokens - 1) / (end - first))
        services.close()
    return [
        ("ask: chat model load (SmolLM2-135M Q4_1)", f"{load_s:.2f}s", ""),
        ("ask: time to first token", f"{statistics.median(ttft):.0f} ms p50",
         f"p95 {sorted(ttft)[max(0, int(len(ttft) * 0.95) - 1)]:.0f} ms; {len(ttft)} questions, retrieval included"),
        ("ask: generation", f"{statistics.median(tps):.0f} tokens/s p50", "1 llama.cpp thread (llm.threads)"),
    ]


# Every configuration runs on the same stores in the same run; the first is the shipped default.
RETRIEVAL_CONFIGS: list[tuple[str, dict[str, Any]]] = [
    ("hybrid, DBSF (default)", {}),
    ("dense only (all-MiniLM-L6-v2 int8)", {"mode": "dense"}),
    ("BM25 only (Qdrant BM25, English stemming)", {"mode": "keyword"}),
    ("hybrid, RRF k=60, 1:1", {"fusion": "rrf"}),
    ("hybrid, RRF k=60, dense 1 : BM25 1.5", {"fusion": "rrf", "keyword_weight": 1.5}),
    ("hybrid, RRF k=60, dense 1.5 : BM25 1", {"fusion": "rrf", "dense_weight": 1.5}),
    ("hybrid, RRF k=20, 1:1", {"fusion": "rrf", "rrf_k": 20}),
    ("hybrid, RRF k=100, 1:1", {"fusion": "rrf", "rrf_k": 100}),
]


def bench_retrieval(datasets: list[str], data_dir: Path) -> list[Row]:
    """nDCG@10 and friends of each retrieval configuration on the BEIR sets, through `appliance eval`'s code."""
    from appliance.ops.evaluation import evaluate
    from appliance.settings import load_settings

    rows: list[Row] = []
    for name in datasets:
        root = EVAL / name
        if not root.is_dir():
            rows.append((f"retrieval, {name}", "skipped", f"{root} not found"))
            continue
        for label, retrieval in RETRIEVAL_CONFIGS:
            settings = load_settings(None, {"data_dir": data_dir, "retrieval": retrieval})
            try:
                r = evaluate(settings, root).to_dict()
            except Exception as exc:  # one failing row must not lose the table
                rows.append((f"{name}: {label}", "failed", f"{type(exc).__name__}: {exc}"[:200]))
                continue
            rows.append((f"{name}: {label}", f"nDCG@10 {r['ndcg@10']:.3f}",
                         f"R@10 {r['recall@10']:.3f}, R@100 {r['recall@100']:.3f}, MRR@10 {r['mrr@10']:.3f}; "
                         f"latency p50 {r['latency_ms_p50']:.1f} ms, p95 {r['latency_ms_p95']:.1f} ms; "
                         f"{r['queries']} queries, {r['chunks']:,} chunks"))
    return rows


GROUNDING_FLOORS = (0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65)


def bench_grounding(data_dir: Path) -> list[Row]:
    """Calibrate retrieval.min_similarity: questions whose answer is in the store (SciFact claims on SciFact,
    Cranfield queries on Cranfield) should be answered; questions about the other collection should get
    "the documents don't contain an answer". Uses the eval stores that the retrieval rows built."""
    from appliance.ops.evaluation import eval_settings, load_beir
    from appliance.rag import relevant_sources
    from appliance.services import build_services
    from appliance.settings import load_settings

    names = ("scifact", "cranfield")
    if not all((EVAL / n).is_dir() for n in names):
        return [("grounding threshold", "skipped", f"needs {EVAL}/scifact and cranfield")]
    sets = {n: load_beir(EVAL / n) for n in names}
    answered: dict[tuple[str, str], dict[float, float]] = {}
    for store_name in names:
        settings = eval_settings(load_settings(None, {"data_dir": data_dir}), sets[store_name])
        if not (settings.data_dir / "manifest.sqlite").exists():
            return [("grounding threshold", "skipped", f"run the retrieval rows first ({settings.data_dir})")]
        services = build_services(settings)
        try:
            for query_name in names:
                found = [(q, services.rag.search(q)) for q in sets[query_name].queries.values()]
                answered[(store_name, query_name)] = {
                    f: sum(bool(relevant_sources(s, f, q)) for q, s in found) / len(found) for f in GROUNDING_FLOORS}
        finally:
            services.close()
    rows: list[Row] = []
    for f in GROUNDING_FLOORS:
        on = [answered[(n, n)][f] for n in names]
        off = [1 - answered[(a, b)][f] for a in names for b in names if a != b]
        rows.append((f"grounding: min_similarity {f:.2f}",
                     f"balanced accuracy {(sum(on) / 2 + sum(off) / 2) / 2:.3f}",
                     f"answered on-topic: SciFact {on[0]:.1%}, Cranfield {on[1]:.1%}; refused off-topic: "
                     f"Cranfield questions on SciFact {off[0]:.1%}, SciFact claims on Cranfield {off[1]:.1%}"))
    return rows


def main() -> None:
    from appliance.offline import enforce_offline

    enforce_offline()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", default="pdf,embed,ingest,store,ask,retrieval,grounding,api")
    parser.add_argument("--datasets", default="scifact,cranfield", help="BEIR sets under ../shared/eval")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="where the eval stores are kept")
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-folder", action="store_true", help="skip the whole example-docs folder run")
    parser.add_argument("--share-files", type=int, default=10_000, help="files in the synthetic share (scale)")
    parser.add_argument("--no-baseline", action="store_true", help="scale: skip the corpus and baseline runs")
    parser.add_argument("--ocr-engines", default=",".join(OCR_ENGINES), help="ocr: the engines to compare")
    parser.add_argument("--ocr-dpi", default="150,300", help="ocr: the scans' resolutions")
    parser.add_argument("--plumber-pages", type=int, default=0,
                        help="tables: pdfplumber's speed on the first N pages of DA-619p.pdf (0: all, about 2.5 min)")
    parser.add_argument("--header-docs", type=int, default=0,
                        help="chunk_header: SciFact's judged documents plus random others, N in all (0: all)")
    parser.add_argument("--versus-target", action="append", default=[],
                        help="versus_baseline: file or folder to ingest (repeatable or comma separated; "
                             "default ../shared/corpus/unstructured-example-docs/pdf/DA-619p.pdf)")
    parser.add_argument("--versus-rounds", type=int, default=2,
                        help="versus_baseline: rounds of (ours, baseline), alternating")
    args = parser.parse_args()
    only = set(args.only.split(","))
    unknown = only - {"pdf", "embed", "ingest", "store", "ask", "retrieval", "grounding", "api", "scale", "database",
                      "ocr", "tables", "band", "claims", "embed_service", "first_token",
                      "ocr_parity", "table_questions", "chunk_header", "dedup", "embed_runtime", "versus_baseline"}
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    engines = args.ocr_engines.split(",")
    if "ocr" in only and (wrong := set(engines) - set(OCR_ENGINES)):
        parser.error(f"unknown OCR engine(s): {', '.join(sorted(wrong))}")
    rows: list[Row] = []
    if "pdf" in only:
        rows += bench_pdf(args.repeats)
    if "embed" in only:
        rows += bench_embed(args.repeats)
    if "ingest" in only:
        rows += bench_ingest(not args.no_folder)
    if "store" in only:
        rows += bench_store(args.points)
    if "ask" in only:
        rows += bench_ask(max(1, args.repeats // 2))
    if "retrieval" in only:
        rows += bench_retrieval(args.datasets.split(","), args.data_dir)
    if "grounding" in only:
        rows += bench_grounding(args.data_dir)
    if "api" in only:
        from benchmarks.api import bench_api

        rows += bench_api()
    if "embed_service" in only:
        from benchmarks.embed_service import bench_embed_service

        rows += bench_embed_service(max(1, args.repeats - 1))
    if "scale" in only:
        from benchmarks.scale import bench_corpus_vs_baseline, bench_share

        if not args.no_baseline:
            rows += bench_corpus_vs_baseline()
        rows += bench_share(args.share_files)
    if "database" in only:
        from benchmarks.database import bench_database

        rows += bench_database()
    if "ocr" in only:
        from benchmarks.ocr import bench_ocr

        rows += bench_ocr(engines, [int(d) for d in args.ocr_dpi.split(",")])
    if "tables" in only:
        from benchmarks.pdf_tables import bench_tables

        rows += bench_tables(args.repeats, args.plumber_pages)
    if "band" in only:
        from benchmarks.answers import bench_band

        rows += bench_band(args.data_dir)
    if "embed_runtime" in only:
        from benchmarks.embed_runtime import bench_embed_runtime

        rows += bench_embed_runtime(args.repeats)
    if "first_token" in only:
        from benchmarks.first_token import bench_first_token

        rows += bench_first_token(args.repeats)
    if "claims" in only:
        from benchmarks.answers import bench_claims

        rows += bench_claims()
    if "ocr_parity" in only:
        from benchmarks.ocr_parity import bench_ocr_parity

        rows += bench_ocr_parity()
    if "table_questions" in only:
        from benchmarks.table_questions import bench_table_questions

        rows += bench_table_questions()
    if "chunk_header" in only:
        from benchmarks.chunk_header import bench_chunk_header

        rows += bench_chunk_header(args.data_dir, args.header_docs)
    if "dedup" in only:
        from benchmarks.dedup import bench_dedup

        rows += bench_dedup(args.datasets.split(","))
    if "versus_baseline" in only:
        from benchmarks.versus_baseline import bench_versus_baseline

        targets = [Path(t) for arg in args.versus_target for t in arg.split(",") if t]
        rows += bench_versus_baseline(targets or None, args.versus_rounds)
    print_table(rows)


def print_table(rows: list[tuple[str, str, str]]) -> None:
    """The rows as one Markdown table, as docs/benchmarks.md records them."""
    width = max(len(r[0]) for r in rows)
    print(f"| {'what'.ljust(width)} | result | note |")
    print(f"|{'-' * (width + 2)}|---|---|")
    for what, result, note in rows:
        print(f"| {what.ljust(width)} | {result} | {note} |")


if __name__ == "__main__":
    main()
