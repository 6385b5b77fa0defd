"""What the routes share: the services, the model's gate, the metrics and the rate limits."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from typing import TYPE_CHECKING

import anyio
from fastapi import Request

from appliance.answer_gate import Busy, Cancelled, OverShare
from appliance.api.concurrency import iterate_in_thread
from appliance.api.errors import ApiError
from appliance.backends.common import BackendUnavailable

if TYPE_CHECKING:
    from appliance.api.oidc import OidcClient
    from appliance.rag import Answer
    from appliance.services import Services

log = logging.getLogger("appliance.api")


class AppState:
    def __init__(self, services: Services) -> None:
        self.services = services
        server = services.settings.server
        self.model_id = server.model_id
        self.started = int(time.time())
        self._writer: anyio.CapacityLimiter | None = None  # made on the event loop, at the first write
        self.model_check: tuple[float, str | Exception] | None = None  # /readyz's last ask of a remote model
        self.admin_token: str | None = None  # set by serve: ingest jobs handed over by `appliance ingest`
        self.ingest_cancel = threading.Event()  # set to stop the handed-over job that is running
        self.ingest_running = False
        self.oidc: OidcClient | None = None  # made at the first sign-in with the identity provider
        self.metrics = services.metrics
        gate = services.answer_gate
        self.metrics.waiting.set_function(lambda: gate.waiting)
        self.metrics.running.set_function(lambda: gate.running)
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

    async def answer_events(self, make: Callable[[], Iterator[str | Answer]],
                            stop: threading.Event) -> AsyncIterator[str | Answer]:
        """An answer's events (appliance.usecases.answer, run in a thread), its errors as API errors."""
        try:
            async for event in iterate_in_thread(make, stop):
                yield event
        except OverShare as exc:
            raise ApiError(429, str(exc), headers={"Retry-After": "5"}) from None
        except Busy as exc:
            raise ApiError(503, str(exc), headers={"Retry-After": "5"}) from None
        except BackendUnavailable as exc:
            raise ApiError(503, str(exc), kind="backend_unavailable") from None
        except Cancelled:
            return  # the client went away while waiting: nobody to tell


PROXY_HEADERS = ("x-forwarded-for", "forwarded", "x-real-ip")


def local_request(request: Request) -> bool:
    """A request made on this machine, not one a proxy relays (the server.json token is honoured only then)."""
    from appliance.handover import is_local_client

    # A proxy's connection comes from loopback, or from an address server.trusted_proxies may cover as a
    # whole network, and the client it names may be anything (127.0.0.1 included): whoever it relays is
    # never local. The local CLI talks to the server directly and sends none of these headers.
    if any(h in request.headers for h in PROXY_HEADERS):
        return False
    server = request.scope.get("server")
    return is_local_client(request.client.host if request.client else "", server[0] if server else None)


def state_of(request: Request) -> AppState:
    state: AppState = request.app.state.appliance
    return state

