"""What the chat page's Gradio routes accept: files only from Gradio's upload cache, and each user's
fair share of requests and of the answer queue.

Gradio copies any file an event's input names (a `FileData` path, even one the client typed) into
its cache and serves it back, checking the path only once `launch()` has run; mounted in FastAPI it
never has. So, before Gradio sees an event, every file reference in its JSON must point inside the
upload cache (where only the page's uploads land), and `/gradio_api/file=` serves nothing else. The
Gradio app is also told what `launch()` would set (`has_launched`, blocked paths), so its own check
holds too: two independent locks on the same door.
"""

from __future__ import annotations

import json
import os
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

if TYPE_CHECKING:
    from appliance.api.state import AppState
    from appliance.settings import Settings

Message = MutableMapping[str, Any]
PREFIX = "/gradio_api/"
UPLOAD = "/gradio_api/upload"
FILE = "/gradio_api/file="
# Requests a page load makes by the dozen (scripts, styles, fonts): not counted against the user's rate.
STATIC = ("/assets/", "/static/", "/favicon.ico", "/theme.css", "/gradio_api/file=")
# Gradio routes that put an event in the shared queue.
QUEUED = ("/gradio_api/queue/join", "/gradio_api/call/")
# Gradio routes the page never uses: the v2 REST door and the direct /run and /api (closed with api_open=False,
# but answering plain-text 500s and logging tracebacks).
# Nor its schema, run history and dev-mode routes, which also tell Gradio's version (an external attack run).
CLOSED = ("/gradio_api/call/v2/", "/gradio_api/run/", "/gradio_api/api/", "/gradio_api/openapi.json/",
          "/gradio_api/runs/", "/gradio_api/dev/")
FREE_FLOOR = 1 << 30  # an upload into Gradio's cache never leaves less free space than this
# Routes whose path names a page session or an event: /heartbeat/{session}, /stream/{session or event}/...,
# /call/{api}/{event}.
_PATH_KEYS = {"/gradio_api/heartbeat/": 0, "/gradio_api/stream/": 0, "/gradio_api/call/": 1}


class SessionOwners:
    """Which user opened each page session and event. Gradio keys a session's state, its event stream
    and its cancellation by a `session_hash` the browser picks and an event id it returns; anyone
    naming them would read that session's answers, run events on its state or stop them. So the
    first user to name one owns it, and nobody else may use it."""

    def __init__(self, most: int = 200_000) -> None:
        self._owner: OrderedDict[str, str] = OrderedDict()
        self._most = most
        self._lock = threading.Lock()

    def claim(self, key: str, user: str) -> bool:
        """Whether `user` may use `key` (a session hash or event id); the first to name it owns it."""
        with self._lock:
            owner = self._owner.get(key)
            if owner is None:
                self._owner[key] = user
                if len(self._owner) > self._most:
                    self._owner.popitem(last=False)
                return True
            self._owner.move_to_end(key)
            return owner == user


def session_keys(method: str, path: str, query: bytes, payload: Any) -> list[str]:
    """The session hashes and event ids a Gradio request names, in its path, query or JSON body."""
    from urllib.parse import parse_qs

    keys = [v for v in parse_qs(query.decode("latin-1")).get("session_hash", []) if v]
    for prefix, index in _PATH_KEYS.items():
        if path.startswith(prefix) and (method == "GET" or not prefix.endswith("/call/")):
            parts = path[len(prefix):].split("/")
            if len(parts) > index and parts[index]:
                keys.append(parts[index])
    if isinstance(payload, dict):
        keys += [str(payload[k]) for k in ("session_hash", "event_id") if isinstance(payload.get(k), (str, int))]
    return keys


def file_references(value: Any) -> list[str]:
    """Every path a JSON value names as a file: a dict with a string "path" (Gradio's FileData, with
    or without its meta) anywhere inside it."""
    found: list[str] = []
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if isinstance(item.get("path"), str):
                found.append(item["path"])
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return found


def inside(path: str, folder: Path) -> bool:
    """Whether `path` (links and `..` resolved) is a file below `folder`."""
    if not path or "\x00" in path or "://" in path:
        return False
    real = os.path.realpath(path)
    root = os.path.realpath(folder)
    return real.startswith(root + os.sep) and os.path.isfile(real)


def blocked_paths(settings: Settings, cache: Path) -> list[str]:
    """What Gradio must never serve or copy: the data directory and every configured folder, but for
    the branch that leads to its own cache (it checks a block list before anything else)."""
    data = settings.data_dir.absolute()
    known = {"server.json", "users.sqlite", "manifest.sqlite", "conversations.sqlite", "keys.sqlite",
             "store", "uploads", "audit", "logs", "feedback.jsonl", "eval", "backups"}
    blocked: set[Path] = set()

    def block_beside(folder: Path, keep: Path) -> None:
        names = set(os.listdir(folder)) if folder.is_dir() else set()
        blocked.update(folder / n for n in names | known if not (keep == folder / n or keep.is_relative_to(folder / n)))

    block_beside(data, cache)
    for parent in cache.parents:  # siblings of every folder between the data directory and the cache
        if parent == data or not parent.is_relative_to(data):
            break
        block_beside(parent, cache)
    for folder in (settings.upload_dir, settings.log_dir, settings.shared_dir, settings.audit.dir):
        if folder is not None and not cache.is_relative_to(Path(folder).absolute()):
            blocked.add(Path(folder).absolute())
    return sorted(str(p) for p in blocked)


def harden_mounted_gradio(blocks: Any, settings: Settings, cache: Path) -> None:
    """Set on a mounted Gradio app what `launch()` would: its file checks are skipped until
    `has_launched` is true, and its block list is empty."""
    blocks.has_launched = True
    blocks.allowed_paths = []
    blocks.blocked_paths = blocked_paths(settings, cache)


class GradioGuard:
    """Before Gradio sees a request of a signed-in user: the user's request rate (shared with /v1),
    the share of the answer queue one user may fill, and no file but an uploaded one."""

    def __init__(self, app: Any, state: AppState, cache: Path, blocks: Any) -> None:
        self._app = app
        self._state = state
        self._cache = cache
        self._blocks = blocks
        self._share = state.services.settings.server.max_queued_per_user
        self.owners = SessionOwners()
        # The page's events with a Python function behind them, fixed once the page is built.
        self._fns = {i for i, fn in getattr(blocks, "fns", {}).items() if getattr(fn, "fn", None) is not None}
        self._api_names = {blocks.fns[i].api_name for i in self._fns if blocks.fns[i].api_name}

    async def __call__(self, scope: Message, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        path: str = scope.get("path", "")
        if scope["type"] != "http" or path.startswith("/v1/") or path == "/v1":
            await self._app(scope, receive, send)
            return
        from appliance.api.errors import ApiError, domain_errors, from_domain

        principal = scope.get("state", {}).get("principal")
        limited = principal is not None and principal.fair_share_key is not None
        try:
            if limited and not path.startswith(STATIC):
                self._state.services.limits.request(principal)
            if path.startswith(FILE) and not inside(unquote(path[len(FILE):]), self._cache):
                raise ApiError(404, "no such file")
            if (path.rstrip("/") + "/").startswith(CLOSED):
                raise ApiError(404, "no such endpoint")
            self._check_event_names(scope.get("method", ""), path)
            _drop_forwarding(scope)
            if path == UPLOAD and scope.get("method") == "POST":
                self._check_upload(principal, scope)
            if path.rstrip("/") == "/config":
                await self._app(scope, receive, _without_version(send))
                return
            if not path.startswith(PREFIX):
                await self._app(scope, receive, send)
                return
            post = scope.get("method") == "POST" and path != UPLOAD
            body = await _read_body(receive) if post else b""
            payload = _json(body)
            user = principal.name if principal is not None else ""
            named = session_keys(scope.get("method", ""), path, scope.get("query_string", b""), payload)
            if any(not self.owners.claim(k, user) for k in named):
                raise ApiError(403, "this page session belongs to another user: reload the page")
            if not post:
                await self._app(scope, receive, send)
                return
            if path == "/gradio_api/queue/join" and not self._known_fn(payload):
                raise ApiError(400, "no such event of the page")
            if any(not inside(p, self._cache) for p in file_references(payload)):
                raise ApiError(400, "a file must be uploaded through the page; an event may not name one")
            if limited and path.startswith(QUEUED):
                self._check_share(principal.name)
        except ApiError as exc:
            await _answer(exc, scope, receive, send)
            return
        except domain_errors() as exc:
            await _answer(from_domain(exc), scope, receive, send)
            return
        reply = self._owning_events(send, user) if path.startswith(QUEUED) else send
        await self._app(scope, _replay(body, receive), reply)

    def _owning_events(self, send: Callable[[Message], Awaitable[None]], user: str
                       ) -> Callable[[Message], Awaitable[None]]:
        """The event id a queued request gets back is its caller's."""
        async def reply(message: Message) -> None:
            if message["type"] == "http.response.body":
                answer = _json(message.get("body", b""))
                if isinstance(answer, dict) and isinstance(answer.get("event_id"), str):
                    self.owners.claim(answer["event_id"], user)
            await send(message)

        return reply

    def _known_fn(self, payload: Any) -> bool:
        index = payload.get("fn_index") if isinstance(payload, dict) else None
        return isinstance(index, int) and not isinstance(index, bool) and index in self._fns

    def _check_event_names(self, method: str, path: str) -> None:
        """/call/{name} and /call/{name}/{event}: only the page's named events and a live event of
        them (Gradio answers others with a plain-text 500, or a stream it breaks off)."""
        from appliance.api.errors import ApiError

        if not path.startswith("/gradio_api/call/"):
            return
        parts = path[len("/gradio_api/call/"):].strip("/").split("/")
        if not parts[0] or parts[0] not in self._api_names or len(parts) > 2:
            raise ApiError(404, "no such endpoint")
        if method == "GET" and len(parts) == 2:
            queue = getattr(self._blocks, "_queue", None)
            live = parts[1] in getattr(queue, "event_ids_to_events", {}) or any(
                parts[1] in ids for ids in getattr(queue, "pending_event_ids_session", {}).values())
            if not live:
                raise ApiError(404, "no such event (it finished, and its result was read already)")

    def _check_upload(self, principal: Any, scope: Message) -> None:
        """The page's uploads land in Gradio's cache before any event sees them: only callers who may
        upload, and never past the last GiB of the disk."""
        import shutil

        from appliance.api.errors import ApiError
        from appliance.uploads import check_uploader

        if principal is not None:
            check_uploader(principal)  # UploadRefused: answered with its status
        declared = dict(scope.get("headers") or []).get(b"content-length", b"0")
        size = int(declared) if declared.isdigit() else 0
        if shutil.disk_usage(self._cache).free - size < FREE_FLOOR:
            raise ApiError(507, "the server's disk is nearly full: the upload is refused (tell the administrator)")

    def _check_share(self, user: str) -> None:
        """A user's events waiting in the queue: at most server.max_queued_per_user, so one user cannot
        take every place in it (Gradio's own bound is for everyone together)."""
        from appliance.api.errors import ApiError

        queue = getattr(self._blocks, "_queue", None)
        waiting = sum(1 for q in getattr(queue, "event_queue_per_concurrency_id", {}).values()
                      for event in q.queue if event.username == user)
        if waiting >= self._share:
            raise ApiError(429, f"you have {waiting} requests waiting already (server.max_queued_per_user): "
                                "wait for them to finish", headers={"Retry-After": "5"})


def _without_version(send: Callable[[Message], Awaitable[None]]) -> Callable[[Message], Awaitable[None]]:
    """/config's JSON without Gradio's version (the page does not need it; a scanner would)."""
    start: Message | None = None
    parts: list[bytes] = []

    async def rewrite(message: Message) -> None:
        nonlocal start
        if message["type"] == "http.response.start":
            start = message
            return
        if message["type"] != "http.response.body" or start is None:
            await send(message)
            return
        parts.append(message.get("body", b""))
        if message.get("more_body"):
            return
        body = b"".join(parts)
        try:
            config = json.loads(body)
            if isinstance(config, dict):
                config.pop("version", None)
                body = json.dumps(config).encode()
        except ValueError:
            pass
        headers = [(k, v) for k, v in start.get("headers", []) if k.lower() != b"content-length"]
        await send({**start, "headers": [*headers, (b"content-length", str(len(body)).encode())]})
        await send({"type": "http.response.body", "body": body, "more_body": False})

    return rewrite


_FORWARDING = (b"x-forwarded-host", b"x-forwarded-proto", b"x-forwarded-port", b"x-forwarded-prefix", b"forwarded")


def _drop_forwarding(scope: Message) -> None:
    """Gradio builds its page's URLs from X-Forwarded-Host/-Proto whoever sends them; uvicorn has
    already applied what a trusted proxy said (server.trusted_proxies) to the scope, so Gradio needs none."""
    scope["headers"] = [(k, v) for k, v in scope.get("headers", []) if k.lower() not in _FORWARDING]


def _json(body: bytes) -> Any:
    try:
        return json.loads(body) if body else None
    except ValueError:
        return None  # not JSON: Gradio refuses it, and it names no file


async def _read_body(receive: Callable[[], Awaitable[Message]]) -> bytes:
    """The whole body (the body limit in front of this has capped its size)."""
    parts = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            break
        parts.append(message.get("body", b""))
        if not message.get("more_body"):
            break
    return b"".join(parts)


def _replay(body: bytes, receive: Callable[[], Awaitable[Message]]) -> Callable[[], Awaitable[Message]]:
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return again


async def _answer(exc: Any, scope: Message, receive: Any, send: Any) -> None:
    from fastapi.responses import JSONResponse

    await JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)(scope, receive, send)
