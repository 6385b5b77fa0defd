"""Tokens embedded before and after issue 23 part 2, in one run: PDFs' running headers and footers left out
(ingest.running), and each distinct chunk text embedded once (the pipeline's vector cache, keyed by the text
with its spacing folded).

    .venv/bin/python -m benchmarks.run --only dedup [--datasets scifact,cranfield]

Every file is parsed once each way (running lines kept / dropped) and chunked as ingestion chunks it; the
texts are then counted in the embedding model's tokens (with [CLS]/[SEP], cut at 256, as it reads them):
"every chunk" embeds each chunk, "before" each distinct exact text (the cache as it was), "after" each
distinct folded text of the chunks without running lines. Then the PDFs' pages of the Internal Revenue
Manual (the running-line heavy one) are embedded both ways, for the time (the first 20 pages).
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from benchmarks.run import CORPUS, EVAL, Row

PDF_FOLDER = CORPUS / "pdf"
IRS = PDF_FOLDER / "pdf2image-memory-error-test-400p.pdf"


def _texts(path: Path, chunker: Any, drop_running: bool) -> tuple[list[str], int]:
    """The embedded inputs of one file's chunks (none where it cannot be parsed), and its pages."""
    from ingest.parse import ParseError, parse_file
    from ingest.points import embed_input

    try:
        parsed = parse_file(path, ocr="off", drop_running=drop_running)  # OCR pages have no running lines here
    except ParseError:
        return [], 0
    title = str(parsed.meta.to_payload().get("title", ""))
    return [embed_input(c, title) for c in chunker.chunk(parsed.elements)], parsed.pages or 1


def _count(texts: list[str], embedding: Any) -> tuple[int, int, int, int, int]:
    """(chunks, tokens of every chunk, tokens of distinct exact texts, distinct folded texts, their tokens)."""
    from ingest.points import embed_key

    tokens = [embedding.count_tokens([t]) for t in texts]
    exact = dict(zip(texts, tokens, strict=True))
    folded = {embed_key(t): n for t, n in zip(texts, tokens, strict=True)}
    return len(texts), sum(tokens), sum(exact.values()), len(folded), sum(folded.values())


def _corpora(datasets: list[str], tmp: Path) -> Iterator[tuple[str, list[Path]]]:
    from appliance.ops.evaluation import load_beir, materialize

    if PDF_FOLDER.is_dir():
        yield "corpus PDFs (unstructured-example-docs/pdf)", sorted(PDF_FOLDER.glob("*.pdf"))
    for name in datasets:
        if (EVAL / name).is_dir():
            folder = tmp / name
            materialize(load_beir(EVAL / name), folder)
            yield f"{name} corpus (as `appliance eval` writes it)", sorted(folder.glob("*.txt"))


def bench_dedup(datasets: list[str], pages: int = 20) -> list[Row]:
    from appliance.backends.embeddings import build_embedding, build_token_counter
    from appliance.settings import EmbeddedEmbeddingSettings, IngestSettings
    from ingest.chunk import Chunker

    settings = IngestSettings()
    counter = build_token_counter()
    chunker = Chunker(counter.count, counter.tokens, settings.chunk_tokens, settings.chunk_overlap_tokens)
    embedding = build_embedding(EmbeddedEmbeddingSettings())
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, files in _corpora(datasets, Path(tmp)):
            t = time.perf_counter()
            before: list[str] = []
            after: list[str] = []
            for path in files:
                kept = _texts(path, chunker, drop_running=False)[0]
                before += kept
                after += _texts(path, chunker, drop_running=True)[0] if path.suffix == ".pdf" else kept
            n_b, every, exact, _, _ = _count(before, embedding)
            n_a, _, _, distinct, folded = _count(after, embedding)
            rows += [
                (f"{label}: every chunk embedded", f"{every:,} tokens", f"{n_b:,} chunks, {len(files)} files"),
                (f"{label}: before (distinct exact texts)", f"{exact:,} tokens", f"{len(set(before)):,} embedded"),
                (f"{label}: after (no running lines, distinct folded texts)", f"{folded:,} tokens",
                 f"{distinct:,} embedded of {n_a:,} chunks; {folded / max(exact, 1):.3f} of before "
                 f"({time.perf_counter() - t:.0f}s to parse and count both ways)"),
            ]
    if IRS.is_file():
        rows += _embed_time(IRS, chunker, embedding, pages)
    return rows


def _embed_time(path: Path, chunker: Any, embedding: Any, pages: int) -> list[Row]:
    """Embedding the first `pages` pages of a PDF with and without its running lines (cold cache each)."""
    from ingest.parse import parse_pdf
    from ingest.points import embed_input, embed_key

    out: list[Row] = []
    for drop in (False, True):
        parsed = parse_pdf(path, drop_running=drop)
        chunks = [c for c in chunker.chunk(parsed.elements) if (c.page or 0) <= pages]
        texts = [embed_input(c, "") for c in chunks]
        distinct = list({(embed_key(t) if drop else t): t for t in texts}.values())
        t = time.perf_counter()
        embedding.embed(distinct)
        seconds = time.perf_counter() - t
        out.append((f"embed {path.name} pages 1-{pages}, {'after' if drop else 'before'}", f"{seconds:.1f}s",
                    f"{len(distinct)} texts of {len(texts)} chunks, {embedding.count_tokens(distinct):,} tokens"))
    return out
