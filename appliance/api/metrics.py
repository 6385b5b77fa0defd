"""Prometheus metrics of one app, in a registry of its own (two apps in one process never collide)."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Awaitable[None]]

_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS"})
_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter("appliance_http_requests", "HTTP requests by route and status.",
                                ["method", "route", "status"], registry=r)
        self.latency = Histogram("appliance_http_request_seconds", "Time to the end of the response.",
                                 ["route"], buckets=_LATENCY_BUCKETS, registry=r)
        self.answers = Counter("appliance_answers", "Answers by outcome: answered, not_found, busy, cancelled, error.",
                               ["outcome"], registry=r)
        self.first_token = Histogram("appliance_answer_first_token_seconds", "Question to first answer token.",
                                     buckets=_LATENCY_BUCKETS, registry=r)
        self.tokens = Counter("appliance_answer_tokens", "Answer tokens streamed (text deltas).", registry=r)
        self.waiting = Gauge("appliance_answer_queue_waiting", "Answers waiting for the model.", registry=r)
        self.running = Gauge("appliance_answer_running", "Answers being generated.", registry=r)
        self.searches = Counter("appliance_searches", "Searches through POST /v1/search.", registry=r)
        self.ingest_files = Counter("appliance_ingest_files", "Files ingested through the API, by status.",
                                    ["status"], registry=r)
        self.ingest_chunks = Counter("appliance_ingest_chunks", "Chunks written through the API.", registry=r)
        self.ingest_seconds = Histogram("appliance_ingest_seconds", "Time to ingest one upload request.",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.chunks = Gauge("appliance_store_chunks", "Chunks in the store.", registry=r)


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
