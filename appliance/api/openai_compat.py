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
import time
import uuid
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import StreamingResponse

from appliance.access.auth import Principal
from appliance.api.answering import admit
from appliance.api.answering import source_out as source_out  # re-exported: documents.py and mcp_server.py use
from appliance.api.answering import sources_footer as sources_footer  # them from here
from appliance.api.errors import ApiError, internal_error
from appliance.api.schemas import (
    ERRORS,
    AssistantMessage,
    ChatCompletion,
    ChatCompletionRequest,
    Choice,
    ModelCard,
    ModelList,
)
from appliance.api.security import require_principal

if TYPE_CHECKING:
    from appliance.api.state import AppState

router = APIRouter(tags=["OpenAI-compatible"])


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
    # The rate, the model, the question's length and the queue: checked before any 200 (answering.py).
    asked = admit(state, principal, body.model, [(m.role, m.text()) for m in body.messages],
                  whole_document=body.whole_document, max_tokens=body.max_completion_tokens or body.max_tokens,
                  scope=body.scope.to_scope() if body.scope else None)  # checked as the body was read: 422
    ident = "chatcmpl-" + uuid.uuid4().hex
    created = int(time.time())

    if not body.stream:
        answer = await asked.answer()
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
            async for event in asked.events():
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

