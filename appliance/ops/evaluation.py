"""`appliance eval`: retrieval quality on a BEIR-layout dataset, measured through the appliance itself.

The corpus is written out as one text file per document and ingested by the real ingest pipeline
into a store of its own (under ``<data_dir>/eval/``, never the documents' store; a re-run reuses it).
Each judged query then goes through ``RagEngine.search``, the code path of ``ask``; a document
ranks by its best chunk, because BEIR judges documents. pytrec_eval (trec_eval's own code)
computes the metrics.
"""

from __future__ import annotations

import hashlib
import json
import re
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.rag import RagEngine
    from appliance.settings import Settings

METRIC_KEYS = ("ndcg@10", "recall@10", "recall@100", "mrr@10")
_SAFE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")  # no leading dot: discovery skips dotfiles


class DatasetError(ValueError):
    """The folder is not a readable BEIR dataset; the message says what is wrong and where."""


@dataclass
class BeirDataset:
    root: Path
    corpus: dict[str, tuple[str, str]]  # doc id -> (title, text)
    queries: dict[str, str]  # judged queries of the split only
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> graded relevance

    @property
    def name(self) -> str:
        return self.root.resolve().name

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for doc_id in sorted(self.corpus):
            title, text = self.corpus[doc_id]
            digest.update(f"{doc_id}\x00{title}\x00{text}\x01".encode())
        return digest.hexdigest()[:12]


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    try:
        with path.open(encoding="utf-8") as fh:
            yield from enumerate(fh, start=1)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{path}: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise DatasetError(f"cannot read {path}: {exc.strerror}") from None


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    if not path.is_file():
        raise DatasetError(f"missing {path.name} in {path.parent} (BEIR layout: corpus.jsonl, queries.jsonl, "
                           "qrels/<split>.tsv)")
    seen: set[str] = set()
    for number, line in _lines(path):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DatasetError(f"{path}:{number}: not JSON ({exc.msg})") from None
        if not isinstance(row, dict) or "_id" not in row:
            raise DatasetError(f"{path}:{number}: a row needs an \"_id\"")
        if str(row["_id"]) in seen:
            raise DatasetError(f"{path}:{number}: _id {row['_id']!r} appears twice")
        seen.add(str(row["_id"]))
        yield number, row


def load_beir(root: Path, split: str = "test") -> BeirDataset:
    corpus: dict[str, tuple[str, str]] = {}
    for _n, row in _jsonl(root / "corpus.jsonl"):
        corpus[str(row["_id"])] = (str(row.get("title") or ""), str(row.get("text") or ""))
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        raise DatasetError(f"missing qrels/{split}.tsv in {root}")
    qrels: dict[str, dict[str, int]] = {}
    for number, line in _lines(qrels_path):
        cells = line.rstrip("\n").split("\t")
        if (number == 1 and cells[:1] == ["query-id"]) or not line.strip():
            continue  # header, blank line
        if len(cells) != 3:
            raise DatasetError(f"{qrels_path}:{number}: expected query-id<TAB>corpus-id<TAB>score")
        try:
            grade = int(cells[2])
        except ValueError:
            raise DatasetError(f"{qrels_path}:{number}: score {cells[2]!r} is not an integer") from None
        if cells[1] in qrels.get(cells[0], {}):
            raise DatasetError(f"{qrels_path}:{number}: query {cells[0]} judges {cells[1]} twice")
        qrels.setdefault(cells[0], {})[cells[1]] = grade
    all_queries = {str(row["_id"]): str(row.get("text") or "") for _n, row in _jsonl(root / "queries.jsonl")}
    queries = {qid: all_queries[qid] for qid in qrels if qid in all_queries}
    empty = [qid for qid, text in queries.items() if not text.strip()]
    if empty:
        raise DatasetError(f"judged query {empty[0]} has no text in queries.jsonl")
    if not corpus:
        raise DatasetError(f"{root / 'corpus.jsonl'} has no documents")
    if not queries:
        raise DatasetError(f"no query of queries.jsonl is judged in qrels/{split}.tsv")
    return BeirDataset(root=root, corpus=corpus, queries=queries, qrels={q: qrels[q] for q in queries})


def eval_settings(settings: Settings, dataset: BeirDataset) -> Settings:
    """The same settings, pointed at the dataset's own store, named after what shapes its chunks."""
    from ingest.points import CHUNKING_VERSION

    shape = json.dumps([settings.ingest.chunk_tokens, settings.ingest.chunk_overlap_tokens,
                        settings.embeddings.provider, CHUNKING_VERSION, dataset.fingerprint()])
    tag = f"{re.sub(r'[^A-Za-z0-9_-]', '_', dataset.name)}-{hashlib.sha1(shape.encode()).hexdigest()[:10]}"
    update: dict[str, Any] = {"data_dir": settings.data_dir / "eval" / tag}
    if settings.store.provider == "qdrant":
        update["store"] = settings.store.model_copy(update={"collection": f"eval-{tag}"})
    return settings.model_copy(update=update)


def materialize(dataset: BeirDataset, folder: Path) -> dict[str, str]:
    """Write each document as `<id>.txt` (title, blank line, text); returns file stem -> doc id.

    A file is rewritten only when its content differs, so a re-run finds it unchanged."""
    folder.mkdir(parents=True, exist_ok=True)
    stems: dict[str, str] = {}
    for doc_id, (title, text) in dataset.corpus.items():
        stem = doc_id if _SAFE_ID.match(doc_id) else "id-" + hashlib.sha1(doc_id.encode()).hexdigest()
        content = f"{title}\n\n{text}\n" if title else f"{text}\n"
        path = folder / f"{stem}.txt"
        if not path.is_file() or path.read_text(encoding="utf-8") != content:
            path.write_text(content, encoding="utf-8")
        stems[stem] = doc_id
    return stems


@dataclass
class QueryResult:
    query_id: str
    ranking: list[tuple[str, float]]  # (doc id, score of its best chunk), best first
    seconds: float  # the search as `ask` runs it
    deep_seconds: float = 0.0  # the 100-document search behind the metrics


@dataclass
class EvalReport:
    dataset: str
    documents: int
    queries: int
    chunks: int
    metrics: dict[str, float]
    latency_ms_p50: float
    latency_ms_p95: float
    deep_latency_ms_p95: float
    ingest_seconds: float
    settings: dict[str, Any] = field(default_factory=dict)
    unindexed: list[str] = field(default_factory=list)  # documents that yielded no chunk, with the reason
    indexed_now: int = 0  # documents (re)indexed by this run; 0 when the dataset's store was reused

    def to_dict(self) -> dict[str, Any]:
        return {
            **{k: round(self.metrics[k], 4) for k in METRIC_KEYS},
            "latency_ms_p50": round(self.latency_ms_p50, 2),
            "latency_ms_p95": round(self.latency_ms_p95, 2),
            "deep_search_ms_p95": round(self.deep_latency_ms_p95, 2),
            "dataset": self.dataset, "documents": self.documents, "queries": self.queries, "chunks": self.chunks,
            "ingest_seconds": round(self.ingest_seconds, 1), "indexed_now": self.indexed_now,
            "unindexed": self.unindexed, "settings": self.settings,
        }


def rank_documents(rag: RagEngine, dataset: BeirDataset, stems: dict[str, str], depth: int = 100,
                   progress: Callable[[int], Any] | None = None) -> list[QueryResult]:
    """Each judged query through the engine's search; chunks folded into documents by their best rank."""
    results: list[QueryResult] = []
    bar = progress(len(dataset.queries)) if progress else None
    # Documents have one to a few chunks: fetch enough chunks to fill `depth` distinct documents.
    chunk_limit = depth * 3
    for qid, text in dataset.queries.items():
        # Latency is that of the search `ask` runs (retrieval.candidates deep); the ranking for the
        # metrics needs 100 documents, a deeper search timed on its own.
        started = time.perf_counter()
        shallow = rag.search(text, strict=True)
        seconds = time.perf_counter() - started
        deep = rag.search(text, limit=chunk_limit, strict=True)
        deep_seconds = time.perf_counter() - started - seconds
        # The top is exactly what `ask` ranks (fusion depends on how deep each list goes); the deeper
        # search only extends the ranking past it, for Recall@100.
        best: dict[str, float] = {}
        for source in [*shallow, *deep]:  # best first: the first chunk of a document is its best
            doc = stems.get(Path(source.path).stem)
            if doc is not None and doc not in best:
                best[doc] = source.score
        ranking = list(best.items())[:depth]
        results.append(QueryResult(qid, ranking, seconds, deep_seconds))
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    return results


def metrics(qrels: dict[str, dict[str, int]], results: list[QueryResult]) -> dict[str, float]:
    """nDCG@10, Recall@10/100 and MRR@10 by pytrec_eval, averaged over every judged query
    (a query with no result counts as 0, where trec_eval would drop it)."""
    import pytrec_eval

    if not qrels:
        return dict.fromkeys(METRIC_KEYS, 0.0)
    # Rank-derived scores: trec_eval sorts by score, so ties must not reorder our ranking.
    run = {r.query_id: {doc: float(len(r.ranking) - i) for i, (doc, _s) in enumerate(r.ranking)} for r in results}
    top10 = {q: {d: s for d, s in docs.items() if s > len(docs) - 10} for q, docs in run.items()}
    deep = pytrec_eval.RelevanceEvaluator(qrels, {"ndcg_cut.10", "recall.10,100"}).evaluate(run)
    # MRR@10 is trec_eval's reciprocal rank over the top 10.
    shallow = pytrec_eval.RelevanceEvaluator(qrels, {"recip_rank"}).evaluate(top10)
    names = {"ndcg@10": (deep, "ndcg_cut_10"), "recall@10": (deep, "recall_10"),
             "recall@100": (deep, "recall_100"), "mrr@10": (shallow, "recip_rank")}
    return {key: sum(table.get(q, {}).get(measure, 0.0) for q in qrels) / len(qrels)
            for key, (table, measure) in names.items()}


def percentile_ms(seconds: list[float], pct: int) -> float:
    if len(seconds) < 2:
        return 1000 * (seconds[0] if seconds else 0.0)
    return 1000 * statistics.quantiles(seconds, n=100, method="inclusive")[pct - 1]


def report(dataset: BeirDataset, results: list[QueryResult], chunks: int, ingest_seconds: float,
           settings: dict[str, Any]) -> EvalReport:
    times = [r.seconds for r in results]
    return EvalReport(
        dataset=dataset.name, documents=len(dataset.corpus), queries=len(results), chunks=chunks,
        metrics=metrics({r.query_id: dataset.qrels[r.query_id] for r in results}, results),
        latency_ms_p50=percentile_ms(times, 50), latency_ms_p95=percentile_ms(times, 95),
        deep_latency_ms_p95=percentile_ms([r.deep_seconds for r in results], 95),
        ingest_seconds=ingest_seconds, settings=settings,
    )


def evaluate(settings: Settings, root: Path, *, split: str = "test", max_queries: int | None = None,
             depth: int = 100, progress: Callable[[str, int], Any] | None = None) -> EvalReport:
    """Ingest the dataset into its own store (reused when unchanged), then rank every judged query."""
    from appliance.services import build_services

    dataset = load_beir(root, split)
    if max_queries is not None:
        dataset.queries = dict(list(dataset.queries.items())[:max_queries])
        dataset.qrels = {q: dataset.qrels[q] for q in dataset.queries}
    own = eval_settings(settings, dataset)
    services = build_services(own)
    try:
        stems = materialize(dataset, own.data_dir / "docs")
        pipeline = services.ingest_pipeline
        started = time.monotonic()
        ingest_bar = (lambda total: progress("ingest", total)) if progress else None
        ingested = pipeline.run([own.data_dir / "docs"], prune=True, progress=ingest_bar)
        # A document without text (Cranfield has two) cannot be found: it stays in the judgments as a miss.
        # On a re-run, files that failed before come back "unchanged" with their error.
        unindexed = [f for f in ingested.files if f.status in ("failed", "skipped") or f.error]
        if len(unindexed) == len(dataset.corpus):
            raise DatasetError(f"no document could be ingested, e.g. {unindexed[0].path}: {unindexed[0].error}")
        ingest_seconds = time.monotonic() - started
        query_bar = (lambda total: progress("queries", total)) if progress else None
        results = rank_documents(services.rag, dataset, stems, depth=depth, progress=query_bar)
        r = own.retrieval
        described = {"mode": r.mode, "fusion": r.fusion, "rrf_k": r.rrf_k, "dense_weight": r.dense_weight,
                     "keyword_weight": r.keyword_weight, "candidates": r.candidates,
                     "rerank": own.rerank.provider, "chunk_tokens": own.ingest.chunk_tokens,
                     "store": str(own.data_dir)}
        result = report(dataset, results, services.store.count(), ingest_seconds, described)
        result.unindexed = [f"{Path(f.path).stem}: {f.error}" for f in unindexed]
        result.indexed_now = ingested.count("added") + ingested.count("updated")
        return result
    finally:
        services.close()
