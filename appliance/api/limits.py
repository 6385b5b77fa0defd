"""A cap on request bodies, checked before anything is spooled to disk.

Starlette reads a multipart upload into temporary files before a route sees it, so a size check in
the route comes too late for a 50 GB body; this one refuses a declared Content-Length at once and
stops counting bytes as they arrive when none is declared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from appliance.api.errors import ApiError

Message = MutableMapping[str, Any]


# The only routes that take files; every other body (JSON, forms, Gradio events) gets the small cap.
UPLOAD_ROUTES = frozenset({"/v1/documents", "/gradio_api/upload"})


class BodyLimitMiddleware:
    """Uploads may be as large as `max_upload_bytes`; any other body at most `max_other_bytes`, so a
    400 MB JSON document is refused with 413 before it is read (it cost 1.2 GB of memory parsed)."""

    def __init__(self, app: Any, max_upload_bytes: int, max_other_bytes: int) -> None:
        self._app = app
        self._upload = max_upload_bytes
        self._other = max_other_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        if scope.get("path", "") in UPLOAD_ROUTES and scope.get("method") == "POST":
            limit = self._upload
            too_big = ApiError(413, f"request body larger than {limit >> 20} MB "
                                    "(server.max_upload_files x ingest.max_file_mb)")
        else:
            limit = self._other
            too_big = ApiError(413, f"request body larger than {limit >> 10} KB (server.max_request_kb); "
                                    "files go to POST /v1/documents")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            response = _json(too_big if declared.isdigit() else ApiError(400, "invalid Content-Length"))
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise too_big  # the route's error handler answers it as JSON
            return message

        await self._app(scope, counted, send)


def _json(error: ApiError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status)
