"""Documents REST and retrieval-only search.

Uploads are saved under <data_dir>/uploads/ and ingested by the same pipeline as `appliance ingest`;
re-uploading a file of the same name replaces that document. One writer at a time
(services.write_lock): uploads and deletions queue behind each other, questions do not.
"""

from __future__ import annotations

import os
import re
import time
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from appliance.api.errors import ApiError
from appliance.api.schemas import (
    ERRORS,
    Chunk,
    ChunkList,
    Deleted,
    Document,
    DocumentList,
    SearchHit,
    SearchRequest,
    SearchResponse,
    UploadResponse,
    UploadResult,
)
from appliance.api.security import check_question_rate, require_principal
from appliance.api.state import AppState, state_of
from appliance.auth import Principal

if TYPE_CHECKING:
    from ingest.manifest import FileRecord

router = APIRouter(tags=["Documents"])
State = Annotated[AppState, Depends(state_of)]
Who = Annotated[Principal, Depends(require_principal)]
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _document(rec: FileRecord, upload_dir: Path) -> Document:
    from ingest.pipeline import doc_id_of

    return Document(id=doc_id_of(rec.path), path=rec.path, name=Path(rec.path).name, status=rec.status,  # type: ignore[arg-type]
                    chunks=len(rec.chunk_ids), pages=rec.pages, error=rec.error, notes=rec.notes,
                    ingested_at=rec.ingested_at, uploaded=upload_dir in Path(rec.path).parents)


def visible(principal: Principal, rec: FileRecord, upload_dir: Path, every: bool = False) -> bool:
    """Whether the principal may see that the document exists: the documents they may read and their
    own uploads (failed ones too); with `every`, an administrator sees every row (to manage ingestion)."""
    return (every and principal.admin) or principal.can_read(rec.acl) or own_upload(principal, rec, upload_dir)


def own_upload(principal: Principal, rec: FileRecord, upload_dir: Path) -> bool:
    return Path(rec.path).parent == upload_dir / principal.name


def _find(state: AppState, doc_id: str, principal: Principal) -> FileRecord:
    """The document, if the principal may see it; another's document answers as one that does not exist."""
    from ingest.pipeline import doc_id_of

    upload_dir = state.services.settings.upload_dir.absolute()
    for rec in state.services.manifest.all():
        if doc_id_of(rec.path) == doc_id and visible(principal, rec, upload_dir, every=True):
            return rec
    raise ApiError(404, f"no document with id {doc_id!r} (GET /v1/documents lists them)")


def _safe_name(name: str | None) -> str:
    raw = (name or "").strip()
    if "/" in raw or "\\" in raw or raw in (".", "..") or _CONTROL.search(raw):
        raise ApiError(400, f"unusable file name {raw!r}: a file name may not hold a folder, '..' or control "
                            "characters; give the upload a name like report.pdf")
    if not raw or raw.startswith("."):
        raise ApiError(400, f"unusable file name {name!r}: give the upload a name like report.pdf")
    stem, suffix = os.path.splitext(raw)
    while len((stem + suffix).encode("utf-8")) > 200:  # file systems count bytes, not characters
        stem = stem[:-1]
    return stem + suffix


@router.get("/v1/documents", response_model=DocumentList, responses=ERRORS)
def list_documents(state: State, principal: Who, every: Annotated[bool, Query(
        alias="all", description="Administrators: every document, also those they may not read.")] = False,
                   ) -> DocumentList:
    """The documents the caller may read, and their own uploads."""
    if every and not principal.admin:
        raise ApiError(403, "all=true needs an administrator")
    upload_dir = state.services.settings.upload_dir.absolute()
    records = [r for r in state.services.manifest.all() if visible(principal, r, upload_dir, every)]
    return DocumentList(documents=[_document(r, upload_dir) for r in records])


@router.get("/v1/documents/{doc_id}", response_model=Document, responses=ERRORS)
def get_document(doc_id: str, state: State, principal: Who) -> Document:
    return _document(_find(state, doc_id, principal), state.services.settings.upload_dir.absolute())


def upload_folder(state: AppState, principal: Principal) -> Path:
    """Where the principal's uploads go: an administrator's (and the local operator's) follow the acl
    rules in uploads/; anyone else's go to uploads/<user>/, readable by that user alone."""
    base = state.services.settings.upload_dir
    return base if principal.admin or principal.kind not in ("user", "key") else base / principal.name


@router.post("/v1/documents", response_model=UploadResponse, status_code=201, responses={
    **ERRORS, 207: {"model": UploadResponse, "description": "Some files were ingested, some failed: see each status."},
    422: {"model": UploadResponse, "description": "No file could be ingested: see each error."}})
async def upload_documents(state: State, principal: Who, files: Annotated[list[UploadFile], File(
        description="One or more files (PDF, Office, HTML, e-mail, Markdown, text...).")]) -> JSONResponse:
    """Each file's content must match its extension; archives that unpack beyond ingest.max_unpacked_mb
    are refused. A user's uploads are readable by that user only; an administrator's follow the acl rules."""
    from ingest.parse import SUPPORTED_SUFFIXES
    from ingest.pipeline import doc_id_of
    from ingest.sniff import mismatch
    from ingest.workers import check_archive

    settings = state.services.settings
    if principal.kind == "key" and principal.name.startswith("key:") and not principal.admin:
        raise ApiError(403, "a service key uploads only if created with --admin (or make the key for a user: "
                            "`appliance keys create NAME --user USER`)")
    if len(files) > settings.server.max_upload_files:
        raise ApiError(400, f"at most {settings.server.max_upload_files} files per request (server.max_upload_files)")
    names = [_safe_name(f.filename) for f in files]
    for name in names:
        if Path(name).suffix.lower() not in SUPPORTED_SUFFIXES:
            raise ApiError(415, f"{name}: unsupported file type {Path(name).suffix or '(none)'!r}; supported: "
                                + " ".join(sorted(SUPPORTED_SUFFIXES)))
    if len(set(names)) != len(names):
        raise ApiError(400, "two uploads have the same file name")
    limit = int(settings.ingest.max_file_mb * 1024 * 1024)
    upload_dir = upload_folder(state, principal)
    upload_dir.mkdir(parents=True, exist_ok=True)
    parts: list[tuple[Path, Path]] = []
    try:
        for upload, name in zip(files, names, strict=True):
            part = upload_dir / f".{uuid.uuid4().hex}.part"  # unique: two uploads of one name never mix
            size = 0
            with part.open("wb") as out:
                parts.append((part, upload_dir / name))
                while block := await upload.read(1 << 20):
                    size += len(block)
                    if size > limit:
                        raise ApiError(413, f"{name} is larger than ingest.max_file_mb "
                                            f"({settings.ingest.max_file_mb:g} MB)")
                    out.write(block)
            if size == 0:
                raise ApiError(400, f"{name} is empty")
            lie = await run_in_threadpool(mismatch, part, name)
            if lie is not None:
                raise ApiError(415, f"{lie}: refused (the content must match the extension)")
            try:
                await run_in_threadpool(check_archive, part, settings.ingest.max_unpacked_mb)
            except Exception as exc:  # ParseError: the zip-bomb reason
                raise ApiError(413, f"{name} {exc}") from None
    except BaseException:
        for part, _ in parts:
            part.unlink(missing_ok=True)
        raise

    def ingest() -> list[UploadResult]:
        with state.services.write_lock:  # nothing replaces a file while another upload ingests it
            for part, final in parts:
                part.replace(final)
            started = time.perf_counter()
            report = state.services.ingest_pipeline.run([final for _, final in parts])
            state.metrics.ingest_seconds.observe(time.perf_counter() - started)
        results = []
        for f in report.files:
            state.metrics.ingest_files.labels(f.status).inc()
            if f.status in ("added", "updated"):
                state.metrics.ingest_chunks.inc(f.chunks)
            results.append(UploadResult(name=Path(f.path).name, status=f.status,  # type: ignore[arg-type]
                                        id=doc_id_of(f.path), chunks=f.chunks, error=f.error, notes=f.notes))
        return results

    results = await anyio.to_thread.run_sync(ingest, limiter=state.writer())
    state.services.audit.record("upload", principal.name, files=[
        {"path": str(upload_dir.absolute() / r.name), "status": r.status, "chunks": r.chunks} for r in results])
    failed = sum(r.status in ("failed", "skipped") for r in results)
    status = 201 if not failed else 422 if failed == len(results) else 207
    return JSONResponse(UploadResponse(files=results).model_dump(), status_code=status)


@router.delete("/v1/documents/{doc_id}", response_model=Deleted, responses=ERRORS)
async def delete_document(doc_id: str, state: State, principal: Who, keep_file: Annotated[bool, Query(
        description="Keep an uploaded file on disk (only its chunks and manifest row go).")] = False) -> Deleted:
    """Remove a document's chunks and its manifest row (administrators; a user: their own uploads). An
    uploaded file is deleted too; a file from an ingested folder stays on disk, and comes back if that
    folder is ingested again."""
    rec = await run_in_threadpool(_find, state, doc_id, principal)
    if not (principal.admin or own_upload(principal, rec, state.services.settings.upload_dir.absolute())):
        raise ApiError(403, "only an administrator removes documents (a user: their own uploads)")

    def remove() -> Any:
        with state.services.write_lock:
            result = state.services.ingest_pipeline.remove(rec.path)
            path = Path(rec.path)
            uploads = state.services.settings.upload_dir.absolute()
            if not keep_file and (path.parent == uploads or path.parent.parent == uploads):
                path.unlink(missing_ok=True)
        return result

    result = await anyio.to_thread.run_sync(remove, limiter=state.writer())
    if result is None:
        raise ApiError(404, f"no document with id {doc_id!r}")
    state.services.audit.record("delete", principal.name, path=rec.path, chunks=result.chunks)
    return Deleted(id=doc_id, chunks=result.chunks)


@router.get("/v1/documents/{doc_id}/chunks", response_model=ChunkList, responses=ERRORS)
def document_chunks(doc_id: str, state: State, principal: Who,
                    limit: Annotated[int, Query(ge=1, le=10000, description="Most chunks returned.")] = 1000,
                    ) -> ChunkList:
    """The document's chunks as stored, in reading order: those the caller may read (filtered in the store)."""
    _find(state, doc_id, principal)
    hits = state.services.store.chunks_of(doc_id, limit, exclude=state.services.manifest.hidden_ids(),
                                          groups=principal.reads)
    state.services.audit.record("read", principal.name, doc_id=doc_id, chunks=len(hits))
    chunks = [Chunk(index=h.payload.get("chunk_index"), page=h.payload.get("page"),
                    page_name=h.payload.get("page_name"), section=h.payload.get("section") or [],
                    text=h.payload.get("text", "")) for h in hits]
    return ChunkList(id=doc_id, chunks=chunks)


@router.post("/v1/search", response_model=SearchResponse, responses=ERRORS, tags=["Search"])
def search(body: SearchRequest, state: State, principal: Who) -> SearchResponse:
    """Retrieval only, ranked as `ask` ranks (hybrid search, fusion, reranker); no answer is generated.
    Only passages the caller may read are searched (the filter is part of the store query)."""
    from appliance.api.openai_compat import source_out

    query = " ".join(body.query.split())
    if not query:
        raise ApiError(422, "invalid request: query: is blank")
    check_question_rate(state, principal)
    rag = state.services.rag
    found = rag.search(query, principal.reads, limit=body.top_k)
    state.services.audit.record("search", principal.name, query=query, sources=[
        {"path": s.path, "page": s.page, "doc_id": s.doc_id, "text": s.text} for s in found[: body.top_k]])
    relevant = {id(s) for s in rag.relevant(found, query)}
    state.metrics.searches.inc()
    return SearchResponse(query=query, results=[
        SearchHit(**source_out(s).model_dump(), relevant=id(s) in relevant) for s in found[: body.top_k]])
