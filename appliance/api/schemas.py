"""Request and response bodies of the HTTP API: the OpenAPI schema is generated from these."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from appliance.backends.scope import MAX_ITEMS, MAX_PATH_CHARS, Scope


class ErrorDetail(BaseModel):
    message: str = Field(description="What went wrong and, where there is one, what to do about it.")
    type: str = Field(description="invalid_request_error, authentication_error, not_found_error, busy, "
                                  "backend_unavailable or server_error.")
    code: int = Field(description="The HTTP status.")


class ErrorBody(BaseModel):
    """Every error, in the shape OpenAI clients read."""

    error: ErrorDetail


ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorBody, "description": text}
    for code, text in {
        400: "Invalid request", 401: "Missing or invalid API key", 403: "Not allowed to this caller",
        404: "Not found", 413: "Request or upload too large", 415: "Unsupported file type",
        422: "Invalid request body", 429: "Too many requests (Retry-After says when to try again)",
        503: "Busy or a backend is unavailable",
    }.items()
}


class Source(BaseModel):
    n: int = Field(description="The number cited in the answer as [n].")
    doc_id: str = Field(description="Document id (GET /v1/documents/{doc_id}).")
    path: str
    file_name: str
    page: int | None = Field(None, description="Page, slide or sheet number, when the format has them.")
    page_name: str | None = Field(None, description="Sheet name of a spreadsheet.")
    section: list[str] = Field(default_factory=list, description="Heading path of the passage.")
    chunk_index: int | None = Field(None, description=(
        "The passage's place in its document (GET /v1/documents/{doc_id}/pages/{page}.png?passage= marks it)."))
    title: str = Field("", description="The document's title (its properties, else its first heading, else its name).")
    date: str = Field("", description="The document's date (sent, else modified, else created), YYYY-MM-DD.")
    score: float = Field(description="Fused rank score (higher is better).")
    similarity: float | None = Field(None, description="Cosine similarity of the passage to the question.")
    text: str = Field(description="The passage the model read.")


class ScopeIn(BaseModel):
    """Where to search, within what the caller may read: (any folder OR any document) AND any file type AND
    the dates. A kind left empty does not narrow; a scope with nothing in it answers so, never widening."""

    model_config = ConfigDict(extra="forbid")
    folders: list[Annotated[str, Field(max_length=MAX_PATH_CHARS)]] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Absolute paths as GET /v1/documents shows them: a "
        "folder with everything below it, or one file.")
    documents: list[Annotated[str, Field(max_length=64)]] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="Document ids (GET /v1/documents).")
    file_types: list[Annotated[str, Field(max_length=16)]] = Field(
        default_factory=list, max_length=MAX_ITEMS, description="File extensions: pdf, docx, eml...")
    date_from: str | None = Field(None, max_length=64, description="YYYY-MM-DD, inclusive. The document's date "
                                  "(sent, else modified, else created); one without a date is outside any range.")
    date_to: str | None = Field(None, max_length=64, description="YYYY-MM-DD, inclusive.")

    @model_validator(mode="after")
    def _checked(self) -> ScopeIn:
        self.to_scope()  # InvalidScope is a ValueError: a 422 naming the problem
        return self

    def to_scope(self) -> Scope:
        return Scope.checked(self.folders, self.documents, self.file_types, self.date_from, self.date_to)


# --- OpenAI-compatible chat ---------------------------------------------------------------------------------


class TextPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: str
    text: str | None = None


class ChatMessageIn(BaseModel):
    model_config = ConfigDict(extra="allow")  # name, tool_calls...: accepted, not used
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[TextPart] | None = None

    def text(self) -> str:
        if isinstance(self.content, list):
            return "\n".join(p.text or "" for p in self.content if p.type == "text")
        return self.content or ""


class ChatCompletionRequest(BaseModel):
    model_config = ConfigDict(extra="allow")  # top_p, seed, user...: accepted, not used
    model: str = Field(description="The id from GET /v1/models.")
    messages: list[ChatMessageIn] = Field(min_length=1, description="The last message is the user's question; "
                                          "earlier user/assistant turns make follow-ups standalone.")
    stream: bool = False
    max_tokens: int | None = Field(None, ge=1, description="Most answer tokens (capped by llm.max_answer_tokens).")
    max_completion_tokens: int | None = Field(None, ge=1, description="The newer name of max_tokens.")
    n: int = Field(1, ge=1, le=1, description="One answer per request.")
    sources_in_text: bool = Field(True, description="Append a numbered 'Sources:' list to the answer text.")
    whole_document: bool = Field(False, description="Answer from the whole best-matching document when it fits.")
    scope: ScopeIn | None = Field(None, description="Search only these folders, documents, file types and dates.")


class AssistantMessage(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class Choice(BaseModel):
    index: int = 0
    message: AssistantMessage
    finish_reason: Literal["stop"] = "stop"


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[Choice]
    sources: list[Source] = Field(description="The passages the answer was given from, numbered as cited.")
    grounded: bool = Field(description="False when no passage was relevant: the answer says the documents "
                                       "don't contain it, and sources are the closest passages.")
    # Added next to `grounded`, which stays a bool: a client that reads it keeps working.
    match: Literal["strong", "weak", "none"] = Field(
        "strong", description="How well the best passage matched the question: `weak` when it is below "
        "retrieval.strong_similarity (answered, but check the sources), `none` when not grounded.")
    unsupported: list[str] = Field(
        default_factory=list, description="Numbers, dates, identifiers and quoted phrases of the answer that the "
        "passages it cites (an uncited sentence: any passage given) do not state, as written in the answer.")


class ModelCard(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str = "rag-appliance"


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelCard]


# --- search and documents -----------------------------------------------------------------------------------


class SearchRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: str = Field(min_length=1, max_length=100_000, description="At most retrieval.max_question_chars (4,000) "
                       "characters once whitespace is collapsed.")
    top_k: int = Field(10, ge=1, le=100, description="Most results.")
    scope: ScopeIn | None = Field(None, description="Search only these folders, documents, file types and dates.")


class SearchHit(Source):
    relevant: bool = Field(description="Reaches retrieval.min_similarity (what `ask` would answer from).")


class SearchResponse(BaseModel):
    query: str
    results: list[SearchHit]
    note: str | None = Field(None, description="Why there are no results, when a scope was given and nothing in "
                             "it matched (the search is never widened beyond the scope).")


class Document(BaseModel):
    id: str
    path: str
    name: str
    status: Literal["ok", "failed", "skipped", "pending"]
    chunks: int
    pages: int | None = None
    error: str | None = None
    notes: list[str] = Field(default_factory=list)
    ingested_at: float
    title: str = Field("", description="Its properties' title, else its first heading, else its file name.")
    author: str = ""
    created: str = Field("", description="ISO 8601, as the document states it.")
    modified: str = ""
    email_from: str = ""
    email_to: str = ""
    email_date: str = Field("", description="An e-mail's Date header, ISO 8601 (UTC).")
    subject: str = ""
    uploaded: bool = Field(description="Uploaded through the API (deleting it deletes the file too).")


class DocumentList(BaseModel):
    documents: list[Document]


class UploadResult(BaseModel):
    name: str
    status: Literal["added", "updated", "unchanged", "failed", "skipped"]
    id: str | None = None
    chunks: int = 0
    error: str | None = None
    notes: list[str] = Field(default_factory=list)


class UploadResponse(BaseModel):
    files: list[UploadResult]


class Deleted(BaseModel):
    id: str
    deleted: bool = True
    chunks: int = Field(description="Chunks removed from the store.")


class Chunk(BaseModel):
    index: int | None
    page: int | None = None
    page_name: str | None = None
    section: list[str] = Field(default_factory=list)
    text: str


class ChunkList(BaseModel):
    id: str
    chunks: list[Chunk]
