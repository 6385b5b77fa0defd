"""What the shared database costs: the appliance's tables on SQLite (one server) and on PostgreSQL
(several replicas), and ingest runs side by side on one store.

    .venv/bin/python -m benchmarks.run --only database

PostgreSQL is a local, durable server (fsync on) reached over its Unix socket: a server across the
network adds its round-trip (typically 0.1-0.5 ms) to every statement.
"""

from __future__ import annotations

import shutil
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

Row = tuple[str, str, str]


def _per_call(fn: Callable[[], Any], calls: int) -> float:
    """Median of 5 rounds of `calls` calls, in ms per call."""
    rounds = []
    for _ in range(5):
        t = time.perf_counter()
        for _ in range(calls):
            fn()
        rounds.append((time.perf_counter() - t) / calls * 1000)
    return statistics.median(rounds)


def _tables(where: Callable[[str], Any]) -> dict[str, float]:
    from appliance.access.auth import Users
    from appliance.stores.conversations import Conversations, Turn
    from ingest.manifest import Manifest
    from ingest.runs import RunLease

    users = Users(where("users"))
    users.add("alice", "Tulip-Harbor-9921")
    token = users.start_session("alice")
    conversations = Conversations(where("conversations"))
    cid = conversations.create("alice", "benchmark")
    manifest = Manifest(where("manifest"))
    lease = RunLease(manifest)
    lease.start()
    n = 0

    def claim_release() -> None:
        nonlocal n
        n += 1
        lease.claim(f"/share/file-{n}.pdf")
        lease.release(f"/share/file-{n}.pdf")

    out = {"session": _per_call(lambda: users.session(token), 500),
           "turn": _per_call(lambda: conversations.add_turn("alice", cid, Turn("q", "a" * 800, [{"path": "/x"}])), 100),
           "lease": _per_call(claim_release, 200),
           "hidden": _per_call(manifest.hidden_ids, 500)}
    lease.stop()
    for closable in (users, conversations, manifest):
        closable.close()
    return out


def _ingest_side_by_side(root: Path, database_url: Callable[[], str] | None) -> tuple[float, float, int]:
    """Wall time of one ingest run over the samples, and of three runs at once over the same (fresh stores)."""
    from appliance.services import build_services
    from appliance.settings import load_settings
    from ingest.manifest import Manifest
    from ingest.pipeline import IngestPipeline

    samples = Path(__file__).resolve().parent.parent / "samples"
    times = []
    processed = 0
    for runs in (1, 3):
        data = root / f"data-{runs}-{'pg' if database_url else 'sqlite'}"
        overrides: dict[str, Any] = {"data_dir": data, "ingest": {"workers": 1}}
        if database_url:
            overrides["database"] = {"url": database_url()}
        services = build_services(load_settings(None, overrides))
        services.embedding.embed(["warm up"])
        where = services.settings.database_for(services.settings.manifest_path)
        manifests = [Manifest(where) for _ in range(runs)]
        pipelines = [IngestPipeline(services.settings.ingest, m, services.store, services.embedding)
                     for m in manifests]
        reports: list[Any] = [None] * runs
        threads = [threading.Thread(target=_run_into, args=(reports, i, pipelines[i], samples)) for i in range(runs)]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        times.append(time.perf_counter() - t)
        processed = sum(1 for r in reports for f in r.files if f.status != "unchanged")
        for p, m in zip(pipelines, manifests, strict=True):
            p.close()
            m.close()
        services.close()
    return times[0], times[1], processed


def _run_into(reports: list[Any], i: int, pipeline: Any, folder: Path) -> None:
    reports[i] = pipeline.run([folder])


def bench_database() -> list[Row]:
    from appliance.stores.database import Postgres
    from tests.support.postgres import running_postgres

    rows: list[Row] = []
    root = Path(tempfile.mkdtemp(prefix="bench-db-"))
    try:
        with running_postgres(durable=True) as pg:
            if pg is None:
                return [("database", "skipped", "PostgreSQL is not installed (scripts/setup.sh test installs it)")]
            lite = _tables(lambda name: root / f"{name}.sqlite")
            url = pg.new_database()
            on_pg = _tables(lambda name: Postgres(url))
            names = {"session": "session check (each request of a signed-in user)",
                     "turn": "conversation turn saved",
                     "lease": "file lease taken and released (each changed file an ingest run processes)",
                     "hidden": "hidden-chunk list read (each search)"}
            for key, what in names.items():
                rows.append((what, f"SQLite {lite[key]:.3f} ms, PostgreSQL {on_pg[key]:.3f} ms",
                             f"median of 5 rounds; ratio {on_pg[key] / lite[key]:.1f}x"))
            from appliance.access.limits import RateLimiter
            from appliance.access.shared_state import SharedRateLimiter, SharedState

            memory = RateLimiter(10**9)
            shared = SharedState(Postgres(url))
            across = SharedRateLimiter(shared, "requests", 10**9)
            here, there = _per_call(lambda: memory.hit("alice"), 500), _per_call(lambda: across.hit("alice"), 200)
            shared.close()
            rows.append(("rate-limit count (each request of a user or key)",
                         f"in memory {here:.3f} ms, PostgreSQL (across replicas) {there:.3f} ms",
                         "median of 5 rounds; one user's window of events"))
            for label, new_db in (("SQLite manifest", None), ("PostgreSQL manifest", pg.new_database)):
                one, three, processed = _ingest_side_by_side(root, new_db)
                rows.append((f"ingest samples/ (18 files): 1 run vs 3 runs at once, {label}",
                             f"{one:.1f} s vs {three:.1f} s ({three / one:.2f}x)",
                             f"3 runs processed {processed} files in all (each once); 1 parse worker each, "
                             "2 cores shared"))
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return rows
