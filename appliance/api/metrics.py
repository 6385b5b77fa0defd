"""HTTP request counts and latencies by route, into the server's metrics (appliance/metrics.py)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from appliance.metrics import Metrics

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path and path != "/":
        return str(path)  # the template (/v1/documents/{doc_id}), not the id: bounded label values
    return "ui" if not str(scope.get("path", "")).startswith("/v1") else "unmatched"


class MetricsMiddleware:
    """Pure ASGI (not BaseHTTPMiddleware), so streamed answers still see the client disconnect."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self._app = app
        self._metrics = metrics

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Message]],
                       send: Callable[[Message], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            route = _route_of(scope)
            method = scope.get("method", "")
            method = method if method in _METHODS else "other"  # the request line is the client's to invent
            self._metrics.requests.labels(method, route, str(status)).inc()
            self._metrics.latency.labels(route).observe(time.perf_counter() - started)
