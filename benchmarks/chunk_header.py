"""SciFact nDCG@10 with the document header in the chunks' text and without it (issue 19), in one run.

    .venv/bin/python -m benchmarks.chunk_header [--dataset ../shared/eval/scifact] [--docs N] [--data-dir DIR]
    .venv/bin/python -m benchmarks.run --only chunk_header [--header-docs N] [--data-dir DIR]   (the same rows)

"on" is the shipped pipeline (CHUNKING_VERSION 3 and later): `ingest.points.heading(title, section)`, the
document's title then its section path, heads each chunk's embedded text and, through the payload's
`heading`, its BM25 text. "off" is the same code with, in this process only, the chunking v2 behaviour put
back: the embedded text is headed by the section path alone (`heading("", section)`) and the BM25 text is the
chunk's text alone (an empty payload `heading`). Nothing else differs; the defaults are not touched.

Both go through `appliance eval`'s code (appliance.ops.evaluation.evaluate), each into a store of its own:
"on" under DIR/eval/ (where `appliance eval` keeps it, so a store built by the retrieval rows is reused),
"off" under DIR/header-off/eval/. The whole of SciFact is 13k chunks, about an hour a store on a busy
2-core machine; `--docs N` keeps every judged document plus N minus those drawn at random (seed 0) from the
rest, written as a BEIR folder under DIR/subsets/: quicker, and its scores are higher than the full set's
(fewer distractors), so compare on and off only within one corpus.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
SCIFACT = ROOT.parent / "shared" / "eval" / "scifact"
Row = tuple[str, str, str]


@contextlib.contextmanager
def header_off() -> Iterator[None]:
    """In this process: chunks embedded under their section path only, and BM25-indexed without a heading."""
    import ingest.pipeline as pipeline
    from ingest.chunk import Chunk
    from ingest.points import heading

    embed_input, chunk_payload = pipeline.embed_input, pipeline.chunk_payload

    def section_only(chunk: Chunk, title: str = "") -> str:
        head = heading("", chunk.section)
        return f"{head}\n{chunk.text}" if head else chunk.text

    def no_heading(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {**chunk_payload(*args, **kwargs), "heading": ""}

    pipeline.embed_input, pipeline.chunk_payload = section_only, no_heading  # type: ignore[assignment]
    try:
        yield
    finally:
        pipeline.embed_input, pipeline.chunk_payload = embed_input, chunk_payload  # type: ignore[assignment]


def subset(root: Path, docs: int, into: Path) -> Path:
    """A BEIR folder with every judged document of `root` and random others (seed 0), `docs` in all."""
    from appliance.ops.evaluation import load_beir

    dataset = load_beir(root)
    judged = {d for q in dataset.qrels.values() for d in q}
    rest = sorted(set(dataset.corpus) - judged)
    keep = judged | set(random.Random(0).sample(rest, max(0, min(len(rest), docs - len(judged)))))
    out = into / f"{dataset.name}-{len(keep)}"
    (out / "qrels").mkdir(parents=True, exist_ok=True)
    with (out / "corpus.jsonl").open("w", encoding="utf-8") as fh:
        for doc_id in sorted(keep):
            title, text = dataset.corpus[doc_id]
            fh.write(json.dumps({"_id": doc_id, "title": title, "text": text}) + "\n")
    with (out / "queries.jsonl").open("w", encoding="utf-8") as fh:
        for qid, text in dataset.queries.items():
            fh.write(json.dumps({"_id": qid, "text": text}) + "\n")
    with (out / "qrels" / "test.tsv").open("w", encoding="utf-8") as fh:
        fh.write("query-id\tcorpus-id\tscore\n")
        for qid, judged_docs in dataset.qrels.items():
            fh.writelines(f"{qid}\t{d}\t{g}\n" for d, g in judged_docs.items())
    return out


def measure(root: Path, data_dir: Path, docs: int = 0, only: str = "off,on") -> list[dict[str, Any]]:
    """nDCG@10 and friends with the header off, then on (the default): one dict per variant."""
    from appliance.ops.evaluation import evaluate
    from appliance.settings import load_settings

    if docs:
        root = subset(root, docs, data_dir / "subsets")
    out = []
    variants = (("off", data_dir / "header-off", header_off), ("on", data_dir, contextlib.nullcontext))
    for label, where, switch in variants:
        if label not in only.split(","):
            continue
        started = time.monotonic()
        with switch():
            r = evaluate(load_settings(None, {"data_dir": where}), root).to_dict()
        out.append({"header": label, "seconds": time.monotonic() - started, **r})
    return out


def bench_chunk_header(data_dir: Path, docs: int = 0, root: Path = SCIFACT, only: str = "off,on") -> list[Row]:
    """benchmarks.run's rows: one per variant, then the difference."""
    if not root.is_dir():
        return [("chunk header, SciFact", "skipped", f"{root} not found")]
    runs = measure(root, data_dir, docs, only)
    rows: list[Row] = []
    for r in runs:
        what = ("on (default): title + section path in embedding and BM25" if r["header"] == "on"
                else "off (v2): section path in embedding only")
        rows.append((f"{r['dataset']}: header {what}", f"nDCG@10 {r['ndcg@10']:.4f}",
                     f"R@10 {r['recall@10']:.4f}, R@100 {r['recall@100']:.4f}, MRR@10 {r['mrr@10']:.4f}; "
                     f"{r['queries']} queries, {r['documents']:,} documents, {r['chunks']:,} chunks; "
                     f"{r['seconds']:.0f}s ({r['indexed_now']} indexed now)"))
    if len(runs) < 2:
        return rows
    off, on = runs
    delta = on["ndcg@10"] - off["ndcg@10"]
    rows.append((f"{on['dataset']}: header on - off", f"{delta:+.4f} nDCG@10",
                 "goal: no drop of more than 0.005 " + ("(met)" if delta >= -0.005 else "(NOT met)")))
    return rows


def main() -> None:
    from appliance.offline import enforce_offline

    enforce_offline()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", type=Path, default=SCIFACT)
    parser.add_argument("--docs", type=int, default=0, help="judged documents plus random others, N in all (0: all)")
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data")
    parser.add_argument("--header", default="off,on", help="the variants to run: off, on or both (two processes "
                        "may build the two stores side by side; a later run of both reuses them)")
    args = parser.parse_args()
    rows = bench_chunk_header(args.data_dir, args.docs, args.dataset, args.header)
    print("| what | result | note |\n|---|---|---|")
    for what, result, note in rows:
        print(f"| {what} | {result} | {note} |")


if __name__ == "__main__":
    main()
