"""Ingest real folders from ../shared/corpus (present on CI, absent from a user's clone)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tests.conftest import CORPUS, make_services

pytestmark = [
    pytest.mark.e2e,
    pytest.mark.slow,
    pytest.mark.skipif(not CORPUS.is_dir(), reason="../shared/corpus is not here (it is on CI)"),
]

# The heavy files are for benchmarks; everything else in example-docs runs in the test.
HEAVY = {"DA-619p.pdf", "pdf2image-memory-error-test-400p.pdf", "handbook-872p.docx", "example-10k.html",
         "book-war-and-peace-1225p.txt", "fake-html-pre.htm"}


def _copy_light(src: Path, dst: Path) -> int:
    n = 0
    for path in src.rglob("*"):
        if path.is_file() and path.name not in HEAVY:
            target = dst / path.relative_to(src)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, target)
            n += 1
    return n


def test_example_docs_every_file_is_ingested_or_explained(tmp_path: Path) -> None:
    docs = tmp_path / "example-docs"
    total = _copy_light(CORPUS / "unstructured-example-docs", docs)
    services = make_services(tmp_path / "data")
    try:
        report = services.ingest_pipeline.run([docs])
        assert len(report.files) == total
        for f in report.files:
            assert f.status in ("added", "failed", "skipped"), f
            if f.status == "added":
                assert f.chunks > 0, f
            else:
                assert f.error, f  # a reason for every file not ingested
                assert "\n" not in f.error
        assert report.count("added") > total * 0.6
        assert services.store.count() == report.chunks

        again = services.ingest_pipeline.run([docs])
        assert [f.status for f in again.files] == ["unchanged"] * total
        assert services.store.count() == report.chunks
    finally:
        services.close()


def test_email_and_office_folders(tmp_path: Path) -> None:
    services = make_services(tmp_path / "data")
    try:
        for folder in ("cpython-email", "apache-poi"):
            report = services.ingest_pipeline.run([CORPUS / folder])
            assert report.count("added") > len(report.files) / 2, folder
            assert all(f.error for f in report.files if f.status in ("failed", "skipped"))
    finally:
        services.close()
