"""The answer gate and the thread bridge: admission, busy, release on every way out."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from appliance.answer_gate import AnswerGate, Busy, Cancelled, StillWaiting
from appliance.api.concurrency import iterate_in_thread


def test_the_gate_admits_parallel_then_queues_then_says_busy() -> None:
    gate = AnswerGate(parallel=1, max_queued=1)
    release, holding = threading.Event(), threading.Event()
    gave_up = threading.Event()

    def hold() -> None:
        with gate.slot():
            holding.set()
            release.wait(10)

    def wait_then_leave() -> None:
        with pytest.raises(Cancelled), gate.slot(cancelled=gave_up.is_set):
            pass

    first = threading.Thread(target=hold)
    first.start()
    assert holding.wait(5)
    second = threading.Thread(target=wait_then_leave)
    second.start()
    deadline = time.monotonic() + 5
    while gate.waiting < 1 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert (gate.running, gate.waiting) == (1, 1)
    assert gate.full()
    with pytest.raises(Busy, match="busy"), gate.slot():
        pass
    gave_up.set()  # a client that leaves while queued gives its place back within 0.2 s
    second.join(5)
    assert gate.waiting == 0
    release.set()
    first.join(5)
    assert (gate.running, gate.waiting) == (0, 0)
    with gate.slot():
        assert gate.running == 1


def test_a_generator_that_fails_to_start_raises_instead_of_hanging() -> None:
    def make() -> Iterator[str]:
        raise RuntimeError("model not loaded")

    async def main() -> None:
        with pytest.raises(RuntimeError, match="model not loaded"):
            async for _ in iterate_in_thread(make):
                pass

    asyncio.run(asyncio.wait_for(main(), timeout=10))


def test_a_consumer_that_stops_closes_the_generator_in_its_thread() -> None:
    closed = threading.Event()
    produced: list[int] = []

    def make() -> Iterator[int]:
        try:
            for i in range(1000):
                produced.append(i)
                time.sleep(0.01)
                yield i
        finally:
            closed.set()

    async def main() -> None:
        async for item in iterate_in_thread(make):
            if item == 2:
                break

    asyncio.run(main())
    assert closed.wait(timeout=5)
    assert len(produced) < 10


def test_a_remote_model_never_runs_more_than_max_parallel_generations() -> None:
    from collections.abc import Sequence
    from typing import Any

    from llama_index.core.llms import ChatMessage, MessageRole

    from appliance.backends.llm import StreamingChatLLM

    running, most = 0, 0
    lock = threading.Lock()

    class Slow(StreamingChatLLM):
        def _stream_chat_text(self, messages: Sequence[ChatMessage], **kwargs: Any) -> Iterator[str]:
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            try:
                for word in ("a", "b", "c"):
                    time.sleep(0.02)
                    yield word
            finally:
                with lock:
                    running -= 1

    llm = Slow(model_name="slow")
    llm.limit_parallel(2)
    question = [ChatMessage(role=MessageRole.USER, content="?")]

    def one(i: int) -> None:
        if i % 2:
            assert llm.chat(question).message.content == "abc"
        else:
            assert "".join(c.delta or "" for c in llm.stream_chat(question)) == "abc"

    threads = [threading.Thread(target=one, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert most == 2
    assert running == 0


def test_only_this_machine_counts_as_a_local_client() -> None:
    from appliance.handover import is_local_client

    assert is_local_client("127.0.0.1", "0.0.0.0")
    assert is_local_client("::1", "::")
    assert is_local_client("::ffff:127.0.0.1", "::")
    assert is_local_client("10.1.2.3", "10.1.2.3")  # the CLI reaching a server bound to this host's address
    assert not is_local_client("10.1.2.4", "10.1.2.3")
    assert not is_local_client("192.0.2.7", "0.0.0.0")
    assert not is_local_client("not-an-address", None)


def test_a_caller_with_little_patience_gives_its_place_back_and_may_ask_again() -> None:
    """The page waits for the model in half-second steps, so that Stop lands between them."""
    gate = AnswerGate(parallel=1, max_queued=2)
    with gate.slot():
        started = time.monotonic()
        with pytest.raises(StillWaiting), gate.slot(patience=0.4):
            pass
        assert 0.3 < time.monotonic() - started < 3
        assert gate.waiting == 0
    with gate.slot(patience=0.4):
        assert gate.running == 1
