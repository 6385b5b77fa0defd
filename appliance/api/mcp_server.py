"""The documents as an MCP server (Model Context Protocol: agents, IDE assistants), a door beside /v1.

Two transports, one set of tools (`search`, `ask`, `list_documents`, `read_document`) and the readable
documents as resources (`appliance://documents/{id}`):

- streamable HTTP at `/mcp` on the server's own port (`mount`). Stateless, answered as JSON: each
  JSON-RPC message is one POST, so each one passes `require_principal` (the /v1 dependency: the API
  key or session, the per-user request limit, the `api_key` audit line) before the SDK sees it, and
  any replica answers any message. A missing or wrong key is a 401 there, as on /v1.
- stdio (`appliance mcp`, `serve_stdio`): the key comes from the environment or a file; every tool
  call and resource read runs the same `require_principal` on a request that carries that key, so a
  key revoked mid-session stops working at the next call.

Every tool is a thin adapter over what /v1 runs (appliance/api/documents.py's route functions and
usecases.answer through AppState.answer_events): the same group filter in the store query, the same
question limit, the same input bounds, the same audit lines and metrics.

Host and Origin: the SDK's own DNS-rebinding check (an allow-list of Host names) is turned off,
because GuardMiddleware already answers 421 to any Host but a loopback name on a loopback-only
server, for every path, and beyond loopback a key or session is required; a browser's cookie-borne
POST must come from our own origin (require_principal's same-origin check). An allow-list here
would break the server behind a reverse proxy under its own name.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from functools import partial
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from appliance.api.schemas import ScopeIn

if TYPE_CHECKING:
    from fastapi import FastAPI
    from mcp.server.lowlevel import Server
    from mcp_types import CallToolResult

    from appliance.access.auth import Principal
    from appliance.api.state import AppState
    from appliance.services import Services

NAME = "rag-appliance"
URI_PREFIX = "appliance://documents/"
MAX_QUERY = 100_000  # as SearchRequest: the real bound is retrieval.max_question_chars once whitespace is collapsed
READ_LIMIT = 2000  # chunks one read_document returns (a 500-page report is ~1,500); /v1 lets a client page further
T = TypeVar("T")
Message = MutableMapping[str, Any]


class SearchArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=MAX_QUERY, description="What to look for, in words.")
    scope: ScopeIn | None = Field(None, description="Search only these folders, documents, file types and dates.")
    top_k: int = Field(10, ge=1, le=100, description="Most passages returned.")


class AskArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    question: str = Field(min_length=1, max_length=MAX_QUERY, description="The question, standalone (at most "
                          "retrieval.max_question_chars characters).")
    scope: ScopeIn | None = Field(None, description="Answer only from these folders, documents, file types and "
                                                    "dates.")


class ListArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filter: str | None = Field(None, max_length=500, description="Only documents whose path or title contains "
                                                                 "this text (case-insensitive).")
    limit: int = Field(200, ge=1, le=5000, description="Most documents returned.")


class ReadArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(min_length=1, max_length=64, description="The document id (list_documents, search).")
    pages: list[Annotated[int, Field(ge=1)]] | None = Field(
        None, max_length=1000, description="Only these pages (slides, sheets); all when left out.")


TOOLS: dict[str, tuple[type[BaseModel], str]] = {
    "search": (SearchArgs, "Search the documents you may read: the best-matching passages with file, page, "
                           "section and a link to the file. No answer is generated."),
    "ask": (AskArgs, "Answer a question from the documents you may read, with numbered sources."),
    "list_documents": (ListArgs, "The documents you may read (and your own uploads): id, path, title, pages."),
    "read_document": (ReadArgs, "A document's text in reading order, with page and section of each passage."),
}


class Refused(Exception):
    """What the caller is told when a call is refused: the message of the /v1 error."""


def _refusal(exc: Exception) -> str | None:
    """The caller's message for an error /v1 would answer with a 4xx or 503 (None: an unexpected error)."""
    from appliance.api.errors import ApiError, domain_errors, from_domain

    if isinstance(exc, ApiError):
        return exc.message
    if isinstance(exc, domain_errors()):
        return from_domain(exc).message
    if isinstance(exc, ValidationError):
        return "invalid arguments: " + "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ())) or 'arguments'}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:5])
    return None


class Door:
    """The MCP handlers for one AppState. `caller(request)` says who sends a message: the HTTP request
    (a Starlette Request) or None on stdio; it raises what require_principal raises."""

    def __init__(self, state: AppState, caller: Callable[[Any], Principal], channel: str) -> None:
        self.state = state
        self.caller = caller
        self.channel = channel

    def server(self) -> Server[Any]:
        import mcp_types as types
        from mcp.server.lowlevel import Server

        from appliance.api.openai_compat import sources_footer

        async def list_tools(ctx: Any, params: Any) -> types.ListToolsResult:
            return types.ListToolsResult(tools=[
                types.Tool(name=name, description=text, input_schema=model.model_json_schema())
                for name, (model, text) in TOOLS.items()])

        async def call_tool(ctx: Any, params: types.CallToolRequestParams) -> types.CallToolResult:
            entry = TOOLS.get(params.name)
            if entry is None:
                return _error(f"no tool named {params.name!r}")
            try:
                args = entry[0].model_validate(params.arguments or {})
                principal = await self._who(ctx)
                result = await getattr(self, "_" + params.name)(principal, args, _base_url(ctx))
            except Exception as exc:
                message = _refusal(exc)
                if message is None:
                    raise  # the SDK answers an internal error; the detail stays in the server log
                return _error(message)
            if params.name == "ask":
                final = result.pop("_answer")
                text = final.text + sources_footer(final)
            elif params.name == "read_document":
                text = result.pop("_text")
            else:
                text = json.dumps(result, ensure_ascii=False)
            return types.CallToolResult(content=[types.TextContent(type="text", text=text)],
                                        structured_content=result)

        async def list_resources(ctx: Any, params: Any) -> types.ListResourcesResult:
            principal = await self._checked(self._who(ctx))
            listed = await self._list_documents(principal, ListArgs(limit=5000), _base_url(ctx))
            return types.ListResourcesResult(resources=[
                types.Resource(uri=URI_PREFIX + d["id"], name=d["name"], title=d["title"] or d["name"],
                               description=d["path"], mime_type="text/plain")
                for d in listed["documents"] if d["status"] == "ok"])

        async def list_templates(ctx: Any, params: Any) -> types.ListResourceTemplatesResult:
            return types.ListResourceTemplatesResult(resource_templates=[types.ResourceTemplate(
                uri_template=URI_PREFIX + "{id}", name="document", mime_type="text/plain",
                description="A document's text in reading order (ids from list_documents or resources/list).")])

        async def read_resource(ctx: Any, params: types.ReadResourceRequestParams) -> types.ReadResourceResult:
            uri = str(params.uri)
            principal = await self._checked(self._who(ctx))
            if not uri.startswith(URI_PREFIX):
                raise _mcp_error(f"no resource {uri!r}: documents are {URI_PREFIX}{{id}}")
            read = await self._checked(self._read_document(principal, ReadArgs(id=uri[len(URI_PREFIX):]),
                                                           _base_url(ctx)))
            return types.ReadResourceResult(contents=[
                types.TextResourceContents(uri=uri, text=read["_text"], mime_type="text/plain")])

        return Server(NAME, version="1", title="RAG appliance",
                      instructions="Search and read the company documents this key may read, and ask questions "
                                   "answered from them with sources.",
                      on_list_tools=list_tools, on_call_tool=call_tool, on_list_resources=list_resources,
                      on_list_resource_templates=list_templates, on_read_resource=read_resource)

    async def _checked(self, work: Awaitable[T]) -> T:
        """`work`, with a refusal answered as an MCP error (resources have no error result of their own)."""
        try:
            return await work
        except Exception as exc:
            message = _refusal(exc)
            if message is None:
                raise
            raise _mcp_error(message) from None

    async def _who(self, ctx: Any) -> Principal:
        from anyio import to_thread

        return await to_thread.run_sync(self.caller, ctx.request)

    async def _run(self, func: Callable[..., T], *args: Any) -> T:
        from anyio import to_thread

        return await to_thread.run_sync(partial(func, *args))

    async def _search(self, principal: Principal, args: SearchArgs, base: str) -> dict[str, Any]:
        from appliance.api import documents
        from appliance.api.schemas import SearchRequest

        body = SearchRequest(query=args.query, top_k=args.top_k, scope=args.scope)
        found = await self._run(documents.search, body, self.state, principal)  # limits, audit, metrics: /v1's
        out = found.model_dump()
        for hit in out["results"]:
            hit["link"] = _link(base, hit["doc_id"])
        return out

    async def _ask(self, principal: Principal, args: AskArgs, base: str) -> dict[str, Any]:
        import threading

        from appliance.api.errors import ApiError
        from appliance.api.openai_compat import source_out
        from appliance.rag import Answer, checked_question
        from appliance.usecases import answer

        services = self.state.services
        services.limits.question(principal)  # RateLimited, as chat/completions
        question = checked_question(args.question, services.settings.retrieval.max_question_chars)
        if not question:
            raise ApiError(422, "invalid request: question: is blank")
        scope = args.scope.to_scope() if args.scope else None
        stop = threading.Event()
        final: Answer | None = None
        try:
            async for event in self.state.answer_events(
                    lambda: answer(services, principal, question, [], self.channel, cancelled=stop.is_set,
                                   scope=scope), stop):
                if isinstance(event, Answer):
                    final = event
        finally:
            stop.set()  # the client cancelled, or the answer is complete: the slot is given back either way
        if final is None:
            raise ApiError(503, "the answer was cancelled")
        sources = [{**source_out(s).model_dump(), "link": _link(base, s.doc_id)} for s in final.sources]
        return {"answer": final.text, "grounded": final.grounded, "match": final.match,
                "unsupported": final.unsupported, "sources": sources, "_answer": final}

    async def _list_documents(self, principal: Principal, args: ListArgs, base: str) -> dict[str, Any]:
        from appliance.api import documents

        listed = await self._run(documents.list_documents, self.state, principal, False)
        needle = (args.filter or "").strip().lower()
        docs = [d for d in listed.documents if not needle or needle in d.path.lower() or needle in d.title.lower()]
        return {"total": len(docs), "documents": [
            {**d.model_dump(include={"id", "path", "name", "title", "status", "pages", "chunks", "date", "author",
                                     "modified", "subject"}), "link": _link(base, d.id)}
            for d in docs[: args.limit]]}

    async def _read_document(self, principal: Principal, args: ReadArgs, base: str) -> dict[str, Any]:
        from appliance.api import documents

        doc = await self._run(documents.get_document, args.id, self.state, principal)  # 404 unless visible
        read = await self._run(documents.document_chunks, doc.id, self.state, principal, READ_LIMIT)  # audited
        wanted = set(args.pages or ())
        chunks = [c.model_dump() for c in read.chunks if not wanted or c.page in wanted]
        parts: list[str] = []
        page: int | None = None
        for c in chunks:
            if c["page"] is not None and c["page"] != page:
                page = c["page"]
                parts.append(f"[page {page}]")
            parts.append(c["text"])
        note = None
        if wanted and not any(c.page is not None for c in read.chunks):
            note = f"{doc.name} has no pages: leave `pages` out to read all of it"
        elif len(read.chunks) >= READ_LIMIT:
            note = f"only the first {READ_LIMIT} passages (GET /v1/documents/{doc.id}/chunks?limit= reads more)"
        return {"id": doc.id, "name": doc.name, "path": doc.path, "title": doc.title, "pages": doc.pages,
                "link": _link(base, doc.id), "chunks": chunks, "note": note,
                "_text": "\n\n".join(parts) or (note or f"{doc.name}: nothing readable on those pages")}


def _error(message: str) -> CallToolResult:
    import mcp_types as types

    return types.CallToolResult(content=[types.TextContent(type="text", text=message)], is_error=True)


def _mcp_error(message: str) -> Exception:
    from mcp.shared.exceptions import MCPError
    from mcp_types import INVALID_PARAMS

    return MCPError(code=INVALID_PARAMS, message=message)


def _base_url(ctx: Any) -> str:
    """The server's URL as the client reached it (root path included); empty on stdio (links are then paths)."""
    request = ctx.request
    return str(request.base_url).rstrip("/") if request is not None else ""


def _link(base: str, doc_id: str) -> str:
    return f"{base}/v1/documents/{doc_id}/file"


# --- streamable HTTP at /mcp ----------------------------------------------------------------------------------


def mount(app: FastAPI, state: AppState) -> None:
    """Serve MCP at /mcp on `app`: the route, and the SDK's session manager in the app's lifespan."""
    import contextlib
    from collections.abc import AsyncIterator

    from mcp.server.streamable_http_manager import StreamableHTTPSessionManager
    from mcp.server.transport_security import TransportSecuritySettings

    def caller(request: Any) -> Principal:
        principal: Principal = request.scope["state"]["mcp_principal"]  # set by `door` below
        return principal

    manager = StreamableHTTPSessionManager(
        app=Door(state, caller, "mcp").server(), json_response=True, stateless=True,
        # Host and Origin are checked by GuardMiddleware and require_principal (the module's docstring).
        security_settings=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        max_request_body_size=state.services.settings.server.max_request_kb << 10)

    async def door(scope: Message, receive: Callable[[], Awaitable[Message]],
                   send: Callable[[Message], Awaitable[None]]) -> None:
        from anyio import to_thread
        from fastapi.responses import JSONResponse
        from starlette.requests import Request

        from appliance.api.errors import ApiError
        from appliance.api.security import require_principal

        if scope.get("method") != "POST":  # stateless: no server-to-client stream to open (GET) or end (DELETE)
            error = ApiError(405, "/mcp takes one POST per message (stateless, JSON answers)",
                             headers={"Allow": "POST"})
            await JSONResponse(error.body(), status_code=405, headers=error.headers)(scope, receive, send)
            return
        try:
            principal = await to_thread.run_sync(require_principal, Request(scope, receive), None)
        except Exception as exc:
            error = _http_error(exc)
            await JSONResponse(error.body(), status_code=error.status, headers=error.headers)(scope, receive, send)
            return
        scope.setdefault("state", {})["mcp_principal"] = principal
        await manager.handle_request(scope, receive, send)

    from starlette.routing import Route

    app.router.routes.append(Route("/mcp", endpoint=_Asgi(door), include_in_schema=False))
    previous = app.router.lifespan_context

    @contextlib.asynccontextmanager
    async def lifespan(application: Any) -> AsyncIterator[Any]:
        async with manager.run(), previous(application) as inner:
            yield inner

    app.router.lifespan_context = lifespan


class _Asgi:
    """An ASGI callable as a Starlette route endpoint (a plain function would be taken for a request handler)."""

    def __init__(self, app: Callable[..., Awaitable[None]]) -> None:
        self._app = app

    async def __call__(self, scope: Message, receive: Any, send: Any) -> None:
        await self._app(scope, receive, send)


def _http_error(exc: Exception) -> Any:
    from appliance.api.errors import ApiError, domain_errors, from_domain

    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, domain_errors()):
        return from_domain(exc)  # RateLimited: 429 with Retry-After
    raise exc


# --- stdio (`appliance mcp`) ----------------------------------------------------------------------------------


def stdio_caller(state: AppState, key: str) -> Callable[[Any], Principal]:
    """Who sends a stdio message: `require_principal` on a request that carries the key, so the key is
    checked, rate-limited and audited at every call exactly as on /v1 (no session, no local trust)."""
    from types import SimpleNamespace

    from starlette.requests import Request

    from appliance.api.security import require_principal

    app = SimpleNamespace(state=SimpleNamespace(appliance=state))
    headers = [(b"authorization", b"Bearer " + key.encode("latin-1", "replace"))]

    def caller(request: Any) -> Principal:
        scope = {"type": "http", "method": "POST", "path": "/mcp", "raw_path": b"/mcp", "query_string": b"",
                 "headers": headers, "app": app, "client": None, "server": None}
        return require_principal(Request(scope), None)

    return caller


def serve_stdio(services: Services, key: str) -> None:
    """Serve MCP over stdin/stdout with `key`'s permissions until the client closes stdin. Refuses a
    key that does not verify (Refused) before serving anything."""
    import anyio
    from mcp.server.stdio import stdio_server

    from appliance.api.state import AppState

    state = AppState(services)
    caller = stdio_caller(state, key)
    try:
        caller(None)
    except Exception as exc:
        message = _refusal(exc)
        if message is None:
            raise
        raise Refused(message) from None
    server = Door(state, caller, "mcp-stdio").server()

    async def run() -> None:
        async with stdio_server() as (read, write):
            await server.run(read, write, server.create_initialization_options())

    anyio.run(run)
