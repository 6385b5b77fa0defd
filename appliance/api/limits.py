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


class BodyLimitMiddleware:
    def __init__(self, app: Any, max_bytes: int) -> None:
        self._app = app
        self._max = max_bytes

    async def __call__(self, scope: MutableMapping[str, Any], receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        too_big = ApiError(413, f"request body larger than {self._max >> 20} MB "
                                "(server.max_upload_files x ingest.max_file_mb)")
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self._max:
            response = _json(too_big)
            await response(scope, receive, send)
            return
        seen = 0

        async def counted() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self._max:
                    raise too_big  # the route's error handler answers it as JSON
            return message

        await self._app(scope, counted, send)


def _json(error: ApiError) -> Any:
    from fastapi.responses import JSONResponse

    return JSONResponse(error.body(), status_code=error.status)
