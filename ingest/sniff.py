"""What a file's content really is, and whether it fits its extension: the one sniffer for uploads and the parser.

Uploads are refused with `mismatch` before anything is stored, so a renamed executable or archive never
reaches a parser; the parser raises `problem` for files found on disk, so an ingest report names the same
reason. A .doc/.xls/.ppt that holds the modern format (a "Save as" rename) fits: `modern_twin` says which.

A small magic table rather than a library: measured on samples/ and the broken-file fixtures, unstructured's
`detect_filetype` falls back to the extension (an MZ executable named .pdf is "PDF", ELF named .txt is "TXT",
an encrypted .xlsx is "XLSX") and costs 0.9 s to import; `filetype` misses .msg, ELF stubs, text and damaged
zips; libmagic (python-magic) calls a truncated .xlsx "Microsoft Excel 2007+" and words things per host.
"""

from __future__ import annotations

import mmap
import zipfile
from pathlib import Path

# The modern Office/OpenDocument formats: a zip archive with this member (name or folder).
ZIP_TYPES = {".docx": "word/", ".xlsx": "xl/", ".pptx": "ppt/", ".odt": "mimetype", ".epub": "mimetype"}
# Macro-enabled, template and slide-show variants: the same zip as the plain format (ingest.office_copies).
OFFICE_VARIANTS = {".docm": ".docx", ".dotx": ".docx", ".dotm": ".docx",
                   ".pptm": ".pptx", ".ppsx": ".pptx", ".ppsm": ".pptx", ".potx": ".pptx", ".potm": ".pptx",
                   ".xlsm": ".xlsx", ".xltx": ".xlsx", ".xltm": ".xlsx"}
MACRO_ENABLED = frozenset({".docm", ".dotm", ".pptm", ".ppsm", ".potm", ".xlsm", ".xltm"})  # ingested, not uploaded
OLE_TYPES = {".doc", ".xls", ".ppt", ".msg"}  # Compound File Binary (MS Office 97-2003, Outlook)
OLE_MAGIC = bytes.fromhex("d0cf11e0a1b11ae1")
TWINS = {".doc": ".docx", ".xls": ".xlsx", ".ppt": ".pptx"}  # legacy extension -> the modern format
TEXT_TYPES = {".csv", ".tsv", ".html", ".htm", ".xhtml", ".md", ".markdown", ".txt", ".text", ".log", ".eml",
              ".rst", ".org", ".xml", ".rtf"}
# What a file that lies about its type often is: named so the error says it. True: a document the appliance
# parses under its right extension, so the extension is what is wrong.
KNOWN = [(b"MZ", "a Windows executable", False), (b"\x7fELF", "a Linux executable", False),
         (b"\x1f\x8b", "a gzip archive", False), (b"Rar!", "a RAR archive", False),
         (b"7z\xbc\xaf", "a 7-Zip archive", False), (b"%PDF", "a PDF", True),
         (OLE_MAGIC, "an MS Office 97-2003 file", True), (b"\x89PNG", "a PNG image", False),
         (b"\xff\xd8\xff", "a JPEG image", False), (b"#!", "a script", False)]
# Images read by OCR: the magic each may start with.
IMAGE_TYPES = {".png": (b"\x89PNG\r\n\x1a\n",), ".jpg": (b"\xff\xd8\xff",), ".jpeg": (b"\xff\xd8\xff",),
               ".tif": (b"II*\x00", b"MM\x00*"), ".tiff": (b"II*\x00", b"MM\x00*")}
UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")  # UTF-16 (and UTF-32) text is full of NULs
VBA_PROJECT = "_VBA_PROJECT".encode("utf-16-le")  # the stream of a Word or Excel 97-2003 file's macros
ENCRYPTED_OOXML = "EncryptedPackage".encode("utf-16-le")  # the stream a password-protected .docx/.xlsx/.pptx holds
HEAD = 8192


def mismatch(path: Path, name: str | None = None) -> str | None:
    """None when the content fits the extension; else why not, e.g. 'a.pdf is not a PDF: it is a Windows executable'."""
    label = name or path.name
    reason = problem(path, Path(label).suffix.lower())
    return None if reason is None else f"{label} is {reason}"


def problem(path: Path, suffix: str) -> str | None:
    """None when the content fits `suffix`; else why not, e.g. 'not a PDF: it is a Windows executable'."""
    head = _head(path)
    if not head:
        return "an empty file"
    if suffix == ".pdf":
        # The header may follow a little junk (the PDF spec allows it within the first 1024 bytes).
        return None if b"%PDF-" in head[:1024] else f"not a PDF: {_it_is(path, head)}"
    if suffix in ZIP_TYPES or suffix in OFFICE_VARIANTS:
        if head.startswith(OLE_MAGIC) and _holds(path, ENCRYPTED_OOXML):
            return f"an encrypted (password-protected) {suffix} document"
        if not head.startswith(b"PK\x03\x04"):
            return f"not a {suffix} document: {_it_is(path, head)}"
        kind = _zip_kind(path)
        if kind == OFFICE_VARIANTS.get(suffix, suffix):
            return None
        if kind is None:
            return f"not a valid {suffix} document: the zip archive is damaged or truncated"
        if kind == "":
            return f"a zip archive, not a {suffix} document"
        return f"not a {suffix} document: it is a {kind} document (wrong extension)"
    if suffix in OLE_TYPES:
        if head.startswith(OLE_MAGIC) or modern_twin(path, suffix):
            return None
        expected = "an Outlook message" if suffix == ".msg" else "an MS Office 97-2003 file"
        return f"not {expected}: {_it_is(path, head)}"
    if suffix in IMAGE_TYPES:
        if head.startswith(IMAGE_TYPES[suffix]):
            return None
        return f"not a {suffix.lstrip('.').upper()} image: {_it_is(path, head)}"
    if suffix in TEXT_TYPES:
        binary = any(head.startswith(m) for m, _, _ in KNOWN if m not in (b"MZ", b"#!"))  # text may start so
        return f"not a text file: {_it_is(path, head)}" if binary or not _is_text(head) else None
    return None


def modern_twin(path: Path, suffix: str) -> str | None:
    """'.docx' when a .doc holds a .docx document (likewise .xls/.xlsx, .ppt/.pptx); else None."""
    twin = TWINS.get(suffix)
    return twin if twin and _head(path).startswith(b"PK\x03\x04") and _zip_kind(path) == twin else None


def _head(path: Path) -> bytes:
    with path.open("rb") as f:
        return f.read(HEAD)


def _it_is(path: Path, head: bytes) -> str:
    """'it is a Windows executable', with '(wrong extension)' where it is a document under another name."""
    if head.startswith(b"PK\x03\x04"):
        kind = _zip_kind(path)
        if kind:
            return f"it is a {kind} document (wrong extension)"
        return "it is a damaged zip archive" if kind is None else "it is a zip archive"
    found = next(((name, document) for magic, name, document in KNOWN if head.startswith(magic)), None)
    if found is not None:
        name, document = found
        return f"it is {name} (wrong extension)" if document else f"it is {name}"
    if _is_text(head):
        return "it is plain text (wrong extension)"
    return "it is something else (wrong extension or corrupt)"


def _zip_kind(path: Path) -> str | None:
    """The extension whose marker the zip holds ('.docx', ...), '' for another zip, None for a damaged one."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            mimetype = b""
            if "mimetype" in names:
                with archive.open("mimetype") as member:  # 100 bytes inflated at most: a bomb stays shut
                    mimetype = member.read(100)
    except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError):
        return None
    if b"opendocument" in mimetype:
        return ".odt"
    if b"epub" in mimetype:
        return ".epub"
    for suffix, marker in ZIP_TYPES.items():
        if marker != "mimetype" and any(n.startswith(marker) for n in names):
            return suffix
    return ""


def _is_text(head: bytes) -> bool:
    """No NULs, or only NULs in otherwise UTF-8 text (a log with a zeroed block, UTF-16 without a BOM)."""
    if b"\x00" not in head or head.startswith(UTF16_BOMS):
        return True
    rest = head.replace(b"\x00", b"")
    try:
        rest.decode("utf-8")
    except UnicodeDecodeError as exc:
        return exc.reason == "unexpected end of data"  # only a character cut at the end of the head
    return True


def holds_macros(path: Path) -> bool:
    """Whether an Office file carries a VBA project, whatever its name says: a zip with a vbaProject.bin or a
    macro-enabled content type (a .docm renamed .docx or .doc), or an OLE file with a _VBA_PROJECT stream."""
    head = _head(path)
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                if any(n.lower().endswith("vbaproject.bin") for n in archive.namelist()):
                    return True
                if "[Content_Types].xml" in archive.namelist():
                    with archive.open("[Content_Types].xml") as member:  # 1 MB at most: a bomb stays shut
                        return b"macroEnabled" in member.read(1 << 20)
        except (zipfile.BadZipFile, OSError, ValueError, KeyError, EOFError):
            return False
        return False
    return head.startswith(OLE_MAGIC) and _holds(path, VBA_PROJECT)


def _holds(path: Path, needle: bytes) -> bool:
    with path.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        return data.find(needle) >= 0
