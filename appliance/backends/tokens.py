"""Prompt tokens of a remote chat model, counted with the served model's own tokenizer, offline.

The RAG engine packs passages into the model's context by token count, so it counts often: the system
prompt and the question, then every candidate passage, for each question. Three ways, best first:

1. The server's tokenize endpoint, found by one probe and remembered: vLLM (``POST /tokenize``
   with ``prompt``), llama.cpp's ``llama-server`` (``POST /tokenize`` with ``content``), llama-cpp-python's
   server (``POST /extras/tokenize/count``). Ollama has none (ollama#3582 was closed unmerged).
2. A local ``tokenizer.json`` (``llm.tokenizer_file``), read by the ``tokenizers`` package.
3. The estimate, one token per 3 bytes of UTF-8, which over-counts (below).

Exact counts (1 and 2) are kept in a bounded LRU keyed by a hash of the text: the system prompt is the
same for every question, and a passage is counted again when the next question retrieves it. A tokenize
request waits at most TOKENIZE_TIMEOUT_S; when it fails, that text is counted by 2 or 3 and the server is
left alone for RETRY_AFTER_S, so a slow or restarting server costs one answer at most that wait.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from appliance.backends.common import BackendUnavailable

log = logging.getLogger(__name__)

TOKENIZE_TIMEOUT_S = 2.0
RETRY_AFTER_S = 30.0
CACHE_SIZE = 8192  # texts; 16-byte keys, so well under a megabyte
PROBE_TEXT = "How many tokens is this sentence?"


def estimate_tokens(text: str) -> int:
    """Tokens of a remote model whose tokenizer we do not have: one per 3 bytes of UTF-8.

    BPE tokenizers of current models (Mistral's Tekken, Llama 4's) average about 4 bytes a token on
    English prose; 3 over-counts, so packed prompts stay inside num_ctx on code, tables and other scripts.
    """
    return math.ceil(len(text.encode("utf-8")) / 3)


class LocalTokenizer:
    """A model's tokenizer.json, loaded with the `tokenizers` package (nothing is downloaded)."""

    def __init__(self, path: Path) -> None:
        from tokenizers import Tokenizer

        if not path.is_file():
            raise BackendUnavailable(f"llm.tokenizer_file not found: {path}")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as exc:  # tokenizers raises a bare Exception on a file it cannot read
            raise BackendUnavailable(f"llm.tokenizer_file {path} is not a tokenizer.json: {exc}") from None
        # A tokenizer.json may carry truncation and padding (an encoder's: 128 tokens, padded): a count has neither.
        self._tokenizer.no_truncation()
        self._tokenizer.no_padding()
        self.path = path

    def count(self, text: str) -> int:
        # No BOS/EOS: the text is a part of the prompt, like LlamaCppLLM.count_tokens.
        return len(self._tokenizer.encode(text, add_special_tokens=False))


@dataclass(frozen=True)
class Dialect:
    """One server's tokenize request: its path and its body for (model, text)."""

    name: str
    path: str
    body: Callable[[str, str], dict[str, Any]]


# Tried in this order. llama-server answers a body without `content` with 200 and no tokens, so a probe
# counts as found only with at least one token.
DIALECTS = (
    Dialect("vLLM POST /tokenize", "/tokenize",
            lambda model, text: {"model": model, "prompt": text, "add_special_tokens": False}),
    Dialect("llama.cpp POST /tokenize", "/tokenize", lambda model, text: {"content": text, "add_special": False}),
    Dialect("llama-cpp-python POST /extras/tokenize/count", "/extras/tokenize/count",
            lambda model, text: {"model": model, "input": text}),
)


def _count_of(reply: Any) -> int:
    if isinstance(reply, dict):
        count, tokens = reply.get("count"), reply.get("tokens")
        if isinstance(count, int):
            return count
        if isinstance(tokens, list):
            return len(tokens)
    raise ValueError(f"not a tokenize reply: {str(reply)[:80]}")


class ServerTokenizer:
    """The tokenize endpoint of an OpenAI-compatible server, under the root its /v1 URL hangs from."""

    def __init__(self, root: str, model: str, headers: dict[str, str] | None = None,
                 timeout_s: float = TOKENIZE_TIMEOUT_S) -> None:
        self.root = root
        self.model = model
        self.dialect: Dialect | None = None
        self.probed = False  # the server answered the probe, with a dialect or with none
        self._http = httpx.Client(base_url=root, headers=headers, timeout=timeout_s)

    def probe(self) -> None:
        """Find the dialect the server speaks, if any; raises on a transport error or a 5xx (try later)."""
        for dialect in DIALECTS:
            try:
                if self._post(dialect, PROBE_TEXT) > 0:
                    self.dialect = dialect
                    break
            except httpx.HTTPStatusError as exc:
                if exc.response.status_code >= 500:
                    raise
            except ValueError:  # a 200 that is not a tokenize reply (a web page, say)
                pass
        self.probed = True

    def count(self, text: str) -> int:
        assert self.dialect is not None
        return self._post(self.dialect, text)

    def _post(self, dialect: Dialect, text: str) -> int:
        reply = self._http.post(dialect.path, json=dialect.body(self.model, text))
        reply.raise_for_status()
        return _count_of(reply.json())


class TokenCounter:
    """count(text): the served model's own count when one is at hand, else the estimate (module docstring)."""

    def __init__(self, server: ServerTokenizer | None = None, local: LocalTokenizer | None = None,
                 cache_size: int = CACHE_SIZE) -> None:
        self._server = server
        self._local = local
        self._cache: OrderedDict[bytes, int] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()
        self._probe_lock = threading.Lock()
        self._resting_until = 0.0
        self._warned = False

    def count(self, text: str) -> int:
        if not text:
            return 0
        key = hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
        with self._lock:
            hit = self._cache.get(key)
            if hit is not None:
                self._cache.move_to_end(key)
                return hit
        exact = self._exact(text)
        if exact is None:
            return estimate_tokens(text)  # not cached: the server may answer for it next time
        with self._lock:
            self._cache[key] = exact
            if len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return exact

    def describe(self) -> str:
        """How tokens are counted now, for `doctor` and the start-up line."""
        if self._server_ready():
            dialect = self._server.dialect if self._server is not None else None
            return f"the server's tokenizer ({dialect.name if dialect else '?'})"
        if self._local is not None:
            return f"tokenizer {self._local.path}"
        return "estimated at 3 bytes a token (set llm.tokenizer_file for exact counts)"

    def _exact(self, text: str) -> int | None:
        if self._server_ready():
            assert self._server is not None
            try:
                return self._server.count(text)
            except (httpx.HTTPError, ValueError) as exc:
                # A 4xx is about this text; anything else (timeout, refused, 5xx) about the server.
                about_text = isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code < 500
                self._failed(exc, rest=not about_text)
        if self._local is not None:
            return self._local.count(text)
        return None

    def _server_ready(self) -> bool:
        server = self._server
        if server is None or time.monotonic() < self._resting_until:
            return False
        if not server.probed:
            with self._probe_lock:
                if not server.probed and time.monotonic() >= self._resting_until:
                    try:
                        server.probe()
                    except (httpx.HTTPError, ValueError) as exc:
                        self._failed(exc, rest=True)
                        return False
                    if server.dialect is None:
                        log.info("the model server at %s has no tokenize endpoint: tokens %s", server.root,
                                 self._fallback())
                    else:
                        log.info("counting tokens with %s at %s", server.dialect.name, server.root)
        return server.dialect is not None

    def _fallback(self) -> str:
        return f"counted by {self._local.path}" if self._local is not None else "estimated at 3 bytes a token"

    def _failed(self, exc: Exception, rest: bool) -> None:
        if rest:
            self._resting_until = time.monotonic() + RETRY_AFTER_S
        server = self._server.root if self._server is not None else "?"
        if self._warned:
            log.debug("tokenize at %s failed: %s", server, exc)
            return
        self._warned = True  # once: a server that is down would otherwise log on every count
        log.warning("tokenize at %s failed (%s): tokens %s%s", server, str(exc) or type(exc).__name__,
                    self._fallback(), f" for {RETRY_AFTER_S:.0f} s" if rest else " for that text")


def server_root(base_url: str) -> str:
    """Where an OpenAI-compatible server's own routes are: its /v1 URL without the /v1."""
    return base_url.rstrip("/").removesuffix("/v1")
