"""POST /v1/embeddings: the appliance lends its embedding model, in OpenAI's shape.

An ingest machine or another appliance (`embeddings.provider: openai` pointed here) embeds with the
model this appliance searches with. `input_type` says whether the texts are documents (the default,
as ingestion sends them) or questions; the model's own prefixes follow from it, so a caller gets
exactly the vectors this appliance computes in-process. Behind an API key like every /v1 route,
counted by the per-key rate limit, and bounded per request (embeddings.serve_max_inputs texts of at
most embeddings.serve_max_input_chars characters) and across requests (embeddings.serve_parallel at
once; the next wait without holding a worker thread, at most 30 s). The audit trail gets who, how
many texts and characters: never the text.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Annotated, Any, Literal

import anyio
from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from appliance.access.auth import Principal
from appliance.api.errors import ApiError
from appliance.api.schemas import ERRORS
from appliance.api.security import require_principal
from appliance.backends.common import BackendUnavailable

if TYPE_CHECKING:
    import numpy as np

    from appliance.api.state import AppState
    from appliance.settings import EmbeddingSettings

WAIT_S = 30.0
WAITING_PER_SLOT = 8  # past this many waiting per running request, the next is refused at once


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # user...: accepted, not used

    input: str | list[str] = Field(description="A text or a list of texts (token arrays are not accepted).")
    model: str = Field(description="The embedding model's name (GET /v1/models lists the chat model; this one is "
                                   "named in `appliance doctor` and in every answer here), or server.model_id.")
    encoding_format: Literal["float", "base64"] = Field(
        "float", description="float: JSON numbers; base64: little-endian float32 bytes, as OpenAI sends them.")
    input_type: Literal["document", "query"] = Field(
        "document", description="document: passages to be searched (ingestion); query: questions. The model's "
        "prefixes (embeddings.document_prefix / query_prefix) follow from it.")
    dimensions: int | None = Field(None, description="Accepted only when it is the model's own size.")


class EmbeddingData(BaseModel):
    object: Literal["embedding"] = "embedding"
    index: int
    embedding: list[float] | str


class EmbeddingUsage(BaseModel):
    prompt_tokens: int
    total_tokens: int


class EmbeddingList(BaseModel):
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage


class _Gate:
    """At most `slots` requests embed at once; waiting ones hold no thread, and not too many wait."""

    def __init__(self, slots: int) -> None:
        self.slots = slots
        self.waiting = 0
        self._limiter: anyio.CapacityLimiter | None = None  # made on the event loop, at the first request

    def limiter(self) -> anyio.CapacityLimiter:
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.slots)
        return self._limiter


def make_router(settings: EmbeddingSettings) -> APIRouter:
    """The route, with its own gate (embeddings.serve_parallel); app.py mounts it when embeddings.serve."""
    router = APIRouter(tags=["Embeddings"])
    gate = _Gate(settings.serve_parallel)

    @router.post("/v1/embeddings", response_model=EmbeddingList, responses={
        **ERRORS, 413: {"description": "Too many texts, or one too long (embeddings.serve_max_inputs, "
                                       "serve_max_input_chars)."}})
    async def create_embeddings(body: EmbeddingRequest, request: Request,
                                principal: Annotated[Principal, Depends(require_principal)]) -> Any:
        """Embed texts with the appliance's own model (the vectors its search uses), L2-normalised."""
        state: AppState = request.app.state.appliance
        services = state.services
        texts = [body.input] if isinstance(body.input, str) else body.input
        _check_size(texts, settings)
        model = services.embedding
        if body.model not in (model.model_name, state.model_id):
            raise ApiError(404, f"model {body.model!r} does not exist: this server embeds with {model.model_name!r}")
        if body.dimensions is not None and body.dimensions != model.dimension:
            raise ApiError(400, f"dimensions: {model.model_name} makes {model.dimension}-dimension vectors only")

        def work() -> tuple[np.ndarray, int]:
            vectors = model.embed(texts) if body.input_type == "document" else model.embed_queries(texts)
            return vectors, model.count_tokens(texts)

        limiter = gate.limiter()
        try:
            limiter.acquire_nowait()
        except anyio.WouldBlock:
            if gate.waiting >= gate.slots * WAITING_PER_SLOT:
                raise ApiError(503, "the embedding model is busy: try again shortly",
                               headers={"Retry-After": "5"}) from None
            gate.waiting += 1
            try:
                with anyio.fail_after(WAIT_S):
                    await limiter.acquire()
            except TimeoutError:
                raise ApiError(503, f"the embedding model stayed busy for {WAIT_S:g} s: try again shortly",
                               headers={"Retry-After": "5"}) from None
            finally:
                gate.waiting -= 1
        try:
            vectors, tokens = await run_in_threadpool(work)
        except BackendUnavailable as exc:  # this appliance's own embedder is remote and down
            raise ApiError(503, str(exc), kind="backend_unavailable") from None
        finally:
            limiter.release()
        services.audit.record("embeddings", principal.name, via="api", inputs=len(texts),
                              chars=sum(len(t) for t in texts), input_type=body.input_type)
        return JSONResponse({
            "object": "list", "model": model.model_name,
            "data": [{"object": "embedding", "index": i, "embedding": _encoded(v, body.encoding_format)}
                     for i, v in enumerate(vectors)],
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    return router


def _check_size(texts: list[str], settings: EmbeddingSettings) -> None:
    """Refused before anything is tokenised: no request may hold the CPU for long."""
    if not texts:
        raise ApiError(400, "input is empty: send a text or a list of texts")
    if len(texts) > settings.serve_max_inputs:
        raise ApiError(413, f"{len(texts)} texts in one request; at most {settings.serve_max_inputs} "
                            "(embeddings.serve_max_inputs): send them in several")
    longest = max(range(len(texts)), key=lambda i: len(texts[i]))
    if len(texts[longest]) > settings.serve_max_input_chars:
        raise ApiError(413, f"input[{longest}] has {len(texts[longest])} characters; at most "
                            f"{settings.serve_max_input_chars} (embeddings.serve_max_input_chars)")


def _encoded(vector: np.ndarray, encoding: str) -> list[float] | str:
    if encoding == "base64":
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return [float(x) for x in vector]
