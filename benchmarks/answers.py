"""Answers checked against their sources (issue 19): the answer band and the figure check, measured.

    .venv/bin/python -m benchmarks.answers band [--data-dir DIR]    # or: benchmarks.run --only band
    .venv/bin/python -m benchmarks.answers claims                   # or: benchmarks.run --only claims

band: the eval sets (../shared/eval, BEIR layout) are ingested as `appliance eval` does (into the same
stores under --data-dir, so an earlier eval run is reused), then each judged query goes through the search
`ask` runs. The best dense similarity among its candidates (what `RagEngine.relevant` compares with
retrieval.min_similarity) is recorded for three kinds of question: on-topic with a relevant document
at rank 1, on-topic whose rank-1 document is not relevant, and off-topic (the other set's questions).
Where the first kind dominates, answer; where the second and third crowd in, answer weakly; below,
refuse. Each row is one band of similarity.

claims: the sample questions of tests/e2e/test_ingest_ask.py asked of the samples with the real small
model; each answer's figures checked against its passages (appliance/answer_check.py). The check never
changes the text, so "before" is the same answers with nothing flagged.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from itertools import pairwise
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
EVAL = ROOT.parent / "shared" / "eval"
SETS = ("scifact", "cranfield")
EDGES = (0.25, 0.30, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60)
Row = tuple[str, str, str]


def best_similarities(data_dir: Path) -> dict[str, dict[str, list[float]]]:
    """Per store: the best dense similarity of each question, as `right` (a relevant document at rank 1),
    `wrong` (on-topic, rank 1 not relevant) and `off` (the other set's questions)."""
    from appliance.ops.evaluation import eval_settings, load_beir, materialize
    from appliance.services import build_services
    from appliance.settings import load_settings

    sets = {n: load_beir(EVAL / n) for n in SETS}
    out: dict[str, dict[str, list[float]]] = {}
    for name, dataset in sets.items():
        settings = eval_settings(load_settings(None, {"data_dir": data_dir}), dataset)
        services = build_services(settings)
        try:
            stems = materialize(dataset, settings.data_dir / "docs")
            services.ingest_pipeline.run([settings.data_dir / "docs"], prune=True, retry_failed=True)
            kinds: dict[str, list[float]] = {"right": [], "wrong": [], "off": []}
            for qid, question in dataset.queries.items():
                found = services.rag.search(question, strict=True)
                if not found:
                    continue
                top = stems.get(Path(found[0].path).stem, "")
                right = dataset.qrels[qid].get(top, 0) > 0
                kinds["right" if right else "wrong"].append(_best(found))
            for other, off in sets.items():
                if other != name:
                    kinds["off"] += [_best(services.rag.search(q, strict=True)) for q in off.queries.values()]
            out[name] = kinds
        finally:
            services.close()
    return out


def _best(found: list[Any]) -> float:
    return max((s.dense_score for s in found if s.dense_score is not None), default=0.0)


def band_table(scores: dict[str, dict[str, list[float]]]) -> list[str]:
    """Markdown: per similarity band and set, how many questions of each kind land there."""
    lines = ["| best similarity | " + " | ".join(f"{n}: right / wrong / off-topic" for n in scores)
             + " | rank-1 right, both sets |", "|---|" + "---|" * (len(scores) + 1)]
    bounds = [(-1.0, EDGES[0]), *pairwise(EDGES), (EDGES[-1], 1.01)]
    for lo, hi in bounds:
        label = f"< {hi:.2f}" if lo < 0 else f">= {lo:.2f}" if hi > 1 else f"{lo:.2f}-{hi:.2f}"
        cells, right, wrong = [], 0, 0
        for kinds in scores.values():
            n = {k: sum(lo <= x < hi for x in v) for k, v in kinds.items()}
            cells.append(f"{n['right']} / {n['wrong']} / {n['off']}")
            right, wrong = right + n["right"], wrong + n["wrong"]
        share = f"{right / (right + wrong):.0%}" if right + wrong else "-"
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {share} |")
    return lines


def threshold_table(scores: dict[str, dict[str, list[float]]], floors: tuple[float, ...]) -> list[str]:
    """Markdown: at each threshold, the share of each kind of question at or above it."""
    lines = ["| threshold | " + " | ".join(f"{n}: right / wrong / off-topic at or above" for n in scores) + " |",
             "|---|" + "---|" * len(scores)]
    for f in floors:
        cells = []
        for kinds in scores.values():
            cells.append(" / ".join(f"{sum(x >= f for x in kinds[k]) / max(1, len(kinds[k])):.1%}"
                                    for k in ("right", "wrong", "off")))
        lines.append(f"| {f:.2f} | " + " | ".join(cells) + " |")
    return lines


def quartiles(values: list[float]) -> str:
    if len(values) < 2:
        return "-"
    q = statistics.quantiles(values, n=20, method="inclusive")
    return f"p5 {q[0]:.2f}, p25 {q[4]:.2f}, median {q[9]:.2f}, p75 {q[14]:.2f}, p95 {q[18]:.2f} (n={len(values)})"


def bench_band(data_dir: Path) -> list[Row]:
    """run.py's rows: the distributions, and where the shipped band puts each kind of question."""
    from appliance.settings import RetrievalSettings

    missing = [n for n in SETS if not (EVAL / n).is_dir()]
    if missing:
        return [("answer band", "skipped", f"{EVAL} has no {', '.join(missing)} (BEIR layout): nothing to measure")]
    scores = best_similarities(data_dir)
    band = RetrievalSettings()
    lo, hi = band.min_similarity, band.strong_similarity
    rows: list[Row] = []
    for name, kinds in scores.items():
        for kind, values in kinds.items():
            rows.append((f"band: {name}, best similarity, {kind}", f"median {statistics.median(values):.2f}",
                         quartiles(values)))
        where = {k: (sum(x < lo for x in v), sum(lo <= x < hi for x in v), sum(x >= hi for x in v))
                 for k, v in kinds.items()}
        rows.append((f"band: {name} at {lo:.2f} / {hi:.2f}", "refused / weak / strong",
                     "; ".join(f"{k} {a} / {b} / {c}" for k, (a, b, c) in where.items())))
    return rows


def bench_claims() -> list[Row]:
    """run.py's rows: answers of the small model to the sample questions, and their unsupported figures."""
    answers = sample_answers()
    with_figures = sum(bool(a["figures"]) for a in answers)
    flagged = [a for a in answers if a["unsupported"]]
    return [
        ("claims: sample answers", f"{len(answers)} answers", f"{with_figures} state a figure, date or quote"),
        ("claims: before (no check)", "0 flagged", f"{len(flagged)} carry an unsupported figure, unmarked"),
        ("claims: after", f"{len(flagged)} flagged",
         "; ".join(f"{a['file']}: {', '.join(a['unsupported'])}" for a in flagged)[:400]),
    ]


def sample_answers() -> list[dict[str, Any]]:
    """Each sample question asked of a fresh store of the samples, with the real small model."""
    from appliance.answer_check import claims
    from appliance.services import build_services
    from appliance.settings import load_settings
    from tests.e2e.test_ingest_ask import QUESTIONS

    out = []
    with tempfile.TemporaryDirectory() as tmp:
        services = build_services(load_settings(None, {"data_dir": Path(tmp) / "data"}))
        try:
            services.ingest_pipeline.run([ROOT / "samples"])
            for entry in QUESTIONS:
                values = getattr(entry, "values", entry)  # a pytest.param, or a plain tuple
                question, file_name = str(values[0]), str(values[1])
                answer = services.rag.ask(question)
                figures = claims(answer.text) if answer.grounded else []
                out.append({"question": question, "file": file_name, "match": answer.match,
                            "best": max((s.dense_score or 0.0 for s in answer.sources), default=0.0),
                            "answer": answer.text, "figures": figures, "unsupported": answer.unsupported})
        finally:
            services.close()
    return out


def main() -> None:
    from appliance.offline import enforce_offline

    enforce_offline()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("what", choices=("band", "claims"))
    parser.add_argument("--data-dir", type=Path, default=ROOT / "data", help="where the eval stores are kept")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args()
    if args.what == "claims":
        answers = sample_answers()
        for a in answers:
            print(f"- {a['file']} ({a['match']}, best {a['best']:.2f}): {a['answer']!r}\n"
                  f"  claims {a['figures']}; unsupported {a['unsupported']}")
        print(f"\n{sum(bool(a['unsupported']) for a in answers)} of {len(answers)} answers carry an unsupported "
              f"claim; {sum(bool(a['figures']) for a in answers)} state one at all")
        raw: Any = answers
    else:
        missing = [n for n in SETS if not (EVAL / n).is_dir()]
        if missing:
            raise SystemExit(f"{EVAL} has no {', '.join(missing)} (BEIR layout): nothing to measure")
        raw = best_similarities(args.data_dir)
        for name, kinds in raw.items():
            for kind, values in kinds.items():
                print(f"{name} {kind}: {quartiles(values)}")
        print("\n" + "\n".join(band_table(raw)) + "\n")
        print("\n".join(threshold_table(raw, (0.30, 0.33, 0.35, 0.38, 0.40, 0.42, 0.45, 0.50, 0.55))))
    if args.json:
        args.json.write_text(json.dumps(raw, ensure_ascii=False, indent=1))


if __name__ == "__main__":
    main()
