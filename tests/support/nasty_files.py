"""Pathological files built by the tests: none of them may stop an ingest run."""

from __future__ import annotations

import zipfile
import zlib
from pathlib import Path

MB = 1024 * 1024


def pdf_with_content(path: Path, content: bytes, *, compress: bool = False) -> Path:
    """A one-page PDF whose page shows `content` (a content stream), written by hand."""
    stream = zlib.compress(content, 1) if compress else content
    filters = b"/Filter /FlateDecode " if compress else b""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents 4 0 R "
        b"/Resources << /Font << /F1 5 0 R >> >> >>",
        b"<< " + filters + b"/Length " + str(len(stream)).encode() + b" >>\nstream\n" + stream + b"\nendstream",
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
    ]
    return write_pdf(path, objects)


def write_pdf(path: Path, objects: list[bytes]) -> Path:
    """A PDF of these objects (numbered from 1; the first is the catalog), with its cross-reference table."""
    out = bytearray(b"%PDF-1.7\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n".encode() + body + b"\nendobj\n"
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += b"".join(f"{o:010d} 00000 n \n".encode() for o in offsets)
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    path.write_bytes(bytes(out))
    return path


def slow_pdf(path: Path, operations: int = 60_000) -> Path:
    """A page of tens of thousands of scattered text operators: text extraction grows with their square
    (measured with pypdfium2: 20,000 take 2 s, 80,000 take a minute)."""
    ops = b"".join(b"BT /F1 4 Tf %d %d Td (w%d) Tj ET\n" % (i % 600, (i // 600) % 780, i) for i in range(operations))
    return pdf_with_content(path, ops)


def flate_bomb_pdf(path: Path, unpacked_mb: int = 1024) -> Path:
    """A page whose compressed content stream inflates to `unpacked_mb` MB (about 1 MB on disk)."""
    return pdf_with_content(path, b"BT /F1 12 Tf 72 720 Td (bomb) Tj ET\n" + b" " * (unpacked_mb * MB), compress=True)


def zip_bomb_docx(path: Path, unpacked_mb: int = 4096) -> Path:
    """A DOCX whose word/document.xml declares (and would inflate to) `unpacked_mb` MB of zeros."""
    chunk = b"\0" * MB
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=9) as z:
        z.writestr("[Content_Types].xml", '<?xml version="1.0"?><Types xmlns="http://schemas.openxmlformats.org/'
                   'package/2006/content-types"/>')
        with z.open("word/document.xml", "w", force_zip64=True) as member:
            for _ in range(unpacked_mb):
                member.write(chunk)
    return path


def sparse_file(path: Path, size: int) -> Path:
    """A file of `size` bytes that takes no disk space (a hole)."""
    with path.open("wb") as fh:
        fh.truncate(size)
    return path
