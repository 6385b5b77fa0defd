"""How often one user or key may ask and call, and how many failed sign-ins lock a name or an address:
sliding windows in this process, or counted in the shared database across replicas
(appliance/access/shared_state.py). The same limits hold on every channel (the page, /v1)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from appliance.access.auth import Principal
    from appliance.access.shared_state import SharedState
    from appliance.settings import AuthSettings


class RateLimited(Exception):
    """Too many requests or questions: `retry_after` seconds until the next one would be allowed."""

    def __init__(self, message: str, retry_after: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after = int(retry_after) + 1


class Limiter(Protocol):
    per_minute: int

    def hit(self, key: str) -> float | None: ...


class Throttle(Protocol):
    def blocked(self, *keys: str) -> bool: ...

    def failed(self, *keys: str) -> None: ...

    def succeeded(self, *keys: str) -> None: ...


class RateLimiter:
    """At most `per_minute` events per key in any 60 s (a sliding window), in this process."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._seen: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def hit(self, key: str) -> float | None:
        """Count one event; None when allowed, else the seconds until the next one would be."""
        now = time.monotonic()
        with self._lock:
            window = self._seen.setdefault(key, deque())
            while window and window[0] <= now - 60:
                window.popleft()
            if len(window) >= self.per_minute:
                return 60 - (now - window[0])
            window.append(now)
            if len(self._seen) > 10_000:  # forget idle keys
                for k in [k for k, w in self._seen.items() if not w or w[-1] <= now - 60]:
                    del self._seen[k]
        return None


class SignInThrottle:
    """After `attempts` failures for a user name or client address in 15 minutes, refuse for 15 minutes."""

    def __init__(self, attempts: int) -> None:
        self.attempts = attempts
        self._failed: dict[str, deque[float]] = {}
        self._lock = threading.Lock()

    def blocked(self, *keys: str) -> bool:
        now = time.monotonic()
        with self._lock:
            return any(len([t for t in self._failed.get(k, ()) if t > now - 900]) >= self.attempts for k in keys)

    def failed(self, *keys: str) -> None:
        now = time.monotonic()
        with self._lock:
            for k in keys:
                window = self._failed.setdefault(k, deque(maxlen=self.attempts * 4))
                window.append(now)

    def succeeded(self, *keys: str) -> None:
        with self._lock:
            for k in keys:
                self._failed.pop(k, None)


class Attempts:
    """Sign-in attempts of one user name or client address, one at a time in this process, and at most
    `hashing` password hashes at once. Without it, 40 attempts sent together were all checked before
    any failure was counted (the 40th password got in), and 40 Argon2 hashes held every core."""

    def __init__(self, hashing: int = 2) -> None:
        self._locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self._hashing = threading.BoundedSemaphore(hashing)

    @contextlib.contextmanager
    def one_at_a_time(self, *keys: str) -> Iterator[None]:
        with self._guard:
            if len(self._locks) > 10_000:  # forget the keys nobody is signing in with now
                self._locks = {k: lock for k, lock in self._locks.items() if lock.locked()}
            locks = [self._locks.setdefault(k, threading.Lock()) for k in sorted(set(keys))]
        for lock in locks:  # in one order for every caller: no two attempts wait on each other
            lock.acquire()
        try:
            with self._hashing:
                yield
        finally:
            for lock in reversed(locks):
                lock.release()


class Limits:
    """The per-user limits of this server: `auth.requests_per_minute` on every call,
    `auth.questions_per_minute` on questions and searches, the failed sign-in throttle. The machine's
    own operator (loopback without sign-in, or server.json) is not limited."""

    def __init__(self, auth: AuthSettings, shared: SharedState | None) -> None:
        if shared is None:
            self.requests: Limiter = RateLimiter(auth.requests_per_minute)
            self.questions: Limiter = RateLimiter(auth.questions_per_minute)
            self.sign_in: Throttle = SignInThrottle(auth.sign_in_attempts)
        else:  # several replicas: each user's limits are counted across all of them
            from appliance.access.shared_state import SharedRateLimiter, SharedSignInThrottle

            self.requests = SharedRateLimiter(shared, "requests", auth.requests_per_minute)
            self.questions = SharedRateLimiter(shared, "questions", auth.questions_per_minute)
            self.sign_in = SharedSignInThrottle(shared, auth.sign_in_attempts)
        self.attempts = Attempts()

    def request(self, principal: Principal) -> None:
        """Count one call; RateLimited past auth.requests_per_minute."""
        self._hit(self.requests, principal, "requests", "auth.requests_per_minute")

    def question(self, principal: Principal) -> None:
        """Count one question or search; RateLimited past auth.questions_per_minute."""
        self._hit(self.questions, principal, "questions", "auth.questions_per_minute")

    @staticmethod
    def _hit(limiter: Limiter, principal: Principal, what: str, setting: str) -> None:
        key = principal.fair_share_key
        if key is None:
            return
        wait = limiter.hit(key)
        if wait is not None:
            raise RateLimited(f"too many {what}: at most {limiter.per_minute} a minute ({setting})", wait)
