"""OpenAI-compatible chat: the appliance is a model that answers from the documents.

Clients (the `openai` package, Open WebUI, Continue, LibreChat) send the conversation; the last
user message is the question, earlier turns make a follow-up standalone. An extra body field
`scope` (`extra_body` in the `openai` package) narrows the search to folders, documents, file types
and dates. Sources come back in a `sources` field (non-streamed: on the completion; streamed: on the
last chunk before [DONE]) and, unless `sources_in_text` is false, as a numbered list after the answer text.
Next to them, `grounded` stays a bool for the clients that read it; `match` (strong, weak, none) says how
well the best passage matched, and `unsupported` lists the answer's figures the passages don't state.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from appliance.access.auth import Principal
from appliance.answer_gate import OverShare
from appliance.api.errors import ApiError, internal_error
from appliance.api.schemas import (
    ERRORS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
    Source,
)
from appliance.api.security import require_principal
from appliance.rag import checked_question
from appliance.usecases import answer as answer_question

if TYPE_CHECKING:
    from appliance.api.state import AppState
    from appliance.rag import Answer
    from appliance.rag import Source as RagSource

router = APIRouter(tags=["OpenAI-compatible"])


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


def conversation(body: ChatCompletionRequest) -> tuple[str, list[tuple[str, str]]]:
    """The question (last user message) and the earlier (question, answer) turns."""
    turns = [m for m in body.messages if m.role in ("user", "assistant")]
    if not turns or turns[-1].role != "user" or not turns[-1].text().strip():
        raise ApiError(400, "the last message must be a user message with text: the question")
    history: list[tuple[str, str]] = []
    pending: str | None = None
    for m in turns[:-1]:
        if m.role == "user":
            pending = m.text()
        elif pending is not None:
            history.append((pending, m.text()))
            pending = None
    return turns[-1].text(), history


@router.get("/v1/models", response_model=ModelList, responses=ERRORS)
def list_models(request: Request) -> ModelList:
    state: AppState = request.app.state.appliance
    return ModelList(data=[ModelCard(id=state.model_id, created=state.started)])


@router.post("/v1/chat/completions", response_model=ChatCompletion, responses={
    **ERRORS, 200: {"description": "A chat.completion, or with stream=true an SSE stream of chat.completion.chunk "
                                   "objects; the last chunk before [DONE] carries `sources`, `grounded`, `match` "
                                   "and `unsupported`.",
                    "content": {"text/event-stream": {}}}})
async def chat_completions(body: ChatCompletionRequest, request: Request,
                           principal: Annotated[Principal, Depends(require_principal)]) -> Any:
    state: AppState = request.app.state.appliance
    state.services.limits.question(principal)  # RateLimited: answered 429 by the error handlers
    if body.model != state.model_id:
        raise ApiError(404, f"model {body.model!r} does not exist: this server serves {state.model_id!r}")
    question, history = conversation(body)
    # Refused before a 200 goes out; rag.stream checks it again for every other caller.
    checked_question(question, state.services.settings.retrieval.max_question_chars)
    ident = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())
    gate = state.services.answer_gate
    try:  # checked before the 200 of a stream is sent, as is the queue below
        gate.check_share(principal.fair_share_key)
    except OverShare as exc:
        raise ApiError(429, str(exc), headers={"Retry-After": "5"}) from None
    if gate.full():
        state.metrics.answers.labels("busy").inc()
        raise ApiError(503, "the model is busy: every place in the queue is taken; try again shortly",
                       headers={"Retry-After": "5"})

    limit = body.max_completion_tokens or body.max_tokens
    scope = body.scope.to_scope() if body.scope else None  # checked when the body was read: a 422 before any 200

    stop = threading.Event()  # set when the client goes away

    def make() -> Iterator[str | Answer]:
        return answer_question(state.services, principal, question, history, "api", whole_document=body.whole_document,
                      max_tokens=limit, cancelled=stop.is_set, scope=scope)

    if not body.stream:
        answer = None
        async for event in state.answer_events(make, stop):
            if not isinstance(event, str):
                answer = event
        assert answer is not None
        text = answer.text + (sources_footer(answer) if body.sources_in_text else "")
        return ChatCompletion(id=ident, created=created, model=state.model_id,
                              choices=[Choice(message=AssistantMessage(content=text))],
                              sources=[source_out(s) for s in answer.sources], grounded=answer.grounded,
                              match=answer.match, unsupported=answer.unsupported)

    def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {"id": ident, "object": "chat.completion.chunk", "created": created, "model": state.model_id,
                "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def events() -> AsyncIterator[str]:
        yield chunk({"role": "assistant", "content": ""})
        try:
            async for event in state.answer_events(make, stop):
                if isinstance(event, str):
                    yield chunk({"content": event})
                    continue
                if body.sources_in_text and event.sources:
                    yield chunk({"content": sources_footer(event)})
                yield chunk({}, "stop", sources=[source_out(s).model_dump() for s in event.sources],
                            grounded=event.grounded, match=event.match, unsupported=event.unsupported)
        except ApiError as exc:  # after the 200 went out, an error can only be an event of the stream
            yield f"data: {json.dumps(exc.body())}\n\n"
        except Exception:
            yield f"data: {json.dumps(internal_error('answer failed mid-stream').body())}\n\n"
        yield "data: [DONE]\n\n"

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

