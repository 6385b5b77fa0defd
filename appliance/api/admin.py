"""Administration: the work `appliance ingest` and `appliance ask` hand over while this server holds the
embedded store (authorised by the token in <data_dir>/server.json only, from this machine only),
permission rules, the audit trail, users."""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from appliance.access.auth import Principal
from appliance.api.errors import ApiError
from appliance.api.schemas import ERRORS
from appliance.api.security import cli_actor, require_admin
from appliance.api.state import AppState, local_request

if TYPE_CHECKING:
    from appliance.rag import Answer

log = logging.getLogger("appliance.api")
router = APIRouter(tags=["Admin"])
Admin = Annotated[Principal, Depends(require_admin)]


class IngestJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    paths: list[str] = Field(min_length=1, description="Absolute paths on the server's machine.")
    prune: bool = False
    dry_run: bool = False
    retry_failed: bool = False


def _authorise(request: Request) -> AppState:
    state: AppState = request.app.state.appliance
    if not local_request(request):
        # The token never leaves the machine; refusing other hosts keeps it that way even if it did.
        raise ApiError(403, "work is handed over from this machine only")
    header = request.headers.get("authorization", "").encode()
    if state.admin_token is None or not secrets.compare_digest(header, f"Bearer {state.admin_token}".encode()):
        raise ApiError(401, "this endpoint takes the token of <data_dir>/server.json (used by the `appliance` "
                            "command on this machine)")
    return state


@router.post("/v1/admin/ingest/cancel", responses=ERRORS)
def cancel(request: Request) -> dict[str, bool]:
    """Stop the handed-over ingest job between files (Ctrl-C in `appliance ingest`); the next job resumes."""
    state = _authorise(request)
    running = state.ingest_running
    if running:
        state.ingest_cancel.set()
    return {"cancelled": running}


@router.post("/v1/admin/ingest", responses={**ERRORS, 200: {
    "description": "NDJSON events: start {total bytes}, progress {advance, file}, then done {report} or error."}})
async def ingest(job: IngestJob, request: Request,
                 state: Annotated[AppState, Depends(_authorise)]) -> StreamingResponse:
    # _authorise as a dependency: an anonymous request is refused before its body is read or validated.
    paths = [Path(p) for p in job.paths]
    if not all(p.is_absolute() for p in paths):
        raise ApiError(400, "paths must be absolute")
    data_dir = state.services.settings.data_dir.absolute()
    if any(p == data_dir or data_dir in p.parents for p in paths):
        raise ApiError(400, f"{data_dir} is the appliance's own data directory, not documents")
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    def put(event: dict[str, Any]) -> None:
        loop.call_soon_threadsafe(queue.put_nowait, event)

    class Bar:
        """The progress object the pipeline drives, as a tqdm bar would be."""

        def __init__(self, total: int) -> None:
            put({"event": "start", "total": total})
            self.file = ""

        def update(self, n: int) -> None:
            put({"event": "progress", "advance": n, "file": self.file})

        def set_postfix_str(self, text: str, refresh: bool = True) -> None:
            self.file = text
            put({"event": "file", "file": text})

        def close(self) -> None:
            pass

    def run() -> dict[str, Any]:
        from appliance.usecases import run_ingest

        state.ingest_cancel.clear()
        state.ingest_running = True
        try:  # the CLI's own job, run here: the same act as `ingest` in its own process
            report = run_ingest(state.services, paths, cli_actor(request), "ingest", "cli", progress=Bar,
                                cancel=state.ingest_cancel, prune=job.prune, dry_run=job.dry_run,
                                retry_failed=job.retry_failed)
        finally:
            state.ingest_running = False
        if report.interrupted:
            log.info("handed-over ingest stopped by its client after %d files", len(report.files))
        return report.to_dict()

    # The job runs to its end even if the client goes away (as `ingest` would in its own process).
    task = asyncio.ensure_future(anyio.to_thread.run_sync(run, limiter=state.writer()))

    async def events() -> AsyncIterator[str]:
        while not (task.done() and queue.empty()):
            try:
                event = await asyncio.wait_for(queue.get(), timeout=0.5)
            except TimeoutError:
                continue
            yield json.dumps(event) + "\n"
        try:
            yield json.dumps({"event": "done", "report": task.result()}) + "\n"
        except Exception as exc:
            yield json.dumps({"event": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n"

    return StreamingResponse(events(), media_type="application/x-ndjson")


class AskJob(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, description="The question, as `appliance ask` was given it.")
    whole_document: bool = Field(False, description="`ask --whole-document`.")
    as_user: str | None = Field(None, description="Answer from what this user may read (`ask --as-user`); "
                                                  "None: from every document, as the machine's operator.")
    within: list[str] = Field(default_factory=list, description="`ask --in`: absolute paths, as ingested.")
    file_types: list[str] = Field(default_factory=list, description="`ask --type`.")
    since: str | None = Field(None, description="`ask --since`: YYYY-MM-DD.")
    until: str | None = Field(None, description="`ask --until`: YYYY-MM-DD.")


@router.post("/v1/admin/ask", responses={**ERRORS, 200: {
    "description": "NDJSON events: token {text} as the answer is written, then answer {answer: the record "
                   "`appliance ask --json` prints} or error {message}."}})
async def ask(job: AskJob, request: Request, state: Annotated[AppState, Depends(_authorise)]) -> StreamingResponse:
    """`appliance ask` while this server holds the store: the same use case as in the command's own
    process, through channel `cli`, for the OS user who ran it (X-Appliance-Actor)."""
    from appliance.backends.scope import InvalidScope, Scope
    from appliance.rag import QuestionTooLong, checked_question
    from appliance.usecases import answer

    services = state.services
    try:  # refused before a 200 goes out, with the message `ask` prints in its own process
        checked_question(job.question, services.settings.retrieval.max_question_chars)
        scope = Scope.checked(job.within, (), job.file_types, job.since, job.until) or None
    except (QuestionTooLong, InvalidScope) as exc:
        raise ApiError(400, str(exc)) from None
    groups = None
    if job.as_user is not None:
        user = await anyio.to_thread.run_sync(services.users.get, job.as_user.strip().lower())
        if user is None:
            raise ApiError(404, f"no user named {job.as_user!r} (`appliance users list`)")
        groups = user.principal().groups
    principal = Principal(cli_actor(request), "server", groups, True)
    if services.answer_gate.full():
        state.metrics.answers.labels("busy").inc()
        raise ApiError(503, "the model is busy: every place in the queue is taken; try again shortly",
                       headers={"Retry-After": "5"})
    stop = threading.Event()  # set when the command goes away (Ctrl-C): the model stops at the next token

    def make() -> Iterator[str | Answer]:
        return answer(services, principal, job.question, [], "cli", whole_document=job.whole_document,
                      cancelled=stop.is_set, scope=scope)

    async def events() -> AsyncIterator[str]:
        try:
            async for event in state.answer_events(make, stop):
                if isinstance(event, str):
                    yield json.dumps({"event": "token", "text": event}, ensure_ascii=False) + "\n"
                else:
                    yield json.dumps({"event": "answer", "answer": event.to_dict()}, ensure_ascii=False) + "\n"
        except ApiError as exc:  # after the 200 went out, an error can only be an event of the stream
            yield json.dumps({"event": "error", "message": exc.message}) + "\n"
        except Exception as exc:  # the local administrator's own command: it says what failed, as in-process
            log.exception("handed-over question failed")
            yield json.dumps({"event": "error", "message": f"{type(exc).__name__}: {exc}"}) + "\n"

    return StreamingResponse(events(), media_type="application/x-ndjson")


class AccessChangeOut(BaseModel):
    path: str
    before: list[str]
    after: list[str]
    chunks: int


class AclApplied(BaseModel):
    rules: int = Field(description="Rules now in force.")
    changed: list[AccessChangeOut] = Field(description="Documents whose readers changed (chunks updated in place).")
    dry_run: bool


@router.post("/v1/admin/acl/apply", response_model=AclApplied, responses=ERRORS)
async def apply_acl(request: Request, principal: Admin, dry_run: bool = False) -> AclApplied:
    """Read the `acl:` rules from the settings file again and update the readers of every stored chunk
    they change: a payload update in the store, nothing parsed or embedded. Takes effect on the next question."""
    state: AppState = request.app.state.appliance

    def run() -> AclApplied:
        from appliance.usecases import apply_acl as apply

        fresh = state.services.reload_acl()
        # The local CLI's job (the server.json token) is the `cli` channel, as `acl apply` in its own process.
        via = "cli" if principal.kind == "server" else "api"
        changes = apply(state.services, principal.name, via, fresh, dry_run=dry_run)
        return AclApplied(rules=len(fresh.acl), changed=[AccessChangeOut(**c.__dict__) for c in changes],
                          dry_run=dry_run)

    return await anyio.to_thread.run_sync(run, limiter=state.writer())


@router.get("/v1/admin/audit", responses=ERRORS)
def audit_search(request: Request, principal: Admin, q: str = "", actor: str | None = None,
                 event: str | None = None, since: str | None = None, until: str | None = None,
                 limit: int = Query(200, ge=1, le=10_000)) -> dict[str, Any]:
    """Search the audit trail, newest first (q: text anywhere in a line; since/until: ISO 8601 prefixes)."""
    state: AppState = request.app.state.appliance
    entries = state.services.audit.search(q, actor, event, since, until, limit)
    return {"entries": entries}


@router.get("/v1/admin/audit/export", responses={**ERRORS, 200: {"content": {"application/x-ndjson": {}}}})
def audit_export(request: Request, principal: Admin, q: str = "", actor: str | None = None,
                 event: str | None = None, since: str | None = None, until: str | None = None) -> Response:
    """The matching lines as JSON lines, oldest first, with their hashes (check them with `appliance audit verify`)."""
    import io

    state: AppState = request.app.state.appliance
    out = io.StringIO()
    state.services.audit.export(out, text=q, actor=actor, event=event, since=since, until=until)
    state.services.audit.record("audit_export", principal.name, q=q or None, actor_filter=actor, event_filter=event)
    return Response(out.getvalue(), media_type="application/x-ndjson",
                    headers={"content-disposition": 'attachment; filename="audit.jsonl"'})


@router.get("/v1/admin/users", responses=ERRORS)
def list_users(request: Request, principal: Admin) -> dict[str, Any]:
    """The users, their groups and roles (never a password hash)."""
    state: AppState = request.app.state.appliance
    return {"users": [{"name": u.name, "groups": u.groups, "admin": u.admin, "source": u.source,
                       "disabled": u.disabled, "created_at": u.created_at, "last_sign_in": u.last_sign_in}
                      for u in state.services.users.list()]}
