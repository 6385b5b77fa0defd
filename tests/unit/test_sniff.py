"""The one file-type sniffer: uploads and the parser refuse a file for the same reason."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from ingest.parse import ParseError, parse_file
from ingest.sniff import mismatch, modern_twin, problem
from tests.conftest import ROOT, SAMPLES

BROKEN = ROOT / "tests" / "fixtures" / "broken"


def _write(folder: Path, name: str, content: bytes) -> Path:
    path = folder / name
    path.write_bytes(content)
    return path


def test_every_sample_fits_its_extension() -> None:
    for path in SAMPLES.iterdir():
        assert mismatch(path) is None, path.name
    for name in ("encrypted.pdf", "encrypted.msg"):  # encrypted, but what they say they are: the parser tells
        assert mismatch(BROKEN / name) is None, name


def test_the_parser_refuses_with_the_reason_an_upload_gets(tmp_path: Path) -> None:
    cases = {
        "empty.docx": (b"", "an empty file"),
        "empty.txt": (b"", "an empty file"),
        "text-saved-as.pdf": (b"plain text, not a PDF", "not a PDF: it is plain text (wrong extension)"),
        "memo-saved-as.docx": ((SAMPLES / "fake-memo.pdf").read_bytes(),
                               "not a .docx document: it is a PDF (wrong extension)"),
        "truncated.xlsx": ((SAMPLES / "vodafone.xlsx").read_bytes()[:2000],
                           "not a valid .xlsx document: the zip archive is damaged or truncated"),
        "corrupt.pptx": (b"PK\x03\x04 not really a presentation",
                         "not a valid .pptx document: the zip archive is damaged or truncated"),
        "slides.pptx": ((SAMPLES / "simple.docx").read_bytes(), "not a .pptx document: it is a .docx document"),
        "encrypted.xlsx": ((BROKEN / "encrypted.xlsx").read_bytes(), "an encrypted (password-protected) .xlsx"),
        "legacy.xlsx": ((SAMPLES / "tests-example.xls").read_bytes(), "it is an MS Office 97-2003 file"),
        "memo.doc": ((SAMPLES / "fake-memo.pdf").read_bytes(), "not an MS Office 97-2003 file: it is a PDF"),
        "mail.msg": (b"From: a@b\n\nhello", "not an Outlook message: it is plain text"),
        "notes.txt": (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not a text file: it is a PNG image"),
        "tool.csv": (b"MZ\x90\x00" + b"\x00" * 64, "not a text file: it is a Windows executable"),
        "blob.pdf": (b"\x00\x01\x02\xfe\xff" * 8, "not a PDF: it is something else (wrong extension or corrupt)"),
    }
    for name, (content, reason) in cases.items():
        path = _write(tmp_path, name, content)
        with pytest.raises(ParseError) as caught:
            parse_file(path)
        assert reason in str(caught.value), name
        assert mismatch(path) == f"{name} is {caught.value}"


def test_a_zip_that_is_no_document_is_named_so(tmp_path: Path) -> None:
    zipped = tmp_path / "notes.docx"
    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("payload.bin", b"x")
    assert problem(zipped, ".docx") == "a zip archive, not a .docx document"
    assert problem(zipped, ".pdf") == "not a PDF: it is a zip archive"


def test_a_legacy_name_holding_the_modern_format_fits_and_says_which(tmp_path: Path) -> None:
    doc = tmp_path / "memo.doc"
    shutil.copy(SAMPLES / "simple.docx", doc)
    assert modern_twin(doc, ".doc") == ".docx"
    assert mismatch(doc) is None
    xls = tmp_path / "sheet.xls"
    shutil.copy(SAMPLES / "simple.docx", xls)  # a .docx named .xls is no spreadsheet
    assert modern_twin(xls, ".xls") is None
    assert mismatch(xls) == "sheet.xls is not an MS Office 97-2003 file: it is a .docx document (wrong extension)"
    assert modern_twin(SAMPLES / "tests-example.xls", ".xls") is None


def test_text_with_nuls_is_text_when_the_rest_reads_as_utf8(tmp_path: Path) -> None:
    log = _write(tmp_path, "app.log", b"started\n" + b"\x00" * 4096 + "résumé restarted\n".encode())
    assert mismatch(log) is None
    utf16 = _write(tmp_path, "notes.txt", "no byte-order mark, just UTF-16".encode("utf-16-le"))
    assert mismatch(utf16) is None
    cut = _write(tmp_path, "cut.log", b"\x00" + "é".encode() * 5000)  # the sniffed head ends mid-character
    assert mismatch(cut) is None
    bom = _write(tmp_path, "bom.txt", "with a mark".encode("utf-16"))
    assert mismatch(bom) is None
    memo = _write(tmp_path, "mz.txt", b"MZ is the state code we ship to\n")  # text may start like an executable
    assert mismatch(memo) is None
    binary = _write(tmp_path, "data.csv", bytes(range(256)) * 4)
    assert mismatch(binary) == "data.csv is not a text file: it is something else (wrong extension or corrupt)"


def test_a_pdf_header_may_follow_a_little_junk(tmp_path: Path) -> None:
    pdf = _write(tmp_path, "late.pdf", b"\r\n\r\n" + (SAMPLES / "fake-memo.pdf").read_bytes())
    assert mismatch(pdf) is None
    late = _write(tmp_path, "too-late.pdf", b" " * 2000 + b"%PDF-1.4\n")
    assert mismatch(late) is not None
