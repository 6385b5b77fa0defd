"""discover -> parse -> chunk -> embed -> upsert, incremental through the manifest.

Per file, the order is: record the file as `pending` with the ids of both its old and its new
chunks (ids derive from path, content hash and index, so redoing a file overwrites rather than
duplicates), upsert the new chunks, delete the old ones, then mark the row `ok` with the new ids.
A run stopped anywhere leaves a pending row that names every chunk it may have written, and the
next run redoes that file and deletes whatever is not in its new version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.chunk import Chunk, Chunker
from ingest.discover import discover
from ingest.manifest import FileRecord, Manifest
from ingest.parse import SUPPORTED_SUFFIXES, ParseError, parse_file

if TYPE_CHECKING:
    from appliance.backends.embeddings import Embedding
    from appliance.backends.store import ChunkStore, StorePoint
    from appliance.settings import IngestSettings

POINT_NAMESPACE = uuid.UUID("6f1c2f5e-8a3b-4c1e-9d2a-5b7e0c4a9f11")
UPSERT_BATCH = 256
# Bumped whenever parsing or chunking changes what a file becomes (eval stores are keyed by it).
CHUNKING_VERSION = 2
SECTION_PREFIX_CHARS = 120  # ~30 MiniLM tokens: with a 220-token chunk, within its 256
STATUSES = ("added", "updated", "unchanged", "removed", "failed", "skipped")


@dataclass
class FileResult:
    path: str
    status: str  # one of STATUSES
    chunks: int = 0
    error: str | None = None
    pages: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files if f.status in ("added", "updated"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {s: self.count(s) for s in STATUSES}
        out["chunks"] = self.chunks
        out["seconds"] = round(self.seconds, 2)
        out["files"] = [
            {"path": f.path, "status": f.status, "chunks": f.chunks, "error": f.error, "notes": f.notes}
            for f in self.files
        ]
        return out


ProgressFactory = Callable[[int], Any]  # total bytes -> object with update(n), set_postfix_str(s), close()


class IngestPipeline:
    def __init__(self, settings: IngestSettings, manifest: Manifest, store: ChunkStore,
                 embedding: Embedding, chunker: Chunker, exclude: tuple[Path, ...] = ()) -> None:
        self._settings = settings
        self._manifest = manifest
        self._store = store
        self._embedding = embedding
        self._chunker = chunker
        self._exclude = exclude  # the data directory: a folder that holds it must not ingest the store
        self.config = processing_config(settings, getattr(embedding, "model_name", "?"))

    def run(self, paths: list[Path], *, prune: bool = False, dry_run: bool = False,
            retry_failed: bool = False, progress: ProgressFactory | None = None) -> IngestReport:
        started = time.monotonic()
        report = IngestReport()
        found = discover(paths, self._exclude)
        for path, reason in found.problems:
            report.files.append(FileResult(str(path), "failed", error=reason))
        sizes = {p: _size(p) for p in found.files}
        bar = progress(sum(sizes.values())) if progress else None
        try:
            for path in found.files:
                if bar is not None:
                    bar.set_postfix_str(path.name[:40], refresh=False)
                report.files.append(self._one(path, dry_run=dry_run, retry_failed=retry_failed))
                if bar is not None:
                    bar.update(sizes[path])
        finally:
            if bar is not None:
                bar.close()
        if prune:
            present = {str(p) for p in found.files}
            # A root that disappeared entirely is pruned too: everything under it is gone.
            for root in [*found.roots, *(p for p, reason in found.problems if reason == "no such file or folder")]:
                for rec in self._manifest.under(str(root)):
                    if rec.path not in present and not Path(rec.path).exists():
                        if not dry_run:
                            self._store.delete(rec.chunk_ids)
                            self._manifest.remove(rec.path)
                        report.files.append(FileResult(rec.path, "removed", chunks=len(rec.chunk_ids)))
        if not dry_run and any(f.status in ("added", "updated", "removed") for f in report.files):
            # Qdrant Edge builds its HNSW index only when asked: 48 s for 100k chunks, and queries
            # drop from 44 ms (full scan) to 7 ms (docs/benchmarks.md).
            self._store.optimize()
            self._store.flush()
        report.seconds = time.monotonic() - started
        return report

    def remove(self, path: str) -> FileResult | None:
        """Drop one file's chunks and manifest row (the file itself stays); None when it is not known."""
        rec = self._manifest.get(path)
        if rec is None:
            return None
        self._store.delete(rec.chunk_ids)
        self._manifest.remove(path)
        self._store.flush()
        return FileResult(path, "removed", chunks=len(rec.chunk_ids))

    def _one(self, path: Path, *, dry_run: bool, retry_failed: bool) -> FileResult:
        key = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            return FileResult(key, "failed", error=f"cannot read: {exc.strerror}")
        old = self._manifest.get(key)
        same_stat = old is not None and old.size == st.st_size and old.mtime_ns == st.st_mtime_ns
        done = old is not None and old.status in ("ok", "failed", "skipped")  # not "pending": a crashed run
        # Processed with other settings (chunk size, parser, groups, embedding model): do it again.
        current = old is not None and (old.config == self.config or old.status != "ok")
        if old and done and same_stat and current and not (retry_failed and old.status in ("failed", "skipped")):
            return FileResult(key, "unchanged", chunks=len(old.chunk_ids), error=old.error, notes=old.notes)
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            return self._record_problem(key, st, "skipped", f"unsupported file type {path.suffix or '(none)'!r}",
                                        old, dry_run)
        if st.st_size > self._settings.max_file_mb * 1024 * 1024:
            return self._record_problem(
                key, st, "skipped", f"larger than ingest.max_file_mb ({self._settings.max_file_mb:g} MB)", old, dry_run)
        try:
            sha = _sha256(path)
        except OSError as exc:
            return FileResult(key, "failed", error=f"cannot read: {exc.strerror}")
        if old and old.sha256 == sha and old.status == "ok" and old.config == self.config:
            if not dry_run:
                self._manifest.touch(key, st.st_size, st.st_mtime_ns)
            return FileResult(key, "unchanged", chunks=len(old.chunk_ids), notes=old.notes)
        status = "updated" if old and old.status == "ok" else "added"
        if dry_run:
            return FileResult(key, status)
        try:
            parsed = parse_file(path, pdf_parser=self._settings.pdf_parser, ocr=self._settings.ocr)
        except ParseError as exc:
            return self._record_problem(key, st, "failed", str(exc), old, dry_run, sha=sha)
        except Exception as exc:  # a parser bug on one file must never stop the run
            return self._record_problem(key, st, "failed", f"{type(exc).__name__}: {exc}"[:300], old, dry_run, sha=sha)
        acl = list(self._settings.default_groups)
        try:
            chunks = self._chunker.chunk(parsed.elements)
            if not chunks:
                return self._record_problem(key, st, "failed", "no text found", old, dry_run, sha=sha)
            points = self._points(path, sha, chunks, acl, parsed.parser)
        except Exception as exc:  # chunking or embedding one file must not stop the run either
            return self._record_problem(key, st, "failed", f"{type(exc).__name__}: {exc}"[:300], old, dry_run, sha=sha)
        ids = [p.id for p in points]
        new = set(ids)
        stale = [i for i in (old.chunk_ids if old else []) if i not in new]
        self._manifest.put(FileRecord(
            path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha, status="pending", parser=parsed.parser,
            chunk_ids=stale + ids, acl=acl, ingested_at=time.time(),
        ))
        for start in range(0, len(points), UPSERT_BATCH):
            self._store.upsert(points[start : start + UPSERT_BATCH])
        self._store.delete(stale)
        self._manifest.put(FileRecord(
            path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha, status="ok", parser=parsed.parser,
            pages=parsed.pages, chunk_ids=ids, acl=acl, notes=parsed.notes, ingested_at=time.time(),
            config=self.config,
        ))
        return FileResult(key, status, chunks=len(ids), pages=parsed.pages, notes=parsed.notes)

    def _record_problem(self, key: str, st: os.stat_result, status: str, reason: str, old: FileRecord | None,
                        dry_run: bool, sha: str | None = None) -> FileResult:
        if not dry_run:
            if old and old.chunk_ids:  # the file changed into something unreadable: drop its old chunks
                self._store.delete(old.chunk_ids)
            self._manifest.put(FileRecord(path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha,
                                          status="failed" if status == "failed" else "skipped", error=reason))
        return FileResult(key, status, error=reason)

    def _points(self, path: Path, sha: str, chunks: list[Chunk], acl: list[str], parser: str) -> list[StorePoint]:
        from appliance.backends.store import StorePoint

        doc_id = doc_id_of(str(path))
        now = time.time()
        # The heading path helps the embedding; capped so that it and the chunk fit MiniLM's 256 tokens.
        embed_inputs = [(" > ".join(c.section[-2:])[:SECTION_PREFIX_CHARS] + "\n" + c.text) if c.section else c.text
                        for c in chunks]
        vectors = self._embedding.embed(embed_inputs)
        points = []
        for chunk, vector in zip(chunks, vectors, strict=True):
            points.append(StorePoint(
                id=str(uuid.uuid5(POINT_NAMESPACE, f"{path}\x00{sha}\x00{chunk.index}")),
                vector=[float(x) for x in vector],
                text=chunk.text,
                payload=chunk_payload(path, doc_id, sha, chunk, acl, parser, now),
            ))
        return points


def processing_config(settings: IngestSettings, embedding_model: str) -> str:
    """A short digest of everything that decides what a file becomes in the store."""
    parts = {"chunking": CHUNKING_VERSION, "chunk_tokens": settings.chunk_tokens,
             "overlap": settings.chunk_overlap_tokens, "pdf_parser": settings.pdf_parser, "ocr": settings.ocr,
             "groups": sorted(settings.default_groups), "embedding": embedding_model,
             "section_prefix": SECTION_PREFIX_CHARS}
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


def doc_id_of(path: str) -> str:
    """The document id of a file: stable across re-ingestion, so links and API ids keep working."""
    return hashlib.sha1(path.encode()).hexdigest()[:16]


def chunk_payload(path: Path, doc_id: str, sha: str, chunk: Chunk, acl: list[str], parser: str,
                  now: float) -> dict[str, Any]:
    """The payload schema, identical on every store backend."""
    return {
        "doc_id": doc_id,
        "path": str(path),
        "file_name": path.name,
        "file_type": path.suffix.lower().lstrip("."),
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


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()

