"""Does a file's content match its extension? Checked on uploads, before anything is stored.

A renamed executable or archive is refused with the type it really is; the parsers never see it.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

ZIP_TYPES = {".docx": "word/", ".xlsx": "xl/", ".pptx": "ppt/", ".odt": "mimetype", ".epub": "mimetype"}
OLE_TYPES = {".doc", ".xls", ".ppt", ".msg"}  # Compound File Binary (MS Office 97-2003, Outlook)
OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
TEXT_TYPES = {".csv", ".tsv", ".html", ".htm", ".xhtml", ".md", ".markdown", ".txt", ".text", ".log", ".eml",
              ".rst", ".org", ".xml", ".rtf"}
# What a file that lies about its type often is: named so the error says it.
KNOWN = [(b"MZ", "a Windows executable"), (b"\x7fELF", "a Linux executable"), (b"PK\x03\x04", "a zip archive"),
         (b"\x1f\x8b", "a gzip archive"), (b"Rar!", "a RAR archive"), (b"7z\xbc\xaf", "a 7-Zip archive"),
         (b"%PDF", "a PDF"), (OLE_MAGIC, "an MS Office 97-2003 file"), (b"\x89PNG", "a PNG image"),
         (b"\xff\xd8\xff", "a JPEG image"), (b"#!", "a script")]


def _what(head: bytes) -> str:
    return next((name for magic, name in KNOWN if head.startswith(magic)), "something else")


def mismatch(path: Path, name: str | None = None) -> str | None:
    """None when the content fits the extension; else the reason, e.g. 'report.pdf is a Windows executable'."""
    suffix = Path(name or path.name).suffix.lower()
    label = name or path.name
    with path.open("rb") as f:
        head = f.read(8192)
    if suffix == ".pdf":
        # The header may follow a little junk (the PDF spec allows it within the first 1024 bytes).
        return None if b"%PDF-" in head[:1024] else f"{label} is not a PDF: it is {_what(head)}"
    if suffix in ZIP_TYPES:
        if not zipfile.is_zipfile(path):
            return f"{label} is not a {suffix} document: it is {_what(head)}"
        marker = ZIP_TYPES[suffix]
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError, ValueError):
            return f"{label} is a damaged zip archive"
        if not any(n.startswith(marker) for n in names):
            return f"{label} is a zip archive, not a {suffix} document"
        return None
    if suffix in OLE_TYPES:
        return None if head.startswith(OLE_MAGIC) else f"{label} is not an MS Office 97-2003 file: it is {_what(head)}"
    if suffix in TEXT_TYPES:
        if b"\x00" in head and not head.startswith((b"\xff\xfe", b"\xfe\xff")):  # UTF-16 text has NULs
            return f"{label} is not a text file: it is {_what(head)}"
        if any(head.startswith(m) for m, _ in KNOWN if m not in (b"#!",)):
            return f"{label} is not a text file: it is {_what(head)}"
        return None
    return None
