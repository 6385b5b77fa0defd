"""Incremental ingestion with the real parser, embedder and store: update, prune, dry run, crash recovery."""

from __future__ import annotations

import os
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


def test_a_run_killed_mid_file_leaves_no_orphan_chunks(services: Any, folder: Path) -> None:
    from ingest.pipeline import IngestPipeline

    services.ingest_pipeline.run([folder])
    clean_count = services.store.count()
    _bump(folder / "leave.txt", "Employees accrue 30 days of paid annual leave per year.")
    pipeline = services.ingest_pipeline
    dying = IngestPipeline(services.settings.ingest, services.manifest, _DiesAfterUpsert(services.store),
                           services.embedding, pipeline._chunker)
    with pytest.raises(KeyboardInterrupt):
        dying.run([folder / "leave.txt"])
    # Killed between writing the new chunks and deleting the old: both versions are in the store now,
    # and the manifest row is pending with every one of their ids.
    record = services.manifest.get(str(folder / "leave.txt"))
    assert record.status == "pending"
    _bump(folder / "leave.txt", "Employees accrue 35 days of paid annual leave per year.")  # changed again
    report = pipeline.run([folder])
    assert {Path(f.path).name: f.status for f in report.files}["leave.txt"] == "added"
    texts = _texts(services, "how many days of annual leave?")
    assert any("35 days" in t for t in texts)
    assert not any("30 days" in t or "25 days" in t for t in texts)
    assert services.store.count() == clean_count  # nothing orphaned, nothing duplicated


def test_a_folder_holding_the_data_directory_does_not_ingest_the_store(folder: Path) -> None:
    services = make_services(folder / "data")  # an administrator keeps the data inside the shared folder
    try:
        for _ in range(2):
            report = services.ingest_pipeline.run([folder])
            assert sorted(Path(f.path).name for f in report.files) == ["leave.txt", "vpn.md"]
    finally:
        services.close()
