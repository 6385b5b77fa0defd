"""Who a request is, and the guards every request passes: sign-in, CSRF, rate limits, headers.

A request is one of: the local administrator's CLI (the token of server.json, from this machine
only), an API key (`Authorization: Bearer rag-...`, or `x-api-key: rag-...` as Anthropic's clients
send it), a signed-in browser (the session cookie), or anonymous, which is allowed only where
sign-in is not required (loopback with no users: the machine's own operator). The UI guard answers
401 to anonymous requests for every path but the sign-in pages and the health probes, before Gradio
sees them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from appliance.access.auth import EVERYONE, LOCAL, Principal
from appliance.access.auth import SESSION_COOKIE as COOKIE
from appliance.api.csrf import check_same_origin
from appliance.api.errors import ApiError

if TYPE_CHECKING:
    from appliance.api.state import AppState

MISSING = ("sign in, or send an API key: 'Authorization: Bearer <key>' or 'x-api-key: <key>' (an administrator "
           "creates one with `appliance keys create NAME`)")
_CLI_ACTOR = re.compile(r"^cli:[A-Za-z0-9._-]{1,64}$")
PUBLIC = frozenset({"/healthz", "/readyz", "/login", "/logout"})
PUBLIC_PREFIX = "/auth/oidc/"
SAFE_METHODS = ("GET", "HEAD", "OPTIONS")
# Gradio's page needs inline scripts and styles; nothing may be fetched from another origin, and the
# page may not be framed (clickjacking).
CSP = ("default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; style-src 'self' 'unsafe-inline'; "
       "img-src 'self' data: blob:; media-src 'self' blob:; font-src 'self' data:; connect-src 'self'; "
       "worker-src 'self' blob:; frame-ancestors 'none'; form-action 'self'; base-uri 'self'; object-src 'none'")
HEADERS = {"x-content-type-options": "nosniff", "x-frame-options": "DENY", "referrer-policy": "same-origin",
           "content-security-policy": CSP, "cross-origin-opener-policy": "same-origin",
           "permissions-policy": "camera=(), microphone=(), geolocation=(), payment=()"}


_PORT = re.compile(r":[0-9]{1,5}$")


def loopback_host(host: str) -> bool:
    """Whether a Host header names this machine's loopback exactly: localhost, [::1] or an IPv4 address
    in 127.0.0.0/8, with an optional port. `127.0.0.1.rebind.example` and an empty Host are not."""
    import ipaddress

    name = _PORT.sub("", host.strip().lower()) if not host.strip().endswith("]") else host.strip().lower()
    if name in ("localhost", "[::1]"):
        return True
    try:
        return ipaddress.IPv4Address(name) in ipaddress.IPv4Network("127.0.0.0/8")
    except ValueError:
        return False


# Declared for the OpenAPI schema (clients see that /v1 takes a bearer key); the guard reads the key itself.
_BEARER = HTTPBearer(auto_error=False, description="An API key from `appliance keys create NAME`.")


def resolve(request: Request, state: AppState, token: str | None) -> Principal | None:
    """The principal of a request, or None when it is anonymous and sign-in is required."""
    from appliance.api.state import local_request

    services = state.services
    if token:
        if state.admin_token and local_request(request) \
                and secrets.compare_digest(token.encode(), state.admin_token.encode()):
            # The local administrator's CLI; it names the OS user who ran it, for the audit trail.
            return Principal(cli_actor(request), "server", None, True)
        key = services.api_keys.verify(token)
        if key is not None:
            if key.user is None:
                return Principal(f"key:{key.name}", "key", frozenset([EVERYONE]), key.admin)
            user = services.users.get(key.user)
            if user is None or user.disabled:
                raise ApiError(401, f"API key {key.name!r} belongs to {key.user!r}, who is disabled or removed",
                               headers={"WWW-Authenticate": "Bearer"})
            p = user.principal()
            return Principal(user.name, "key", p.groups, user.admin or key.admin)
        if services.auth_required() or services.settings.server.api_key_required:
            raise ApiError(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
        # OpenAI clients always send some key ("none", "sk-..."): where no sign-in is needed, any goes.
    session = services.users.session(request.cookies.get(COOKIE))
    if session is not None:
        return session.user.principal()
    if services.auth_required():
        return None
    # Open to the machine's own operator only: a request relayed by a proxy on this host is someone else's.
    return LOCAL if local_request(request) else None


def _bearer(request: Any) -> str | None:
    """The API key or server.json token a request carries (Authorization: Bearer, or X-Api-Key)."""
    auth = request.headers.get("authorization", "")
    token = auth[7:].strip() if auth.lower().startswith("bearer ") else request.headers.get("x-api-key")
    return token or None


def cli_actor(request: Request) -> str:
    """The OS user the local CLI names (X-Appliance-Actor) when it hands a job over, for the audit trail."""
    who = request.headers.get("x-appliance-actor", "")
    return who if _CLI_ACTOR.match(who) else "server.json"


def require_principal(request: Request,
                      credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> Principal:
    """Every /v1 route's dependency: who is asking, rate-limited; a browser's writes must come from our page."""
    state: AppState = request.app.state.appliance
    token = _bearer(request)
    # The guard already resolved it for this request (one look-up of the key or session, not two).
    principal = request.scope.get("state", {}).get("principal") or resolve(request, state, token)
    if principal is None or (principal is LOCAL and state.services.settings.server.api_key_required):
        raise ApiError(401, MISSING, headers={"WWW-Authenticate": "Bearer"})
    if token is None and request.method not in SAFE_METHODS:  # a browser's cookie, or the local operator
        check_same_origin(request)
    # The machine's own operator (loopback without sign-in, or server.json) reads everything anyway:
    # the limits guard against one user or key starving the others.
    state.services.limits.request(principal)
    if principal.kind == "key":
        state.services.audit.record("api_key", principal.name, method=request.method, route=request.url.path)
    return principal


def require_admin(principal: Annotated[Principal, Depends(require_principal)]) -> Principal:
    if not principal.admin:
        raise ApiError(403, "this needs an administrator")
    return principal


Message = MutableMapping[str, Any]


class GuardMiddleware:
    """Security headers on every response; 401 for anonymous requests where sign-in is required,
    before any body is read or any route (Gradio's included) sees them."""

    def __init__(self, app: Any, state: AppState) -> None:
        self._app = app
        self._state = state

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self._app(scope, receive, send)
            return
        path: str = scope.get("path", "")

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                headers += [(k.encode(), v.encode()) for k, v in HEADERS.items() if k.encode() not in present]
                if scope.get("scheme") in ("https", "wss") and b"strict-transport-security" not in present:
                    # "https" only when a trusted proxy (server.trusted_proxies) said so: a backstop for proxies
                    # that do not add HSTS themselves.
                    headers.append((b"strict-transport-security", b"max-age=63072000"))
                if (is_api_path(path) or path in ("/", "/config", "/config/")) and b"cache-control" not in present:
                    headers.append((b"cache-control", b"no-store"))
                message["headers"] = headers
            await send(message)

        if not self._host_allowed(scope):
            from fastapi.responses import PlainTextResponse

            # DNS rebinding: a page of another site, resolved to 127.0.0.1, must not reach a loopback server.
            await PlainTextResponse("unexpected Host header", status_code=421)(scope, receive, with_headers)
            return
        if path in PUBLIC or path.startswith(PUBLIC_PREFIX):
            await self._app(scope, receive, with_headers)
            return
        from anyio import to_thread
        from fastapi.responses import JSONResponse
        from starlette.requests import HTTPConnection
        from starlette.requests import Request as StarletteRequest

        request: Any = StarletteRequest(scope) if scope["type"] == "http" else HTTPConnection(scope)
        api = is_api_path(path)
        try:
            principal = await to_thread.run_sync(self._principal, request)
        except ApiError as exc:  # a wrong API key: say so
            refused = JSONResponse(exc.body(path), status_code=exc.status, headers=exc.headers)
            await refused(scope, receive, with_headers)
            return
        if principal is None:
            if api:  # refused before the body is read: an anonymous upload is never spooled
                error = ApiError(401, MISSING, headers={"WWW-Authenticate": "Bearer"})
                refused = JSONResponse(error.body(path), status_code=401, headers=error.headers)
                await refused(scope, receive, with_headers)
            else:
                await self._refuse(scope, receive, with_headers, request)
            return
        scope.setdefault("state", {})["principal"] = principal
        if api:  # the route's dependency checks the rest (CSRF, rate, keys on loopback), with JSON errors
            await self._app(scope, receive, with_headers)
            return
        if scope["type"] == "http" and request.method not in SAFE_METHODS and not _bearer(request):
            try:
                check_same_origin(request)
            except ApiError as exc:
                await JSONResponse(exc.body(), status_code=exc.status)(scope, receive, with_headers)
                return
        await self._app(scope, receive, with_headers)

    def _principal(self, request: Any) -> Principal | None:
        return resolve(request, self._state, _bearer(request))

    def _host_allowed(self, scope: Message) -> bool:
        """On a loopback-only server, only loopback names may be in Host (beyond loopback, sign-in guards)."""
        if not self._state.services.settings.server.loopback_only:
            return True
        host = dict(scope.get("headers") or []).get(b"host", b"").decode("latin-1")
        return loopback_host(host)

    async def _refuse(self, scope: Message, receive: Any, send: Any, request: Any) -> None:
        from fastapi.responses import JSONResponse

        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 4401})
            return
        if request.method == "GET" and "text/html" in request.headers.get("accept", ""):
            from appliance.api.signin import login_page

            response: Any = login_page(self._state, next_path=request.url.path, status=401)
        else:
            response = JSONResponse(ApiError(401, "sign in first (GET /login)").body(), status_code=401)
        await response(scope, receive, send)


def gradio_user(state: AppState) -> Callable[[Any], str | None]:
    """Gradio's auth_dependency: the name of the principal our guard resolved for this request."""

    def user(request: Any) -> str | None:
        principal = request.scope.get("state", {}).get("principal")
        if principal is None:
            try:
                principal = resolve(request, state, _bearer(request))
            except ApiError:
                return None
        return None if principal is None else str(principal.name)

    return user


def is_api_path(path: str) -> bool:
    """The programs' doors (/v1 and the MCP endpoint): JSON errors, `WWW-Authenticate: Bearer`, no caching."""
    return path in ("/v1", "/mcp") or path.startswith(("/v1/", "/mcp/"))
