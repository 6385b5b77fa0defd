"""How long a client may take to send its request, and how many connections are served at once.

uvicorn times only the idle gap between requests on a kept-alive connection (`timeout_keep_alive`,
armed once a response is complete), never what a client is sending: with serve's settings on
uvicorn 0.55, a connection that sent nothing, one that dripped a header byte a second, one that
declared a 1000-byte body and stalled after 10 bytes, and one that dripped that body a byte a second
were all still open after 75 s, none of them signed in. `ClientTimeouts` adds what a front proxy
would (nginx's client_header_timeout and client_body_timeout, Apache's mod_reqtimeout):

- head: the request line and headers are complete `server.header_timeout_s` after the connection
  opens, or after the previous response on a kept-alive one; dripping bytes does not extend it.
- body: no gap between body bytes longer than `server.body_timeout_s`, and past that first window
  at least `server.body_min_rate` bytes a second on average (mod_reqtimeout's MinRate), so a large
  upload on a slow link goes through and a byte every few seconds does not. While the server holds
  the client back (flow control until the app reads, a pending `100 Continue`) the clock restarts.

A client past its time gets 408 (when it had sent something) and the connection is closed. Once a
request is in, nothing is timed: an answer streamed for minutes is the server sending, not the client.
The class is uvicorn's h11 protocol, forced everywhere: `http="auto"` picks httptools when installed,
which would need the same hooks written twice.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Literal, TypedDict

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

if TYPE_CHECKING:
    from appliance.settings import ServerSettings

log = logging.getLogger("appliance")

Phase = Literal["head", "body"] | None

TIMED_OUT = (b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain; charset=utf-8\r\n"
             b"content-length: 16\r\nconnection: close\r\n\r\nRequest Timeout\n")


class ClientLimits(TypedDict):
    """Keyword arguments of `uvicorn.run` / `uvicorn.Config`."""

    http: type[asyncio.Protocol]
    limit_concurrency: int


def client_limits(server: ServerSettings) -> ClientLimits:
    """The uvicorn arguments that bound slow clients and open connections, from the `server` settings."""

    class Configured(ClientTimeouts):
        header_timeout_s = server.header_timeout_s
        body_timeout_s = server.body_timeout_s
        body_min_rate = server.body_min_rate
        per_client = server.max_connections_per_client
        exempt = frozenset(server.trusted_proxies)  # a proxy carries many clients' connections
        open_by_client: dict[str, int] = {}  # noqa: RUF012 (one count for this server's connections)

    # uvicorn answers 503 to a request when `len(connections) >= limit or len(tasks) >= limit`, the
    # asking connection included: + 1 serves exactly max_connections. Connections past it are still
    # accepted (and closed by the head timeout if they send nothing); their requests get the 503.
    return {"http": Configured, "limit_concurrency": server.max_connections + 1}


class ClientTimeouts(H11Protocol):
    """uvicorn's h11 protocol, closing connections whose request head or body arrives too slowly."""

    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    body_min_rate: float = 500.0

    _phase: Phase = None
    _since = 0.0  # when the phase began, or the server last held the client back
    _last = 0.0  # when bytes last arrived in this phase
    _received = 0  # bytes received in this phase
    _timer: asyncio.TimerHandle | None = None
    per_client = 64
    exempt: frozenset[str] = frozenset()
    open_by_client: dict[str, int] = {}  # noqa: RUF012 (replaced per server by client_limits)
    _counted: str | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        peer = self.client[0] if self.client else None
        if peer is not None and peer not in self.exempt:
            held = self.open_by_client.get(peer, 0)
            if held >= self.per_client:  # one machine holding every connection starves the others
                log.info("refused a connection of %s: it holds %d already (server.max_connections_per_client)",
                         peer, held)
                transport.close()
                return
            self.open_by_client[peer] = held + 1
            self._counted = peer
        self._follow()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        self._follow(len(data))

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._follow()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel()
        if self._counted is not None:
            left = self.open_by_client.get(self._counted, 1) - 1
            if left > 0:
                self.open_by_client[self._counted] = left
            else:
                self.open_by_client.pop(self._counted, None)
            self._counted = None
        super().connection_lost(exc)

    def _current(self) -> Phase:
        if self.transport.is_closing() or self.transport.get_protocol() is not self:
            return None  # closing, or handed over to the WebSocket protocol
        state = self.conn.their_state
        if state is h11.IDLE and (self.cycle is None or self.cycle.response_complete):
            return "head"
        if state is h11.SEND_BODY:
            return "body"
        return None  # the request is in: the app is answering

    def _follow(self, received: int | None = None) -> None:
        """After an event: a new phase starts its clock; bytes within a phase are counted."""
        phase, now = self._current(), self.loop.time()
        if phase != self._phase:
            self._cancel()
            self._phase, self._since, self._last, self._received = phase, now, now, 0
            if phase is not None:
                self._timer = self.loop.call_at(self._deadline(), self._check)
        elif received is not None:  # no re-arming per chunk: the timer reads these when it fires
            self._last = now
            self._received += received

    def _deadline(self) -> float:
        if self._phase == "head":
            return self._since + self.header_timeout_s
        idle = self._last + self.body_timeout_s
        if self.body_min_rate <= 0:
            return idle
        return min(idle, self._since + self.body_timeout_s + self._received / self.body_min_rate)

    def _check(self) -> None:
        self._timer = None
        if self._current() != self._phase:
            self._follow()
            return
        now = self.loop.time()
        if self._phase == "body" and (self.flow.read_paused or self.conn.they_are_waiting_for_100_continue):
            self._since, self._last, self._received = now, now, 0  # we hold the client back, not it us
        deadline = self._deadline()
        if now < deadline:
            self._timer = self.loop.call_at(deadline, self._check)
            return
        what = "request head" if self._phase == "head" else "request body"
        client = f"{self.client[0]}:{self.client[1]}" if self.client else "a client"
        log.info("closed the connection of %s: %s too slow (%.0f s)", client, what, now - self._since)
        answered = self.cycle is not None and self.cycle.response_started and self._phase == "body"
        if (self._received or self._phase == "body") and not answered:
            self.transport.write(TIMED_OUT)
        self.transport.close()

    def _cancel(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
