"""Several ingest runs at once on one store and one manifest (a SQLite file, or PostgreSQL as workers
on several machines would share it), with the real parser, embedder and store: every file is
processed by exactly one run, nothing is duplicated, nothing is lost or left hidden."""

from __future__ import annotations

import os
import shutil
import threading
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

from appliance.stores.database import Postgres
from ingest.manifest import Manifest
from ingest.pipeline import IngestPipeline
from ingest.report import IngestReport
from tests.conftest import SAMPLES, make_services

RUNS = 3


@pytest.fixture(params=["sqlite", "postgresql"])
def services(request: pytest.FixtureRequest, tmp_path: Path) -> Any:
    overrides: dict[str, Any] = {"ingest": {"workers": 1}}
    if request.param == "postgresql":
        overrides["database"] = {"url": request.getfixturevalue("postgres_url")}
    s = make_services(tmp_path / "data", **overrides)
    yield s
    s.close()


def _run_together(services: Any, folder: Path) -> list[IngestReport]:
    """RUNS pipelines, each with its own manifest connection, started at the same moment."""
    where = services.settings.database_for(services.settings.manifest_path)
    manifests = [Manifest(where) for _ in range(RUNS)]
    pipelines = [IngestPipeline(services.settings.ingest, m, services.store, services.embedding) for m in manifests]
    reports: list[IngestReport | BaseException] = [IngestReport()] * RUNS
    start = threading.Barrier(RUNS)

    def one(i: int) -> None:
        try:
            start.wait()
            reports[i] = pipelines[i].run([folder])
        except BaseException as exc:  # surfaced below, in the test's thread
            reports[i] = exc

    threads = [threading.Thread(target=one, args=(i,)) for i in range(RUNS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    for p, m in zip(pipelines, manifests, strict=True):
        p.close()
        m.close()
    for r in reports:
        if isinstance(r, BaseException):
            raise r
    return [r for r in reports if isinstance(r, IngestReport)]


def _check_store_matches_manifest(services: Any) -> None:
    records = services.manifest.all()
    published = [i for r in records for i in r.chunk_ids]
    assert len(published) == len(set(published))
    assert services.store.count() == len(published)  # no duplicate, orphan or missing chunk
    assert services.manifest.hidden_ids() == []
    assert services.manifest.workers() == []


@pytest.mark.slow  # the full suite (scripts/test.sh) runs it; plain pytest stays fast
def test_runs_at_once_process_each_file_once(services: Any, tmp_path: Path) -> None:
    folder = tmp_path / "docs"
    shutil.copytree(SAMPLES, folder)
    files = sorted(str(p) for p in folder.rglob("*") if p.is_file())

    reports = _run_together(services, folder)
    for report in reports:  # each run answers for every file it was given
        assert sorted(f.path for f in report.files) == files
    processed = Counter(f.path for r in reports for f in r.files if f.status != "unchanged")
    assert sorted(processed) == files
    assert set(processed.values()) == {1}, processed
    assert sum(r.count("added") for r in reports) >= len(files) - 3  # the rest are broken samples, reported
    _check_store_matches_manifest(services)
    single = {r.path: len(r.chunk_ids) for r in services.manifest.all()}

    # Changed files, again with three runs at once: each is updated once, its old chunks deleted.
    changed = sorted(folder.glob("*.md"))[:2] + sorted(folder.glob("*.txt"))[:1]
    assert changed
    for path in changed:
        path.write_text(path.read_text() + "\n\nAmended: the on-call rota changes every Monday at 09:00.\n")
        st = path.stat()
        os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))
    reports = _run_together(services, folder)
    updated = Counter(f.path for r in reports for f in r.files if f.status == "updated")
    assert sorted(updated) == sorted(str(p) for p in changed)
    assert set(updated.values()) == {1}
    assert not [f for r in reports for f in r.files if f.status not in ("updated", "unchanged")
                and services.manifest.get(f.path).status == "ok"]  # type: ignore[union-attr]
    _check_store_matches_manifest(services)
    hits = services.rag.retrieve("When does the on-call rota change?")
    texts = [h.text for h in hits]
    assert len(texts) == len(set(texts))  # no chunk twice
    assert any("on-call rota" in t for t in texts)
    assert {p: n for p, n in single.items() if p not in {str(c) for c in changed}} == \
        {r.path: len(r.chunk_ids) for r in services.manifest.all() if r.path not in {str(c) for c in changed}}
    if isinstance(services.settings.database_for(services.settings.manifest_path), Postgres):
        assert not (services.settings.data_dir / "manifest.sqlite").exists()  # all of it in PostgreSQL


def test_a_document_is_not_removed_while_another_run_ingests_it(services: Any, tmp_path: Path) -> None:
    from ingest.report import FileBusy
    from ingest.runs import RunLease

    folder = tmp_path / "docs"
    folder.mkdir()
    shutil.copy(SAMPLES / "rust-book-installation.md", folder)
    services.ingest_pipeline.run([folder])
    (path,) = [r.path for r in services.manifest.all()]
    other = RunLease(Manifest(services.settings.database_for(services.settings.manifest_path)))
    other.start()
    assert other.claim(path)  # another run is processing the file: it would publish it again
    with pytest.raises(FileBusy, match="being ingested by another run"):
        services.ingest_pipeline.remove(path)
    assert services.manifest.get(path) is not None
    other.stop()
    removed = services.ingest_pipeline.remove(path)
    assert removed is not None
    assert removed.chunks > 0
    assert services.store.count() == 0
