"""Test doubles for focused tests of logic (the full suite proves every feature with the real parts):
a chat model you enqueue replies into and whose prompts you read back, and a deterministic embedder.
Give them to `build_services(settings, embedding=HashEmbedding(), llm=ScriptedLLM())`."""

from __future__ import annotations

import hashlib
import re
from collections import deque
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from llama_index.core.llms import ChatMessage
from pydantic import PrivateAttr

from appliance.backends.embeddings import ArrayEmbedding
from appliance.backends.llm import StreamingChatLLM


class ScriptedLLM(StreamingChatLLM):
    """Replies with what was enqueued (or `default`), a word at a time; one token per word."""

    model_name: str = "scripted"
    default: str = "I have nothing queued to say."
    _replies: deque[str] = PrivateAttr(default_factory=deque)
    _prompts: list[list[ChatMessage]] = PrivateAttr(default_factory=list)

    def enqueue(self, *replies: str) -> None:
        self._replies.extend(replies)

    @property
    def prompts(self) -> list[list[ChatMessage]]:
        """Every conversation the model was given, in order."""
        return self._prompts

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
        self._prompts.append(list(messages))
        reply = self._replies.popleft() if self._replies else self.default
        words = reply.split(" ")
        for i, word in enumerate(words):
            yield word if i == len(words) - 1 else word + " "


class HashEmbedding(ArrayEmbedding):
    """Bag of hashed lower-case words, normalised: texts sharing words are near, others far; the same
    text always gives the same vector."""

    model_name: str = "hash-64"
    size: int = 64

    @property
    def dimension(self) -> int:
        return self.size

    def embed(self, texts: list[str]) -> np.ndarray:
        out = np.zeros((len(texts), self.size), dtype=np.float32)
        for row, text in enumerate(texts):
            for word in re.findall(r"\w+", text.lower()):
                out[row, int(hashlib.sha1(word.encode()).hexdigest(), 16) % self.size] += 1.0
            norm = float(np.linalg.norm(out[row]))
            out[row] = out[row] / norm if norm else out[row]
        return out


def water_memo_services(tmp_path: Path) -> tuple[Any, ScriptedLLM]:
    """Services over one ingested memo (the figure 20,000 and a date), on the scripted model and the hash
    embedder, with thresholds that let its one passage answer: for tests of what a door does with an answer."""
    from appliance.services import build_services
    from appliance.settings import load_settings
    from appliance.usecases import run_ingest

    docs = tmp_path / "share"
    docs.mkdir()
    (docs / "memo.md").write_text("# Water\n\nThe memo says 20,000 bottles of water were delivered on 3 March 2024.\n")
    llm = ScriptedLLM()
    settings = load_settings(overrides={"data_dir": tmp_path / "data",
                                        "retrieval": {"min_similarity": 0.2, "strong_similarity": 0.2}})
    services = build_services(settings, embedding=HashEmbedding(), llm=llm)
    run_ingest(services, [docs], "admin", "ingest", "cli")
    return services, llm
