"""Anthropic's Messages API: `POST /v1/messages`, so Anthropic's clients (the `anthropic` package, and
the tools built on it) ask the documents as they would ask Claude.

Same door as /v1/chat/completions behind another wire format (appliance/api/answering.py): the caller's
groups only, the same rate limits, question length, answer queue and `question` audit line. The key
comes as `x-api-key` (Anthropic's clients) or `Authorization: Bearer`; `anthropic-version` is accepted
and not needed. `system` is accepted and left out, as on the OpenAI route: the appliance's own prompt
governs. Text content only: image, document and tool blocks, `tools` and extended thinking are refused
with 400. Errors come in Anthropic's shape (appliance/api/errors.py), so its clients raise their own
exception classes (AuthenticationError, RateLimitError, BadRequestError...).

Sources ride as on the OpenAI route: `sources`, `grounded`, `match` and `unsupported` on the message
(non-streamed) or on the `message_delta` event (streamed), and, unless `sources_in_text` is false, as a
numbered list after the answer text. `usage.output_tokens` counts the answer's tokens as generated;
`usage.input_tokens` is 0 (the prompt is made of passages inside the appliance; no client pays for it).

A stream is Anthropic's event sequence: message_start, content_block_start, ping, content_block_delta
(text_delta)..., content_block_stop, message_delta (stop_reason, usage, sources), message_stop; an error
after the 200 is an `error` event.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any, Literal

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from appliance.access.auth import Principal
from appliance.api.answering import admit, source_out, sources_footer
from appliance.api.errors import ApiError, internal_error
from appliance.api.schemas import ERRORS, ScopeIn, Source
from appliance.api.security import require_principal

if TYPE_CHECKING:
    from appliance.api.state import AppState
    from appliance.rag import Answer

router = APIRouter(tags=["Anthropic-compatible"])


# --- the request --------------------------------------------------------------------------------------------


class ContentBlockIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # cache_control, citations...: accepted, not used
    type: str = Field(max_length=64, description="Only `text` is supported.")
    text: str | None = None


class MessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["user", "assistant"]
    content: str | list[ContentBlockIn]

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(b.text or "" for b in self.content if b.type == "text")
        return self.content


class MessagesRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # temperature, top_p, top_k, stop_sequences, metadata...: not used
    model: str = Field(description="The id from GET /v1/models.")
    max_tokens: int = Field(ge=1, description="Most answer tokens (capped by llm.max_answer_tokens).")
    messages: list[MessageIn] = Field(min_length=1, description="The last message is the user's question; "
                                      "earlier user/assistant turns make follow-ups standalone.")
    system: str | list[ContentBlockIn] | None = Field(None, description="Accepted and not used: the appliance's "
                                                      "own prompt governs.")
    stream: bool = False
    tools: list[dict[str, Any]] | None = Field(None, description="Not supported: a non-empty list is refused.")
    tool_choice: dict[str, Any] | None = Field(None, description="Not supported (only `none`).")
    thinking: dict[str, Any] | None = Field(None, description="Not supported (only `disabled`).")
    sources_in_text: bool = Field(True, description="Append a numbered 'Sources:' list to the answer text.")
    whole_document: bool = Field(False, description="Answer from the whole best-matching document when it fits.")
    scope: ScopeIn | None = Field(None, description="Search only these folders, documents, file types and dates.")


def refuse_unsupported(body: MessagesRequest) -> None:
    """A clear 400 for what this model cannot do, rather than an answer that silently ignored it."""
    if body.tools:
        raise ApiError(400, "tools are not supported: this model answers questions from the documents, "
                            "with text and sources")
    if body.tool_choice and body.tool_choice.get("type") != "none":
        raise ApiError(400, "tool_choice is not supported: this model calls no tools")
    if body.thinking and body.thinking.get("type") != "disabled":
        raise ApiError(400, "extended thinking is not supported by this model")
    blocks = [(f"messages.{i}.content", b) for i, m in enumerate(body.messages) if isinstance(m.content, list)
              for b in m.content]
    blocks += [("system", b) for b in body.system] if isinstance(body.system, list) else []
    for where, block in blocks:
        if block.type != "text":
            raise ApiError(400, f"{where}: {block.type[:64]!r} content blocks are not supported (images, documents, "
                                "tool use): send the question as text")


# --- the response -------------------------------------------------------------------------------------------


class TextBlock(BaseModel):
    type: Literal["text"] = "text"
    text: str


class Usage(BaseModel):
    input_tokens: int = Field(0, description="Always 0: the prompt is made of passages inside the appliance.")
    output_tokens: int = Field(description="Tokens of the answer as the model generated them.")


class Message(BaseModel):
    id: str
    type: Literal["message"] = "message"
    role: Literal["assistant"] = "assistant"
    model: str
    content: list[TextBlock]
    stop_reason: Literal["end_turn", "max_tokens"] = Field(
        description="`max_tokens` when the answer reached the request's max_tokens, else `end_turn`.")
    stop_sequence: None = None
    usage: Usage
    sources: list[Source] = Field(description="The passages the answer was given from, numbered as cited.")
    grounded: bool = Field(description="False when no passage was relevant: the answer says the documents "
                                       "don't contain it, and sources are the closest passages.")
    match: Literal["strong", "weak", "none"] = Field(
        "strong", description="How well the best passage matched the question (as on /v1/chat/completions).")
    unsupported: list[str] = Field(
        default_factory=list, description="Figures of the answer that the passages it cites do not state.")


class AnthropicErrorDetail(BaseModel):
    type: str = Field(description="invalid_request_error, authentication_error, permission_error, not_found_error, "
                                  "request_too_large, rate_limit_error, api_error or overloaded_error.")
    message: str


class AnthropicError(BaseModel):
    """Every error of /v1/messages, in the shape Anthropic's clients read."""

    type: Literal["error"] = "error"
    error: AnthropicErrorDetail


# A malformed body is a 400 here (invalid_request_error), as on Anthropic's API: no 422.
ANTHROPIC_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {**spec, "model": AnthropicError} for code, spec in ERRORS.items() if code != 422}


def stop_reason(output_tokens: int, max_tokens: int) -> Literal["end_turn", "max_tokens"]:
    return "max_tokens" if output_tokens >= max_tokens else "end_turn"


def extras(answer: Answer) -> dict[str, Any]:
    """The fields the OpenAI route adds too: where the answer came from and how well it matched."""
    return {"sources": [source_out(s).model_dump() for s in answer.sources], "grounded": answer.grounded,
            "match": answer.match, "unsupported": answer.unsupported}


def sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps({'type': event, **data}, ensure_ascii=False)}\n\n"


@router.post("/v1/messages", response_model=Message, responses={
    **ANTHROPIC_ERRORS, 200: {"description": "A message, or with stream=true Anthropic's SSE event sequence; its "
                                             "message_delta event carries `sources`, `grounded`, `match` and "
                                             "`unsupported`.",
                              "content": {"text/event-stream": {}}}})
async def messages(body: MessagesRequest, request: Request,
                   principal: Annotated[Principal, Depends(require_principal)],
                   anthropic_version: Annotated[str | None, Header(
                       max_length=64, description="Accepted (Anthropic's clients send it); not needed.")] = None,
                   ) -> Any:
    """Anthropic's Messages API over the documents: the last user message is the question."""
    state: AppState = request.app.state.appliance
    refuse_unsupported(body)
    # The rate, the model, the question's length and the queue: checked before any 200 (answering.py).
    asked = admit(state, principal, body.model, [(m.role, m.text()) for m in body.messages],
                  whole_document=body.whole_document, max_tokens=body.max_tokens,
                  scope=body.scope.to_scope() if body.scope else None)
    ident = "msg_" + uuid.uuid4().hex

    if not body.stream:
        generated = 0
        answer = None
        async for event in asked.events():
            if isinstance(event, str):
                generated += 1
            else:
                answer = event
        assert answer is not None
        text = answer.text + (sources_footer(answer) if body.sources_in_text else "")
        return Message(id=ident, model=state.model_id, content=[TextBlock(text=text)],
                       stop_reason=stop_reason(generated, body.max_tokens), usage=Usage(output_tokens=generated),
                       **extras(answer))

    async def events() -> AsyncIterator[str]:
        start = Message(id=ident, model=state.model_id, content=[], stop_reason="end_turn",
                        usage=Usage(output_tokens=0), sources=[], grounded=False)
        yield sse("message_start", {"message": {**start.model_dump(include={
            "id", "type", "role", "model", "content", "stop_sequence", "usage"}), "stop_reason": None}})
        yield sse("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
        yield sse("ping", {})
        generated = 0
        try:
            async for event in asked.events():
                if isinstance(event, str):
                    generated += 1
                    yield sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": event}})
                    continue
                if body.sources_in_text and event.sources:
                    yield sse("content_block_delta", {"index": 0, "delta": {"type": "text_delta",
                                                                            "text": sources_footer(event)}})
                yield sse("content_block_stop", {"index": 0})
                yield sse("message_delta", {"delta": {"stop_reason": stop_reason(generated, body.max_tokens),
                                                      "stop_sequence": None},
                                            "usage": {"output_tokens": generated}, **extras(event)})
                yield sse("message_stop", {})
        except ApiError as exc:  # after the 200 went out, an error can only be an event of the stream
            yield sse("error", {"error": exc.body(request.url.path)["error"]})
        except Exception:
            yield sse("error", {"error": internal_error("answer failed mid-stream").body(request.url.path)["error"]})

    return StreamingResponse(events(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
