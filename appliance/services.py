"""build_services(settings): the one composition root.

Heavy parts are built on first use (the chat model is never loaded by `ingest`), each at most
once per process: on Python 3.11 (pinned) cached_property locks its own first build, and `serve`
builds the store and models before it takes requests.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.offline import enforce_offline
from appliance.settings import Settings

log = logging.getLogger("appliance")

if TYPE_CHECKING:
    from llama_index.core.base.base_retriever import BaseRetriever

    from appliance.access.acl import AccessRules
    from appliance.access.apikeys import ApiKeys
    from appliance.access.audit import AuditLog
    from appliance.access.auth import Users
    from appliance.access.limits import Limits
    from appliance.access.shared_state import SharedState
    from appliance.answer_gate import AnswerGate
    from appliance.backends.embeddings import Embedding
    from appliance.backends.llm import StreamingChatLLM
    from appliance.backends.rerank import Reranker
    from appliance.backends.scope import Scope
    from appliance.backends.store import ChunkStore
    from appliance.backends.vector_index import ApplianceVectorStore
    from appliance.health import Health
    from appliance.metrics import Metrics
    from appliance.rag import RagEngine, Source
    from appliance.stores.conversations import Conversations
    from appliance.stores.feedback import FeedbackLog
    from appliance.stores.jobs import JobBoard
    from ingest.manifest import Manifest
    from ingest.pipeline import IngestPipeline


class Services:
    def __init__(self, settings: Settings, config_file: Path | None = None) -> None:
        self.settings = settings
        self.config_file = config_file  # read again for its acl rules (reload_acl, current_access_rules)
        self._acl_mtime = _mtime(config_file)
        # One writer at a time: ingestion and deletion through the API share the store and the manifest.
        self.write_lock = threading.RLock()  # reentrant: an upload moves its files, then runs its ingest job

    @cached_property
    def health(self) -> Health:
        """Readiness of the store and the chat model (/readyz, the Status tab)."""
        from appliance.health import Health

        return Health(self)

    @cached_property
    def limits(self) -> Limits:
        """Per-user request and question rates and the sign-in throttle (across replicas with database.url)."""
        from appliance.access.limits import Limits

        return Limits(self.settings.auth, self.shared_state)

    @cached_property
    def answer_gate(self) -> AnswerGate:
        """How many answers the chat model writes at once, for every channel together."""
        from appliance.answer_gate import AnswerGate

        s = self.settings
        return AnswerGate(s.llm.max_parallel, s.server.max_queued, s.server.max_queued_per_user)

    @cached_property
    def metrics(self) -> Metrics:
        """What /metrics reports; every channel's use case counts into it (appliance/usecases.py)."""
        from appliance.metrics import Metrics

        return Metrics()

    @cached_property
    def embedding(self) -> Embedding:
        from appliance.backends.embeddings import build_embedding

        return build_embedding(self.settings.embeddings)

    @cached_property
    def store(self) -> ChunkStore:
        from appliance.backends.store import build_store

        return build_store(self.settings.store, self.settings.store_dir, self.embedding.dimension)

    @cached_property
    def vector_store(self) -> ApplianceVectorStore:
        from appliance.backends.store import SearchSpec
        from appliance.backends.vector_index import ApplianceVectorStore

        r = self.settings.retrieval
        spec = SearchSpec(mode=r.mode, fusion=r.fusion, rrf_k=r.rrf_k, dense_weight=r.dense_weight,
                          keyword_weight=r.keyword_weight)
        # Chunks being written or superseded are excluded inside the store query (ingest.manifest).
        return ApplianceVectorStore(self.store, candidates=r.candidates, spec=spec, hidden=self.manifest.hidden_ids)

    @cached_property
    def llm(self) -> StreamingChatLLM:
        from appliance.backends.llm import build_llm

        return build_llm(self.settings.llm, self.settings.models_dir)

    @cached_property
    def manifest(self) -> Manifest:
        from ingest.manifest import Manifest

        return Manifest(self.settings.database_for(self.settings.manifest_path))

    def retriever(self, groups: list[str] | None = None, top_k: int | None = None,
                  scope: Scope | None = None) -> BaseRetriever:
        from llama_index.core import VectorStoreIndex
        from llama_index.core.vector_stores.types import (
            FilterOperator,
            MetadataFilter,
            MetadataFilters,
            VectorStoreQueryMode,
        )

        from appliance.backends.vector_index import ACL_FIELD

        index = VectorStoreIndex.from_vector_store(self.vector_store, embed_model=self.embedding)
        filters = None
        if groups is not None:
            acl = MetadataFilter(key=ACL_FIELD, value=groups, operator=FilterOperator.ANY)
            filters = MetadataFilters(filters=[acl])
        return index.as_retriever(
            similarity_top_k=top_k or self.settings.retrieval.candidates,
            vector_store_query_mode=VectorStoreQueryMode.HYBRID,
            filters=filters,
            vector_store_kwargs={"scope": scope} if scope else {},
        )

    @cached_property
    def reranker(self) -> Reranker | None:
        from appliance.backends.rerank import build_reranker

        return build_reranker(self.settings.rerank)

    def document_chunks(self, doc_id: str, limit: int, groups: list[str] | None = None) -> list[Source]:
        from appliance.rag import source_from_payload
        from appliance.usecases import readable_chunks

        return [source_from_payload(hit.payload) for hit in readable_chunks(self, doc_id, groups, limit)]

    @cached_property
    def rag(self) -> RagEngine:
        from appliance.rag import RagEngine

        rerank = self.settings.rerank
        return RagEngine(
            retriever_factory=self.retriever,
            llm=lambda: self.llm,
            count_tokens=lambda: self.llm.count_tokens,
            settings=self.settings.retrieval,
            llm_settings=self.settings.llm,
            reranker=self.reranker,  # built now: a missing reranker model fails at start-up
            rerank_top_n=rerank.top_n if rerank.provider != "none" else 0,
            document_chunks=self.document_chunks,
        )

    @cached_property
    def ingest_pipeline(self) -> IngestPipeline:
        from ingest.pipeline import IngestPipeline

        # Chunking runs in the pipeline's parse workers, each with its own tokenizer.
        # Each run takes the rules as the settings file says now: a rule changed by `appliance acl apply`
        # in another process is never undone by this one's older copy.
        return IngestPipeline(self.settings.ingest, self.manifest, self.store, self.embedding,
                              exclude=(self.settings.data_dir,), access=self.access_rules(),
                              access_source=self.current_access_rules)

    def current_access_rules(self) -> AccessRules:
        """The access rules, read again from the settings file when it changed since they were loaded."""
        mtime = _mtime(self.config_file)
        if mtime != self._acl_mtime:
            from appliance.settings import SettingsError

            try:
                fresh = self.reload_acl()
            except SettingsError as exc:  # a file being edited: keep the rules in force
                log.warning("settings file unreadable, acl rules kept as they were: %s", exc)
            else:
                self.settings.acl = fresh.acl
                self.settings.ingest.default_groups = fresh.ingest.default_groups
                self._acl_mtime = mtime
        return self.access_rules()

    def access_rules(self, settings: Settings | None = None) -> AccessRules:
        """Who may read which file, from these settings (default: the running ones)."""
        from appliance.access.acl import AccessRules

        s = settings or self.settings
        return AccessRules(s.acl, s.ingest.default_groups, s.upload_dir)

    @cached_property
    def users(self) -> Users:
        from appliance.access.auth import Users

        a = self.settings.auth
        return Users(self.settings.database_for(self.settings.users_path), a.min_password_length,
                     idle_s=a.session_idle_minutes * 60, max_age_s=a.session_max_hours * 3600)

    @cached_property
    def audit(self) -> AuditLog:
        from appliance.access.audit import AuditLog

        a = self.settings.audit
        return AuditLog(self.settings.audit_dir, a.max_mb << 20, a.keep_files, a.include_text)

    @cached_property
    def shared_state(self) -> SharedState | None:
        """Rate limits, failed sign-ins and pending OIDC sign-ins, shared by the replicas (None: in memory)."""
        from appliance.access.shared_state import SharedState
        from appliance.stores.database import Postgres

        where = self.settings.database_for(self.settings.users_path)
        return SharedState(where) if isinstance(where, Postgres) else None

    @cached_property
    def conversations(self) -> Conversations:
        from appliance.stores.conversations import Conversations

        return Conversations(self.settings.database_for(self.settings.conversations_path))

    def reload_acl(self) -> Settings:
        """The settings file as it is now, for its `acl:` rules and default groups (the rest stays as started)."""
        from appliance.settings import load_settings

        return load_settings(self.config_file, {"data_dir": self.settings.data_dir})

    def auth_required(self) -> bool:
        """Anonymous requests are refused: beyond loopback, once any user exists or an identity provider
        is configured, or when auth.required says so."""
        a = self.settings.auth
        if a.required is not None:
            return a.required
        return not self.settings.server.loopback_only or a.oidc is not None or self.users.count() > 0

    @cached_property
    def feedback(self) -> FeedbackLog:
        from appliance.stores.feedback import FeedbackLog

        return FeedbackLog(self.settings.feedback_path)

    @cached_property
    def jobs(self) -> JobBoard:
        """The ingestion jobs running in this process, with their progress (the admin tab shows them)."""
        from appliance.stores.jobs import JobBoard

        return JobBoard()

    @cached_property
    def api_keys(self) -> ApiKeys:
        from appliance.access.apikeys import ApiKeys

        return ApiKeys(self.settings.database_for(self.settings.api_keys_path))

    def close(self) -> None:
        """Close what was opened; a second call closes nothing twice (each part is forgotten once closed)."""
        for name in ("ingest_pipeline", "api_keys", "users", "conversations", "shared_state", "reranker", "store",
                     "manifest"):  # the pipeline first: its parse workers use the rest
            part = self.__dict__.pop(name, None)
            if part is not None:
                part.close()


def _mtime(path: Path | None) -> int | None:
    try:
        return path.stat().st_mtime_ns if path is not None else None
    except OSError:
        return None


def build_services(settings: Settings, config_file: Path | None = None, *, embedding: Embedding | None = None,
                   llm: StreamingChatLLM | None = None) -> Services:
    """The services of these settings; `embedding` and `llm` replace the ones the settings name (a
    deterministic embedder or a scripted model for a focused test, tests/fakes.py), so no product code
    has to know it runs under a test."""
    enforce_offline()
    _private_dir(settings.data_dir)
    services = Services(settings, config_file)
    # cached_property keeps its value in the instance's __dict__: set there, the part is never built.
    if embedding is not None:
        services.__dict__["embedding"] = embedding
    if llm is not None:
        services.__dict__["llm"] = llm
    return services


def _private_dir(path: Path) -> None:
    """Create the data directory owner-only (0700), and tighten one an older version left open."""
    import os
    import stat

    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if stat.S_IMODE(st.st_mode) & 0o077 and st.st_uid == os.geteuid():  # not ours (a mounted volume): leave it
        try:
            path.chmod(stat.S_IMODE(st.st_mode) & 0o700)
        except OSError as exc:
            log.warning("could not make %s owner-only: %s", path, exc)
