"""Corrupt, encrypted, empty and wrong-extension files: a clear error each, nothing else lost."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = [pytest.mark.e2e]

FIXTURES = ROOT / "tests" / "fixtures" / "broken"
HARD = ROOT / "tests" / "fixtures" / "hard_files"

# file name -> words the per-file error must contain
EXPECTED_ERRORS = {
    "encrypted.pdf": "encrypted",
    "encrypted.xlsx": "encrypted",
    "encrypted.msg": "encrypted",
    "empty.docx": "empty file",
    "empty.txt": "empty file",
    "truncated.pdf": "corrupt pdf",
    "truncated.xlsx": "not a valid .xlsx",
    "corrupt.pptx": "not a valid .pptx",
    "memo-saved-as.docx": "wrong extension",
    "text-saved-as.pdf": "not a pdf",
}


def _make_folder(root: Path) -> Path:
    folder = root / "share"
    folder.mkdir()
    for name in ("encrypted.pdf", "encrypted.xlsx", "encrypted.msg"):
        shutil.copy(FIXTURES / name, folder / name)
    (folder / "empty.docx").write_bytes(b"")
    (folder / "empty.txt").write_bytes(b"")
    (folder / "truncated.pdf").write_bytes((SAMPLES / "fake-memo.pdf").read_bytes()[:3000])
    (folder / "truncated.xlsx").write_bytes((SAMPLES / "vodafone.xlsx").read_bytes()[:2000])
    (folder / "corrupt.pptx").write_bytes(b"PK\x03\x04 not really a presentation")
    shutil.copy(SAMPLES / "fake-memo.pdf", folder / "memo-saved-as.docx")
    (folder / "text-saved-as.pdf").write_text("plain text, not a PDF")
    (folder / "photo.bin").write_bytes(b"\x00\x01binary")
    # The good files next to them must all get in.
    shutil.copy(SAMPLES / "family-day.eml", folder / "family-day.eml")
    shutil.copy(SAMPLES / "fake-memo.pdf", folder / "fake-memo.pdf")
    shutil.copy(SAMPLES / "stanley-cups.csv", folder / "stanley-cups.csv")
    # Real files the parser once failed on whole: a mail with an unreadable attachment, Excel's "Unicode text".
    shutil.copy(HARD / "mime-attach-mp3.eml", folder / "mime-attach-mp3.eml")
    (folder / "cups-utf16.csv").write_bytes((SAMPLES / "stanley-cups.csv").read_text().encode("utf-16"))
    return folder


def _ingest(folder: Path, data: Path, *extra: str) -> tuple[int, dict]:  # type: ignore[type-arg]
    proc = subprocess.run(
        [sys.executable, "-m", "appliance.cli", "ingest", str(folder), "--json", "--data-dir", str(data), *extra],
        capture_output=True, text=True, timeout=600, cwd=ROOT,
    )
    assert proc.stdout.strip(), proc.stderr
    return proc.returncode, json.loads(proc.stdout)


def test_each_broken_file_gets_a_clear_reason_and_the_rest_is_ingested(tmp_path: Path) -> None:
    folder = _make_folder(tmp_path)
    code, report = _ingest(folder, tmp_path / "data")
    assert code == 1  # some files failed
    by_name = {Path(f["path"]).name: f for f in report["files"]}
    for name, words in EXPECTED_ERRORS.items():
        entry = by_name[name]
        assert entry["status"] == "failed", entry
        assert words in entry["error"].lower(), entry
        assert "\n" not in entry["error"]  # one line
    assert by_name["photo.bin"]["status"] == "skipped"
    assert "unsupported" in by_name["photo.bin"]["error"]
    for good in ("family-day.eml", "fake-memo.pdf", "stanley-cups.csv", "mime-attach-mp3.eml", "cups-utf16.csv"):
        assert by_name[good]["status"] == "added", by_name[good]
        assert by_name[good]["chunks"] >= 1
    assert by_name["mime-attach-mp3.eml"]["notes"] == [
        "attachment sample-3s.mp3 skipped: audio and video are not transcribed"]
    assert report["added"] == 5
    assert report["failed"] == len(EXPECTED_ERRORS)

    # Nothing is retried or lost on the next run; fixing a file brings it in.
    code, again = _ingest(folder, tmp_path / "data")
    assert code == 0
    assert again["unchanged"] == len(again["files"])
    shutil.copy(SAMPLES / "fake-memo.pdf", folder / "truncated.pdf")
    code, fixed = _ingest(folder, tmp_path / "data")
    assert code == 0
    assert {Path(f["path"]).name: f["status"] for f in fixed["files"]}["truncated.pdf"] == "added"


def test_missing_path_is_reported_not_fatal(tmp_path: Path) -> None:
    good = tmp_path / "docs"
    good.mkdir()
    shutil.copy(SAMPLES / "family-day.eml", good)
    code, report = _ingest(good, tmp_path / "data", str(tmp_path / "does-not-exist"))
    assert code == 1
    statuses = {Path(f["path"]).name: (f["status"], f["error"]) for f in report["files"]}
    assert statuses["does-not-exist"] == ("failed", "no such file or folder")
    assert statuses["family-day.eml"][0] == "added"
