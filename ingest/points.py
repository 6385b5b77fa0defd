"""What a chunk becomes in the store: its deterministic point id, the text that is embedded, and the
payload schema, identical on every store backend (so a collection moves between them by snapshot)."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any

from ingest.chunk import Chunk
from ingest.metadata import DocumentMeta

if TYPE_CHECKING:
    from appliance.backends.store import StorePoint
    from appliance.settings import IngestSettings

POINT_NAMESPACE = uuid.UUID("6f1c2f5e-8a3b-4c1e-9d2a-5b7e0c4a9f11")
CHUNKING_VERSION = 5  # 3: the document's title heads each chunk's embedded and indexed text; 4: PDFs' running
# headers and footers are left out of chunks after their first page (ingest.running); 5: Word content controls
# kept, Office variants, mails past unreadable attachments, CSVs in other encodings, one-row tables split like
# prose (failed files retried)
SECTION_PREFIX_CHARS = 120  # ~30 MiniLM tokens: with a 220-token chunk, within its 256
TITLE_PREFIX_CHARS = 60  # of those, at most this much of the title: the section path keeps the rest


def heading(title: str, section: tuple[str, ...] | list[str]) -> str:
    """What heads a chunk where it is embedded and BM25-indexed: the document's title, then the section
    path, so "the Q3 10-Q" matches its chunks even where their text never names it."""
    parts = [title[:TITLE_PREFIX_CHARS]] if title else []
    parts += [s for s in section[-2:] if s and s != title]
    return " > ".join(parts)[:SECTION_PREFIX_CHARS]


def embed_input(chunk: Chunk, title: str = "") -> str:
    """The heading helps the embedding; capped so that it and the chunk fit MiniLM's 256 tokens."""
    head = heading(title, chunk.section)
    return f"{head}\n{chunk.text}" if head else chunk.text


def point_id(path: str, sha: str, config: str, index: int) -> str:
    """Deterministic: a redone file overwrites its own chunks; another version gets other ids."""
    return str(uuid.uuid5(POINT_NAMESPACE, f"{path}\x00{sha}\x00{config}\x00{index}"))


def _point(pid: str, vector: list[float], text: str, payload: dict[str, Any]) -> StorePoint:
    from appliance.backends.store import StorePoint

    return StorePoint(id=pid, vector=vector, text=text, payload=payload)


def processing_config(settings: IngestSettings, embedding_model: str) -> str:
    """A short digest of everything that decides what a file becomes in the store."""
    parts = {"chunking": CHUNKING_VERSION, "chunk_tokens": settings.chunk_tokens,
             "overlap": settings.chunk_overlap_tokens, "pdf_parser": settings.pdf_parser, "ocr": settings.ocr,
             "ocr_languages": settings.ocr_languages, "ocr_dpi": settings.ocr_dpi, "pdf_tables": settings.pdf_tables,
             "embedding": embedding_model,
             "section_prefix": SECTION_PREFIX_CHARS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def doc_id_of(path: str) -> str:
    """The document id of a file: stable across re-ingestion, so links and API ids keep working."""
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def placed(path: Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The payload fields a question's scope filters on (appliance.backends.scope): the file's path, type,
    every folder above it (a keyword list, as Qdrant has no prefix match: /a/b/c.pdf → /a/b, /a, /) and
    the document's date, YYYY-MM-DD, when it has one (a datetime-indexed field, for ranges)."""
    date = DocumentMeta.from_payload(meta).date
    return {"path": str(path), "file_name": path.name, "file_type": path.suffix.lower().lstrip("."),
            "folders": [str(p) for p in PurePosixPath(path).parents], **({"date": date} if date else {})}


def chunk_payload(path: Path, doc_id: str, sha: str, chunk: Chunk, acl: list[str], parser: str,
                  now: float, meta: dict[str, Any] | None = None, pages: int | None = None,
                  running: list[str] | None = None) -> dict[str, Any]:
    """The payload schema, identical on every store backend. `meta`: the document's own metadata
    (ingest.metadata.DocumentMeta.to_payload: title, author, created, modified, email_*, subject).
    `running`: the running header and footer lines of the chunk's page, left out of its text (ingest.running):
    `running_lines`, only where there are some, so a citation can still show "Page 3 of 40"."""
    meta = meta or {}
    return {
        **({"running_lines": running} if running else {}),
        **meta,
        "heading": heading(str(meta.get("title", "")), chunk.section),
        "page_count": pages,
        "doc_id": doc_id,
        **placed(path, meta),
        "sha256": sha,
        "chunk_index": chunk.index,
        "page": chunk.page,
        "page_name": chunk.page_name,
        "section": list(chunk.section),
        "element_types": list(chunk.kinds),
        "acl_groups": acl,
        "parser": parser,
        "ingested_at": now,
    }


def embed_key(text: str) -> str:
    """The vector cache's key: texts that differ only in spacing share one (MiniLM's tokenizer splits on any
    run of whitespace, so their vectors are the same; a served model sees a difference of spacing alone)."""
    return hashlib.sha1(" ".join(text.split()).encode()).hexdigest()
