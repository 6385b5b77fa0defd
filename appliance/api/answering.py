"""What every chat door of the API does around an answer, whatever its wire format (OpenAI's
/v1/chat/completions, Anthropic's /v1/messages): the question's rate and length, the model's name, the
caller's share of the answer gate, then appliance.usecases.answer (their groups only, the metrics, the
audit line). A door only translates its request into turns and the answer's events into its format.

Everything a door may refuse is refused here before its 200 goes out, so a streaming client gets a
real HTTP error (400, 404, 429, 503) rather than an error event.
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from appliance.access.auth import Principal
from appliance.answer_gate import OverShare
from appliance.api.errors import ApiError
from appliance.api.schemas import Source
from appliance.rag import checked_question
from appliance.usecases import answer as answer_question

if TYPE_CHECKING:
    from appliance.api.state import AppState
    from appliance.backends.scope import Scope
    from appliance.rag import Answer
    from appliance.rag import Source as RagSource


def source_out(s: RagSource) -> Source:
    record = s.to_dict()
    return Source(**{name: record[name] for name in Source.model_fields})


def sources_footer(answer: Answer) -> str:
    """The sources as text, and what a client that shows only text should know: a weak match, and the
    figures the sources don't state."""
    if not answer.sources:
        return ""
    title = "Sources:" if answer.grounded else "Closest passages (not relevant enough to answer from):"
    weak = "\n\nWeak match: the passages are only loosely related to the question; check them." if answer.weak else ""
    unsupported = ("\nNot found in the sources: " + ", ".join(answer.unsupported)) if answer.unsupported else ""
    return (weak + "\n\n" + title + "\n" + "\n".join(f"[{s.number}] {s.location}" for s in answer.sources)
            + unsupported)


def conversation(turns: Sequence[tuple[str, str]]) -> tuple[str, list[tuple[str, str]]]:
    """The question (the last user turn) and the earlier (question, answer) pairs, from (role, text) turns;
    system turns are left out (the appliance's own prompt governs)."""
    said = [(role, text) for role, text in turns if role in ("user", "assistant")]
    if not said or said[-1][0] != "user" or not said[-1][1].strip():
        raise ApiError(400, "the last message must be a user message with text: the question")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for role, text in said[:-1]:
        if role == "user":
            pending = text
        elif pending is not None:
            history.append((pending, text))
            pending = None
    return said[-1][1], history


@dataclass
class Asked:
    """A question admitted: iterate `events()` once (the text as it comes, then the Answer)."""

    state: AppState
    make: Callable[[], Iterator[str | Answer]]
    stop: threading.Event  # set when the client goes away: the answer stops

    def events(self) -> AsyncIterator[str | Answer]:
        return self.state.answer_events(self.make, self.stop)

    async def answer(self) -> Answer:
        """The whole answer, for a client that does not stream."""
        final = None
        async for event in self.events():
            if not isinstance(event, str):
                final = event
        assert final is not None
        return final


def admit(state: AppState, principal: Principal, model: str, turns: Sequence[tuple[str, str]], *,
          whole_document: bool = False, max_tokens: int | None = None, scope: Scope | None = None) -> Asked:
    """Check a chat request as every door must, and return the answer to run; raises what the door answers
    (RateLimited, ApiError, QuestionTooLong)."""
    state.services.limits.question(principal)  # RateLimited: answered 429 by the error handlers
    if model != state.model_id:
        raise ApiError(404, f"model {model!r} does not exist: this server serves {state.model_id!r}")
    question, history = conversation(turns)
    # Refused before a 200 goes out; rag.stream checks it again for every other caller.
    checked_question(question, state.services.settings.retrieval.max_question_chars)
    gate = state.services.answer_gate
    try:  # checked before the 200 of a stream is sent, as is the queue below
        gate.check_share(principal.fair_share_key)
    except OverShare as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": "5"}) from None
    if gate.full():
        state.metrics.answers.labels("busy").inc()
        raise ApiError(503, "the model is busy: every place in the queue is taken; try again shortly",
                       headers={"Retry-After": "5"})
    stop = threading.Event()

    def make() -> Iterator[str | Answer]:
        return answer_question(state.services, principal, question, history, "api", whole_document=whole_document,
                               max_tokens=max_tokens, cancelled=stop.is_set, scope=scope)

    return Asked(state, make, stop)
