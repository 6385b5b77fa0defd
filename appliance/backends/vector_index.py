"""llama-index VectorStore adapter over our Qdrant stores (Edge in-process, or a server).

llama-index has no integration for Qdrant Edge, and its Qdrant integration builds its own
hybrid pipeline on qdrant-client; this adapter lets llama-index retrievers run on our stores
with hybrid search (dense + BM25 fused in the engine) and the ACL filter inside the query. A question's
scope (appliance.backends.scope) comes as the retriever's `vector_store_kwargs={"scope": ...}`, the
hook llama-index gives store-specific options: it is no metadata filter that a retriever could drop.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from llama_index.core.schema import BaseNode, TextNode
from llama_index.core.vector_stores.types import (
    BasePydanticVectorStore,
    FilterOperator,
    MetadataFilters,
    VectorStoreQuery,
    VectorStoreQueryResult,
)
from pydantic import PrivateAttr

from appliance.backends.scope import Scope
from appliance.backends.store import ChunkStore, SearchSpec, StorePoint

ACL_FIELD = "acl_groups"


class ApplianceVectorStore(BasePydanticVectorStore):
    stores_text: bool = True
    is_embedding_query: bool = True
    candidates: int = 30
    _store: ChunkStore = PrivateAttr()
    _spec: SearchSpec = PrivateAttr()
    _hidden: Callable[[], list[str]] = PrivateAttr()

    def __init__(self, store: ChunkStore, candidates: int = 30, spec: SearchSpec | None = None,
                 hidden: Callable[[], list[str]] = list) -> None:
        """hidden: the ids of chunks no search may return now (being written, or superseded)."""
        super().__init__(stores_text=True, candidates=candidates)
        self._store = store
        self._spec = spec or SearchSpec()
        self._hidden = hidden

    def set_mode(self, mode: str) -> None:
        """hybrid | dense | keyword, from the next query on (an administrator's change on the Status tab)."""
        from dataclasses import replace

        self._spec = replace(self._spec, mode=mode)  # type: ignore[arg-type]

    @classmethod
    def class_name(cls) -> str:
        return "ApplianceVectorStore"

    @property
    def client(self) -> Any:
        return self._store

    def add(self, nodes: Sequence[BaseNode], **add_kwargs: Any) -> list[str]:
        points = [
            StorePoint(id=n.node_id, vector=list(n.get_embedding()), text=n.get_content(), payload=dict(n.metadata))
            for n in nodes
        ]
        self._store.upsert(points)
        return [p.id for p in points]

    def delete(self, ref_doc_id: str, **delete_kwargs: Any) -> None:
        """Delete one chunk by id (documents are deleted through the manifest, which knows their chunks)."""
        self._store.delete([ref_doc_id])

    def query(self, query: VectorStoreQuery, **kwargs: Any) -> VectorStoreQueryResult:
        if query.query_embedding is None:
            raise ValueError("ApplianceVectorStore needs a query embedding")
        scope = kwargs.get("scope")
        if scope is not None and not isinstance(scope, Scope):
            raise TypeError(f"scope must be a Scope, not {type(scope).__name__}")
        hits = self._store.search(
            dense=list(query.query_embedding),
            text=query.query_str or "",
            limit=query.similarity_top_k,
            candidates=max(self.candidates, query.similarity_top_k),
            groups=acl_groups(query.filters),
            spec=self._spec,
            exclude=self._hidden(),
            scope=scope,
        )
        nodes: list[TextNode] = []
        for hit in hits:
            meta = dict(hit.payload)
            text = str(meta.pop("text", ""))
            meta["dense_score"] = hit.dense_score
            meta["keyword_score"] = hit.keyword_score
            nodes.append(TextNode(id_=hit.id, text=text, metadata=meta))
        return VectorStoreQueryResult(nodes=nodes, similarities=[h.score for h in hits], ids=[h.id for h in hits])


def acl_groups(filters: MetadataFilters | None) -> list[str] | None:
    """The groups a query may read, from an `acl_groups ANY [...]` filter; None = no restriction."""
    if filters is None:
        return None
    for f in filters.filters:
        if isinstance(f, MetadataFilters):
            found = acl_groups(f)
            if found is not None:
                return found
        elif f.key == ACL_FIELD:
            if f.operator not in (FilterOperator.ANY, FilterOperator.IN, FilterOperator.EQ):
                raise ValueError(f"unsupported operator on {ACL_FIELD}: {f.operator}")
            value = f.value
            return [str(v) for v in value] if isinstance(value, list) else [str(value)]
        else:
            raise ValueError(f"unsupported metadata filter on {f.key!r}")
    return None
