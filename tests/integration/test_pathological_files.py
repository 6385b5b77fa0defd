"""Files that attack the parser: each is reported with its reason, none stops the run or takes the machine."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, make_services
from tests.support.nasty_files import flate_bomb_pdf, slow_pdf, sparse_file, zip_bomb_docx

pytestmark = pytest.mark.slow


def test_pathological_files_are_reported_and_the_run_goes_on(tmp_path: Path) -> None:
    docs = tmp_path / "share"
    docs.mkdir()
    shutil.copy(SAMPLES / "fake-memo.pdf", docs / "memo.pdf")
    shutil.copy(SAMPLES / "simple.docx", docs / "simple.docx")
    zip_bomb_docx(docs / "bomb.docx", unpacked_mb=200)
    slow_pdf(docs / "spinning.pdf")  # about half a minute of text extraction, stopped after 3 s
    flate_bomb_pdf(docs / "inflating.pdf", unpacked_mb=600)
    sparse_file(docs / "huge.txt", 2 * 1024**3)
    vanishing = docs / "a-vanishing.txt"
    vanishing.write_text("A paragraph that is here when the run starts and gone soon after.\n\n" * 20_000)

    def delete_soon(total: int) -> Any:
        # Called once the files are discovered: the file goes while the run reads it.
        threading.Timer(0.2, vanishing.unlink).start()
        return _Quiet()

    services = make_services(tmp_path / "data", ingest={
        "file_timeout_s": 3, "file_memory_mb": 512, "max_unpacked_mb": 64})
    try:
        report = services.ingest_pipeline.run([docs], progress=delete_soon)
        by_name = {Path(f.path).name: f for f in report.files}
        assert by_name["memo.pdf"].status == "added"
        assert by_name["simple.docx"].status == "added", by_name["simple.docx"]
        assert by_name["bomb.docx"].status == "failed"
        assert "zip bomb" in (by_name["bomb.docx"].error or "")
        assert by_name["spinning.pdf"].status == "failed"
        assert "ingest.file_timeout_s (3 s)" in (by_name["spinning.pdf"].error or "")
        assert by_name["inflating.pdf"].status == "failed"
        assert "ingest.file_memory_mb (512 MB)" in (by_name["inflating.pdf"].error or "")
        assert by_name["huge.txt"].status == "skipped"
        assert "ingest.max_file_mb" in (by_name["huge.txt"].error or "")
        gone = by_name["a-vanishing.txt"]
        assert gone.status == "failed", gone
        assert any(w in (gone.error or "") for w in ("deleted", "No such file", "cannot read")), gone.error
        paths = {r.path for r in services.manifest.all() if r.status == "ok"}
        assert paths == {str(docs / "memo.pdf"), str(docs / "simple.docx")}
        assert services.manifest.hidden_ids() == []
        # The failures are remembered with their reasons; the next run does not parse them again.
        again = services.ingest_pipeline.run([docs])
        assert {Path(f.path).name: f.status for f in again.files if f.status != "unchanged"} == {}
    finally:
        services.close()


class _Quiet:
    def update(self, n: int) -> None:
        pass

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass


def test_archive_check_refuses_bombs_and_passes_real_office_files(tmp_path: Path) -> None:
    from ingest.parse import ParseError
    from ingest.workers import check_archive

    check_archive(SAMPLES / "simple.docx", 1)
    check_archive(SAMPLES / "vodafone.xlsx", 1)
    check_archive(SAMPLES / "fake-memo.pdf", 1)  # not a zip: nothing to check
    with pytest.raises(ParseError, match="zip bomb"):
        check_archive(zip_bomb_docx(tmp_path / "b.docx", unpacked_mb=20), 10)
