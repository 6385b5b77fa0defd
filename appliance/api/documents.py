"""Documents REST and retrieval-only search.

Uploads are saved under <data_dir>/uploads/ and ingested by the same pipeline as `appliance ingest`;
re-uploading a file of the same name replaces that document. One writer at a time
(services.write_lock): uploads and deletions queue behind each other, questions do not.
"""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import APIRouter, Depends, File, Query, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, Response

from appliance.access.acl import own_upload, visible
from appliance.access.auth import Principal
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
from appliance.api.security import require_principal
from appliance.api.state import AppState, state_of
from appliance.rag import NOTHING_IN_SCOPE, checked_question
from appliance.uploads import (
    UploadRefused,
    check_content,
    check_names,
    check_uploader,
    ingest_uploads,
    remove_document,
    upload_folder,
)
from appliance.usecases import readable_chunks
from ingest.metadata import DocumentMeta

if TYPE_CHECKING:
    from ingest.manifest import FileRecord

router = APIRouter(tags=["Documents"])
State = Annotated[AppState, Depends(state_of)]
Who = Annotated[Principal, Depends(require_principal)]


def _document(rec: FileRecord, upload_dir: Path) -> Document:
    from ingest.points import doc_id_of

    return Document(id=doc_id_of(rec.path), path=rec.path, name=Path(rec.path).name, status=rec.status,  # type: ignore[arg-type]
                    chunks=len(rec.chunk_ids), pages=rec.pages, error=rec.error, notes=rec.notes,
                    ingested_at=rec.ingested_at, uploaded=upload_dir in Path(rec.path).parents,
                    **DocumentMeta.from_payload(rec.meta).to_payload())


def _find(state: AppState, doc_id: str, principal: Principal) -> FileRecord:
    """The document, if the principal may see it; another's document answers as one that does not exist."""
    from ingest.points import doc_id_of

    upload_dir = state.services.settings.upload_dir.absolute()
    for rec in state.services.manifest.all():
        if doc_id_of(rec.path) == doc_id and visible(principal, rec, upload_dir, every=True):
            return rec
    raise ApiError(404, f"no document with id {doc_id!r} (GET /v1/documents lists them)")


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


@router.post("/v1/documents", response_model=UploadResponse, status_code=201, responses={
    **ERRORS, 207: {"model": UploadResponse, "description": "Some files were ingested, some failed: see each status."},
    422: {"model": UploadResponse, "description": "No file could be ingested: see each error."}})
async def upload_documents(state: State, principal: Who, files: Annotated[list[UploadFile], File(
        description="One or more files (PDF, Office, HTML, e-mail, Markdown, text...).")]) -> JSONResponse:
    """Each file's content must match its extension; archives that unpack beyond ingest.max_unpacked_mb
    are refused. A user's uploads are readable by that user only; an administrator's follow the acl rules."""
    settings = state.services.settings
    check_uploader(principal)
    if len(files) > settings.server.max_upload_files:
        raise ApiError(400, f"at most {settings.server.max_upload_files} files per request (server.max_upload_files)")
    names = check_names([f.filename for f in files])
    limit = int(settings.ingest.max_file_mb * 1024 * 1024)
    upload_dir = upload_folder(state.services, principal)
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
                        raise UploadRefused(413, f"{name} is larger than ingest.max_file_mb "
                                            f"({settings.ingest.max_file_mb:g} MB)")
                    out.write(block)
            await run_in_threadpool(check_content, part, name, settings)
    except BaseException:
        for part, _ in parts:
            part.unlink(missing_ok=True)
        raise

    def ingest() -> list[UploadResult]:
        return [UploadResult(**vars(u)) for u in ingest_uploads(state.services, parts, principal.name, "api")]

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

    from ingest.report import FileBusy

    try:
        result = await anyio.to_thread.run_sync(lambda: remove_document(state.services, rec.path, keep_file),
                                                limiter=state.writer())
    except FileBusy as exc:
        raise ApiError(409, str(exc)) from None
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
    hits = readable_chunks(state.services, doc_id, principal.reads, limit)
    state.services.audit.record("read", principal.name, doc_id=doc_id, chunks=len(hits))
    chunks = [Chunk(index=h.payload.get("chunk_index"), page=h.payload.get("page"),
                    page_name=h.payload.get("page_name"), section=h.payload.get("section") or [],
                    text=h.payload.get("text", "")) for h in hits]
    return ChunkList(id=doc_id, chunks=chunks)


def _readable(state: AppState, doc_id: str, principal: Principal) -> FileRecord:
    """The document, if the principal may read it (their own upload too); otherwise it does not exist."""
    rec = _find(state, doc_id, principal)
    if not (principal.can_read(rec.acl) or own_upload(principal, rec, state.services.settings.upload_dir.absolute())):
        raise ApiError(404, f"no document with id {doc_id!r} (GET /v1/documents lists them)")
    if not Path(rec.path).is_file():
        raise ApiError(410, f"{Path(rec.path).name} is indexed but no longer on disk")
    return rec


@router.get("/v1/documents/{doc_id}/file", responses={**ERRORS, 200: {"content": {"application/octet-stream": {}}}})
def document_file(doc_id: str, state: State, principal: Who) -> FileResponse:
    """The original file, for a reader of the document."""
    rec = _readable(state, doc_id, principal)
    state.services.audit.record("read", principal.name, doc_id=doc_id, path=rec.path, download=True)
    return FileResponse(rec.path, filename=Path(rec.path).name, headers={"Cache-Control": "private, no-store"})


@router.get("/v1/documents/{doc_id}/pages/{page}.png", responses={**ERRORS, 200: {"content": {"image/png": {}}}})
def page_image(doc_id: str, page: int, state: State, principal: Who,
               width: Annotated[int, Query(ge=100, le=2000, description="Width of the image in pixels.")] = 900,
               passage: Annotated[int | None, Query(ge=0, le=10_000_000, description=(
                   "A chunk of this document on this page (its chunk_index, as sources give it): its lines "
                   "are marked on the page."))] = None,
               ) -> Response:
    """A PDF page rendered as PNG on the server (pypdfium2), for a reader of the document."""
    from appliance.api.page_images import render_page

    rec = _readable(state, doc_id, principal)
    if Path(rec.path).suffix.lower() != ".pdf":
        raise ApiError(415, f"{Path(rec.path).name} is not a PDF: only PDF pages are rendered")
    text = None
    if passage is not None:  # read through the store's group filter, as every passage a reader sees
        text = next((str(h.payload.get("text", "")) for h in readable_chunks(state.services, doc_id, principal.reads)
                     if h.payload.get("chunk_index") == passage and h.payload.get("page") == page), None)
    try:
        png = render_page(Path(rec.path), page, width, text)
    except IndexError as exc:
        raise ApiError(404, str(exc)) from None
    # A passage no longer there (re-ingested since) leaves the page unmarked, not a broken image.
    marked = {"X-Passage-Marked": "1" if text else "0"} if passage is not None else {}
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300", **marked})


@router.post("/v1/search", response_model=SearchResponse, responses=ERRORS, tags=["Search"])
def search(body: SearchRequest, state: State, principal: Who) -> SearchResponse:
    """Retrieval only, ranked as `ask` ranks (hybrid search, fusion, reranker); no answer is generated.
    Only passages the caller may read, within the scope if one is given, are searched (both are part of
    the store query, so `top_k` fills from inside them)."""
    from appliance.api.openai_compat import source_out

    query = checked_question(body.query, state.services.settings.retrieval.max_question_chars)
    if not query:
        raise ApiError(422, "invalid request: query: is blank")
    state.services.limits.question(principal)  # RateLimited: answered 429 by the error handlers
    rag = state.services.rag
    scope = body.scope.to_scope() if body.scope else None
    found = rag.search(query, principal.reads, limit=body.top_k, scope=scope)
    shown = [{"path": s.path, "page": s.page, "doc_id": s.doc_id, "text": s.text} for s in found[: body.top_k]]
    state.services.audit.record("search", principal.name, query=query, scope=scope.to_dict() if scope else None,
                                sources=shown)
    relevant = {id(s) for s in rag.relevant(found, query)}
    state.metrics.searches.inc()
    return SearchResponse(query=query, results=[
        SearchHit(**source_out(s).model_dump(), relevant=id(s) in relevant) for s in found[: body.top_k]],
        note=NOTHING_IN_SCOPE if scope and not found else None)
