"""Uploaded files, for the /v1/documents API and the chat page's library alike: the checks every
upload passes, where it is stored, and its ingestion. A refused upload raises UploadRefused with the
reason to show: the API answers it with its HTTP status, the page as a message."""

from __future__ import annotations

import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from appliance.access.auth import Principal
    from appliance.services import Services
    from appliance.settings import Settings
    from ingest.report import FileResult

# Why a file with macros is refused, by its name or by its content (readers may download an upload's original).
NO_MACROS = ("macro-enabled Office files are not taken as uploads (readers can download the original); save it "
             "without macros (.docx, .pptx, .xlsx), or have it ingested from a shared folder")


class UploadRefused(Exception):
    """An upload the appliance will not store: `status` is the HTTP status the API answers."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass
class Uploaded:
    """What became of one uploaded file."""

    name: str
    status: str  # added | updated | unchanged | failed | skipped
    id: str
    chunks: int
    error: str | None
    notes: list[str]


_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_ABSOLUTE = re.compile(r"(?<![\w.~-])/(?:[^\s'\"()<>,;:/]+/)+([^\s'\"()<>,;:/]*)")


def without_paths(text: str | None) -> str | None:
    """A reason shown to a user, with every absolute path cut to its last part: a parser's message may
    name the server's folders (the data directory, a library's install path)."""
    return None if text is None else _ABSOLUTE.sub(lambda m: m.group(1) or "…", text)


def safe_name(name: str | None) -> str:
    raw = unicodedata.normalize("NFC", (name or "").strip())
    if any(unicodedata.category(c) == "Cf" for c in raw):  # U+202E and kin: "exe.pdf" shown as "fdp.exe"
        raise UploadRefused(400, f"unusable file name {raw.encode('ascii', 'backslashreplace').decode()!r}: it "
                                 "holds invisible formatting characters (such as right-to-left overrides)")
    if "/" in raw or "\\" in raw or raw in (".", "..") or _CONTROL.search(raw):
        raise UploadRefused(400, f"unusable file name {raw!r}: a file name may not hold a folder, '..' or control "
                            "characters; give the upload a name like report.pdf")
    if not raw or raw.startswith("."):
        raise UploadRefused(400, f"unusable file name {name!r}: give the upload a name like report.pdf")
    stem, suffix = os.path.splitext(raw)
    while len((stem + suffix).encode("utf-8")) > 200:  # file systems count bytes, not characters
        stem = stem[:-1]
    return stem + suffix


def check_uploader(principal: Principal) -> None:
    if principal.kind == "key" and principal.name.startswith("key:") and not principal.admin:
        raise UploadRefused(403, "a service key uploads only if created with --admin (or make the key for a user: "
                            "`appliance keys create NAME --user USER`)")


def check_names(raw: Sequence[str | None]) -> list[str]:
    from ingest.parse import SUPPORTED_SUFFIXES
    from ingest.sniff import MACRO_ENABLED

    names = [safe_name(n) for n in raw]
    for name in names:
        if Path(name).suffix.lower() in MACRO_ENABLED:
            # Readers may download an upload's original: the appliance must not hand colleagues an employee's macros.
            raise UploadRefused(415, f"{name}: {NO_MACROS}")
        if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise UploadRefused(415, f"{name}: unsupported file type {Path(name).suffix or '(none)'!r}; supported: "
                                + " ".join(sorted(SUPPORTED_SUFFIXES - MACRO_ENABLED)))
    if len(set(names)) != len(names):
        raise UploadRefused(400, "two uploads have the same file name")
    return names


def check_content(part: Path, name: str, settings: Settings) -> None:
    """A stored upload's content: not empty, not over the size limit, matching its extension, and no zip bomb."""
    from ingest.sniff import holds_macros, mismatch
    from ingest.workers import check_archive

    size = part.stat().st_size
    if size == 0:
        raise UploadRefused(400, f"{name} is empty")
    if size > settings.ingest.max_file_mb * 1024 * 1024:
        raise UploadRefused(413, f"{name} is larger than ingest.max_file_mb ({settings.ingest.max_file_mb:g} MB)")
    lie = mismatch(part, name)
    if lie is not None:
        raise UploadRefused(415, f"{lie}: refused")
    if holds_macros(part):  # a .docm renamed .docx or .doc: the name alone is not the check
        raise UploadRefused(415, f"{name} holds macros: {NO_MACROS}")
    try:
        check_archive(part, settings.ingest.max_unpacked_mb)
    except Exception as exc:  # ParseError: the zip-bomb reason
        raise UploadRefused(413, f"{name} {exc}") from None


def upload_folder(services: Services, principal: Principal) -> Path:
    """Where the principal's uploads go: an administrator's (and the local operator's) follow the acl
    rules in uploads/; anyone else's go to uploads/<user>/, readable by that user alone."""
    base = services.settings.upload_dir
    return base if principal.admin or principal.kind not in ("user", "key") else base / principal.name


def remove_document(services: Services, path: str, keep_file: bool = False) -> FileResult | None:
    """A document's chunks and manifest row out of the index; an uploaded file is deleted too (unless
    keep_file), a file of an ingested folder stays on disk. None when the manifest does not know it."""
    with services.write_lock:
        result = services.ingest_pipeline.remove(path)
        p = Path(path)
        uploads = services.settings.upload_dir.absolute()
        if not keep_file and (p.parent == uploads or p.parent.parent == uploads):
            p.unlink(missing_ok=True)
    return result


def ingest_uploads(services: Services, parts: list[tuple[Path, Path]], actor: str, via: str,
                   progress: Callable[[int], Any] | None = None) -> list[Uploaded]:
    """Move each checked .part file to its final name and ingest them as one job (listed on the admin
    tab); a file of the same name is replaced. Runs in a worker thread."""
    from appliance.usecases import run_ingest
    from ingest.points import doc_id_of

    with services.write_lock:  # nothing replaces a file while another upload ingests it
        for part, final in parts:
            part.replace(final)
        report = run_ingest(services, [final for _, final in parts], actor, "upload", via, progress=progress)
    return [Uploaded(name=Path(f.path).name, status=f.status, id=doc_id_of(f.path), chunks=f.chunks,
                     error=without_paths(f.error), notes=[without_paths(n) or "" for n in f.notes])
            for f in report.files]
