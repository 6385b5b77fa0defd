"""What the routes share: the services, the model's gate, the metrics, and API-key checks."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING, Annotated

import anyio
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from appliance.api.concurrency import AnswerGate, Busy, iterate_in_thread
from appliance.api.errors import ApiError
from appliance.api.metrics import Metrics
from appliance.backends.common import BackendUnavailable

if TYPE_CHECKING:
    from appliance.rag import Answer
    from appliance.services import Services

log = logging.getLogger("appliance.api")


class AppState:
    def __init__(self, services: Services) -> None:
        self.services = services
        server = services.settings.server
        self.model_id = server.model_id
        self.started = int(time.time())
        self.gate = AnswerGate(services.settings.llm.max_parallel, server.max_queued)
        self._writer: anyio.CapacityLimiter | None = None  # made on the event loop, at the first write
        self.model_check: tuple[float, str | Exception] | None = None  # /readyz's last ask of a remote model
        self.admin_token: str | None = None  # set by serve: ingest jobs handed over by `appliance ingest`
        self.ingest_cancel = threading.Event()  # set to stop the handed-over job that is running
        self.ingest_running = False
        self.metrics = Metrics()
        self.metrics.waiting.set_function(lambda: self.gate.waiting)
        self.metrics.running.set_function(lambda: self.gate.running)
        self.metrics.chunks.set_function(self._chunks)

    def writer(self) -> anyio.CapacityLimiter:
        """One thread for every writer (uploads, deletions, handed-over ingests): those waiting hold none."""
        if self._writer is None:
            self._writer = anyio.CapacityLimiter(1)
        return self._writer

    def _chunks(self) -> float:
        try:
            return float(self.services.store.count())
        except Exception:  # a scrape must not fail because the store is briefly unavailable
            return float("nan")

    async def answer_events(self, make: Callable[[], Iterator[str | Answer]]) -> AsyncIterator[str | Answer]:
        """An answer's events, generated in a thread once the gate admits it; metrics on the way."""
        m = self.metrics
        started = time.perf_counter()
        first = True
        outcome = "cancelled"  # unless it finishes: the client went away or the server stops
        try:
            async with self.gate.slot():
                async for event in iterate_in_thread(make):
                    if isinstance(event, str):
                        if first:
                            m.first_token.observe(time.perf_counter() - started)
                            first = False
                        m.tokens.inc()
                    else:
                        outcome = "answered" if event.grounded else "not_found"
                    yield event
        except Busy as exc:
            outcome = "busy"
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        except BackendUnavailable as exc:
            outcome = "error"
            raise ApiError(503, str(exc), kind="backend_unavailable") from None
        except (asyncio.CancelledError, GeneratorExit):
            log.info("answer stopped after %.1fs: the client disconnected", time.perf_counter() - started)
            raise
        except Exception:
            outcome = "error"
            raise
        finally:
            m.answers.labels(outcome).inc()


# Declared for the OpenAPI schema (clients see that /v1 takes a bearer key); checked below, so that a
# missing key is our JSON 401 and not FastAPI's.
_BEARER = HTTPBearer(auto_error=False, description="An API key from `appliance keys create NAME`.")


def require_api_key(request: Request,
                    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> str | None:
    """The key's name; a key is needed whenever the server listens beyond loopback (server.require_api_key)."""
    state: AppState = request.app.state.appliance
    token = credentials.credentials if credentials else request.headers.get("x-api-key") or None
    if token and state.admin_token and local_request(request) \
            and secrets.compare_digest(token.encode(), state.admin_token.encode()):
        return "server.json"  # the local administrator's CLI (appliance/handover.py), from this machine only
    if not state.services.settings.server.api_key_required:
        # OpenAI clients always send some key ("none", "sk-..."): on loopback without keys, any goes.
        return state.services.api_keys.verify(token) if token else None
    if token is None:
        raise ApiError(401, "an API key is required: send 'Authorization: Bearer <key>' "
                            "(an administrator creates one with `appliance keys create NAME`)",
                       headers={"WWW-Authenticate": "Bearer"})
    name = state.services.api_keys.verify(token)
    if name is None:
        raise ApiError(401, "invalid or revoked API key", headers={"WWW-Authenticate": "Bearer"})
    return name


def local_request(request: Request) -> bool:
    from appliance.handover import is_local_client

    server = request.scope.get("server")
    return is_local_client(request.client.host if request.client else "", server[0] if server else None)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.appliance
    return state

