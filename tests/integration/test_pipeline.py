"""Incremental ingestion with the real parser, embedder and store: update, prune, dry run, crash recovery."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import make_services


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "leave.txt").write_text("Employees accrue 25 days of paid annual leave per year.\n\nCarry-over is 5 days.")
    (docs / "vpn.md").write_text("# VPN\n\nReset your VPN token at the IT service desk on floor 3.\n")
    return docs


@pytest.fixture
def services(tmp_path: Path) -> Any:
    s = make_services(tmp_path / "data")
    yield s
    s.close()


def _texts(services: Any, question: str) -> list[str]:
    return [s.text for s in services.rag.retrieve(question)]


def _bump(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))  # a visibly newer mtime


def test_a_changed_file_replaces_its_chunks(services: Any, folder: Path) -> None:
    first = services.ingest_pipeline.run([folder])
    assert first.count("added") == 2
    count = services.store.count()
    _bump(folder / "leave.txt", "Employees accrue 30 days of paid annual leave per year.")
    second = services.ingest_pipeline.run([folder])
    assert {Path(f.path).name: f.status for f in second.files} == {"leave.txt": "updated", "vpn.md": "unchanged"}
    texts = _texts(services, "how many days of annual leave?")
    assert any("30 days" in t for t in texts)
    assert not any("25 days" in t for t in texts)  # the old version is gone, not duplicated
    assert services.store.count() == count  # one chunk per file before and after


def test_same_content_new_mtime_is_unchanged_without_reparsing(services: Any, folder: Path) -> None:
    services.ingest_pipeline.run([folder])
    path = folder / "vpn.md"
    _bump(path, path.read_text())
    report = services.ingest_pipeline.run([folder])
    assert [f.status for f in report.files] == ["unchanged", "unchanged"]


def test_prune_removes_deleted_files_and_whole_missing_folders(services: Any, folder: Path) -> None:
    services.ingest_pipeline.run([folder])
    (folder / "vpn.md").unlink()
    kept = services.ingest_pipeline.run([folder])  # without --prune nothing is removed
    assert kept.count("removed") == 0
    assert any("VPN" in t for t in _texts(services, "VPN token"))
    pruned = services.ingest_pipeline.run([folder], prune=True)
    assert [(Path(f.path).name, f.status) for f in pruned.files if f.status == "removed"] == [("vpn.md", "removed")]
    assert not any("VPN" in t for t in _texts(services, "VPN token"))
    (folder / "leave.txt").unlink()
    folder.rmdir()
    gone = services.ingest_pipeline.run([folder], prune=True)
    assert gone.count("removed") == 1
    assert services.store.count() == 0
    assert services.manifest.all() == []


def test_dry_run_changes_nothing(services: Any, folder: Path) -> None:
    report = services.ingest_pipeline.run([folder], dry_run=True)
    assert report.count("added") == 2
    assert services.store.count() == 0
    assert services.manifest.all() == []


class _DiesAfterUpsert:
    """Wraps the real store and fails once right after the chunks are written, like a killed run."""

    def __init__(self, store: Any) -> None:
        self.store = store
        self.armed = True

    def upsert(self, points: list[Any]) -> None:
        self.store.upsert(points)
        if self.armed:
            self.armed = False
            raise KeyboardInterrupt("killed")

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


@pytest.mark.slow  # the full suite (scripts/test.sh) runs it; plain pytest stays fast
def test_a_run_killed_mid_file_leaves_no_orphan_chunks(services: Any, folder: Path) -> None:
    from ingest.pipeline import IngestPipeline

    services.ingest_pipeline.run([folder])
    clean_count = services.store.count()
    _bump(folder / "leave.txt", "Employees accrue 30 days of paid annual leave per year.")
    pipeline = services.ingest_pipeline
    dying = IngestPipeline(services.settings.ingest, services.manifest, _DiesAfterUpsert(services.store),
                           services.embedding)
    try:
        with pytest.raises(KeyboardInterrupt):
            dying.run([folder / "leave.txt"])
    finally:
        dying.close()
    # Killed between writing the new chunks and publishing them: both versions are in the store,
    # the row still names the old one, and the new chunks are hidden from every search.
    record = services.manifest.get(str(folder / "leave.txt"))
    assert record.status == "ok"
    assert services.store.count() > clean_count
    assert services.manifest.hidden_ids()
    texts = _texts(services, "how many days of annual leave?")
    assert any("25 days" in t for t in texts)
    assert not any("30 days" in t for t in texts)
    _bump(folder / "leave.txt", "Employees accrue 35 days of paid annual leave per year.")  # changed again
    report = pipeline.run([folder])
    assert {Path(f.path).name: f.status for f in report.files}["leave.txt"] == "updated"
    texts = _texts(services, "how many days of annual leave?")
    assert any("35 days" in t for t in texts)
    assert not any("30 days" in t or "25 days" in t for t in texts)
    assert services.store.count() == clean_count  # nothing orphaned, nothing duplicated
    assert services.manifest.hidden_ids() == []


def test_a_folder_holding_the_data_directory_does_not_ingest_the_store(folder: Path) -> None:
    services = make_services(folder / "data")  # an administrator keeps the data inside the shared folder
    try:
        for _ in range(2):
            report = services.ingest_pipeline.run([folder])
            assert sorted(Path(f.path).name for f in report.files) == ["leave.txt", "vpn.md"]
    finally:
        services.close()


@pytest.mark.slow  # the full suite (scripts/test.sh) runs it; plain pytest stays fast
def test_files_processed_with_other_settings_are_processed_again(tmp_path: Path, folder: Path) -> None:
    import sqlite3

    data = tmp_path / "data"
    first = make_services(data)
    try:
        assert first.ingest_pipeline.run([folder]).count("added") == 2
        assert first.ingest_pipeline.run([folder]).count("unchanged") == 2
    finally:
        first.close()
    smaller = make_services(data, ingest={"chunk_tokens": 64, "default_groups": ["hr"]})
    try:
        report = smaller.ingest_pipeline.run([folder])
        assert report.count("updated") == 2  # not parsed as "unchanged" with the old chunks and groups
        assert smaller.ingest_pipeline.run([folder]).count("unchanged") == 2
        assert {tuple(r.acl) for r in smaller.manifest.all()} == {("hr",)}
        chunks = smaller.store.count()
    finally:
        smaller.close()
    # A manifest from before rows recorded their settings: its rows count as processed otherwise.
    db = sqlite3.connect(data / "manifest.sqlite")
    db.execute("UPDATE files SET config = NULL")
    db.commit()
    db.close()
    again = make_services(data, ingest={"chunk_tokens": 64, "default_groups": ["hr"]})
    try:
        assert again.ingest_pipeline.run([folder]).count("updated") == 2
        assert again.store.count() == chunks  # replaced, not duplicated
    finally:
        again.close()


def test_a_failed_file_is_tried_again_once_by_a_new_version_not_at_every_run(tmp_path: Path, folder: Path) -> None:
    """A version whose parsers read more (CHUNKING_VERSION) retries the files that failed: no --retry-failed."""
    import sqlite3

    (folder / "blank.txt").write_text("   \n\n  \n")  # no text: fails
    data = tmp_path / "data"
    first = make_services(data)
    try:
        assert first.ingest_pipeline.run([folder]).count("failed") == 1
        assert first.ingest_pipeline.run([folder]).count("unchanged") == 3  # the same version: not again
    finally:
        first.close()
    db = sqlite3.connect(data / "manifest.sqlite")  # as an older version recorded the failure
    db.execute("UPDATE files SET config = 'an older version' WHERE status = 'failed'")
    db.commit()
    db.close()
    upgraded = make_services(data)
    try:
        report = upgraded.ingest_pipeline.run([folder])
        assert (report.count("failed"), report.count("unchanged")) == (1, 2)  # tried again; the others kept
        assert upgraded.ingest_pipeline.run([folder]).count("unchanged") == 3  # once
    finally:
        upgraded.close()


def test_a_manifest_without_the_config_column_is_upgraded_in_place(tmp_path: Path) -> None:
    import sqlite3

    from ingest.manifest import Manifest

    path = tmp_path / "manifest.sqlite"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE files (path TEXT PRIMARY KEY, size INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, "
               "sha256 TEXT, status TEXT NOT NULL, error TEXT, parser TEXT, pages INTEGER, chunk_ids TEXT NOT NULL "
               "DEFAULT '[]', acl TEXT NOT NULL DEFAULT '[]', notes TEXT NOT NULL DEFAULT '[]', "
               "ingested_at REAL NOT NULL)")
    db.execute("INSERT INTO files VALUES ('/docs/a.txt', 3, 1, 'abc', 'ok', NULL, 'text', NULL, '[\"id1\"]', "
               "'[\"everyone\"]', '[]', 1.0)")
    db.commit()
    db.close()
    manifest = Manifest(path)
    try:
        rec = manifest.get("/docs/a.txt")
        assert rec is not None
        assert rec.chunk_ids == ["id1"]
        assert rec.config is None
    finally:
        manifest.close()


class _CountingEmbedding:
    """The real embedding model, counting the texts it is asked to embed."""

    def __init__(self, embedding: Any) -> None:
        self.embedding = embedding
        self.texts = 0

    def embed(self, texts: list[str]) -> Any:
        self.texts += len(texts)
        return self.embedding.embed(texts)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.embedding, name)


def test_moved_and_copied_files_are_stored_per_path_but_embedded_once(services: Any, folder: Path) -> None:
    from ingest.pipeline import IngestPipeline

    counting = _CountingEmbedding(services.embedding)
    pipeline = IngestPipeline(services.settings.ingest, services.manifest, services.store, counting)
    try:
        pipeline.run([folder])
        embedded = counting.texts
        assert embedded >= 2
        (folder / "copy").mkdir()
        shutil.copy2(folder / "vpn.md", folder / "copy" / "vpn-copy.md")
        (folder / "leave.txt").rename(folder / "leave-policy.txt")  # a move
        report = pipeline.run([folder], prune=True)
        statuses = sorted((Path(f.path).name, f.status) for f in report.files)
        assert statuses == [("leave-policy.txt", "added"), ("leave.txt", "removed"), ("vpn-copy.md", "added"),
                            ("vpn.md", "unchanged")]
        assert counting.texts == embedded  # both new paths took the published vectors: nothing embedded again
        rows = {Path(r.path).name: r for r in services.manifest.all()}
        assert sorted(rows) == ["leave-policy.txt", "vpn-copy.md", "vpn.md"]
        assert set(rows["vpn.md"].chunk_ids).isdisjoint(rows["vpn-copy.md"].chunk_ids)
        found = services.rag.retrieve("how many days of annual leave?")
        assert found[0].path == str(folder / "leave-policy.txt")  # re-pathed: cited under its new name
        vpn_paths = {s.path for s in services.rag.retrieve("reset the VPN token")}
        assert {str(folder / "vpn.md"), str(folder / "copy" / "vpn-copy.md")} <= vpn_paths
    finally:
        pipeline.close()


class _ChecksReadersDuringWrites:
    """The real store; at each write of the updated file, asks what a reader sees of it."""

    def __init__(self, services: Any) -> None:
        self.store = services.store
        self.services = services
        self.seen: list[tuple[str, list[str]]] = []

    def _look(self, when: str) -> None:
        texts = [s.text for s in self.services.rag.retrieve("how many days of annual leave?")
                 if s.path.endswith("leave.txt")]
        self.seen.append((when, texts))

    def upsert(self, points: list[Any]) -> None:
        self.store.upsert(points)
        self._look("new chunks written, not published")

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._look("published, old chunks not yet deleted")
        self.store.delete(ids)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_a_reader_sees_the_old_or_the_new_version_never_both_or_neither(services: Any, folder: Path) -> None:
    from ingest.pipeline import IngestPipeline

    long_old = "\n\n".join(f"Rule {i}: employees accrue 25 days of paid annual leave per year." for i in range(80))
    long_new = "\n\n".join(f"Rule {i}: employees accrue 30 days of paid annual leave per year." for i in range(80))
    _bump(folder / "leave.txt", long_old)
    services.ingest_pipeline.run([folder])
    _bump(folder / "leave.txt", long_new)
    watching = _ChecksReadersDuringWrites(services)
    pipeline = IngestPipeline(services.settings.ingest, services.manifest, watching, services.embedding)
    try:
        report = pipeline.run([folder / "leave.txt"])
    finally:
        pipeline.close()
    assert report.files[0].status == "updated"
    assert {when for when, _ in watching.seen} == {"new chunks written, not published",
                                                   "published, old chunks not yet deleted"}
    for when, texts in watching.seen:
        assert texts, f"{when}: the file vanished from the results"
        versions = {"old" if "25 days" in t else "new" if "30 days" in t else "?" for t in texts}
        assert versions == ({"old"} if when.startswith("new chunks") else {"new"}), (when, texts)


def test_a_file_that_changes_while_it_is_read_is_read_again(services: Any, folder: Path) -> None:
    from concurrent.futures import Future

    from ingest.pipeline import CHANGE_RETRIES, _Task
    from ingest.workers import ParsedChunks

    path = folder / "leave.txt"
    pipeline = services.ingest_pipeline
    task = _Task(path, str(path), path.stat(), "sha-before", None, "added")
    for attempt in range(CHANGE_RETRIES + 1):
        _bump(path, f"Employees accrue {26 + attempt} days of paid annual leave per year.")  # written meanwhile
        parsed: Future[ParsedChunks] = Future()
        parsed.set_result(ParsedChunks(chunks=[], pages=None, notes=[], parser="text"))
        outcome = pipeline._parsed(task, parsed)
        if attempt < CHANGE_RETRIES:
            assert outcome is None  # read again, with the new size, mtime and hash
            assert task.tries == attempt + 1
            assert task.sha != "sha-before"
    assert outcome.status == "failed"
    assert "kept changing while being read" in outcome.error


def test_a_forced_re_ingest_replaces_the_chunks_of_an_unchanged_file(services: Any, folder: Path) -> None:
    services.ingest_pipeline.run([folder])
    path = str(folder / "leave.txt")
    before = services.manifest.get(path).chunk_ids
    count = services.store.count()
    report = services.ingest_pipeline.run([folder / "leave.txt"], force=True)
    assert [(Path(f.path).name, f.status) for f in report.files] == [("leave.txt", "updated")]
    after = services.manifest.get(path).chunk_ids
    assert len(after) == len(before)
    assert not set(after) & set(before)  # new points: the published ones were never overwritten in place
    services.ingest_pipeline.run([folder])  # deletes the superseded chunks (a second after publishing) ...
    services.ingest_pipeline.close()
    assert services.store.count() == count  # ... so one version is stored, not two
    texts = _texts(services, "how many days of annual leave?")
    assert sum("25 days" in t for t in texts) == 1
    assert services.ingest_pipeline.run([folder]).count("unchanged") == 2  # and it is not redone


def test_parse_workers_are_no_more_than_the_files(services: Any, folder: Path, tmp_path: Path) -> None:
    """One big PDF needs one parse worker: an idle second one held ~350 MB of parsers for nothing.
    A later run with more files gets the workers the settings give."""
    pipeline = services.ingest_pipeline
    assert services.settings.ingest.workers == 2
    one = tmp_path / "one"
    one.mkdir()
    (one / "memo.txt").write_text("The cafeteria serves lunch from 11:30 to 14:00 on weekdays.")
    assert pipeline.run([one]).count("added") == 1
    assert pipeline._pool is not None
    assert pipeline._pool.workers == 1
    assert pipeline.run([folder]).count("added") == 2
    assert pipeline._pool.workers == 2
    _bump(folder / "vpn.md", "# VPN\n\nReset your VPN token at the service desk on floor 4.\n")
    assert pipeline.run([folder / "vpn.md"]).count("updated") == 1
    assert pipeline._pool.workers == 2  # a pool large enough is kept, not started again
