"""Both store backends against the real engines: Qdrant Edge, and qdrant-client (local mode)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.backends.embeddings import OnnxMiniLMEmbedding, build_embedding
from appliance.backends.store import EdgeStore, QdrantServerStore, SearchSpec, StorePoint
from appliance.backends.vector_index import ApplianceVectorStore
from appliance.settings import EmbeddedEmbeddingSettings, QdrantServerStoreSettings

TEXTS = {
    "hr": ("Employees accrue 25 days of paid annual leave per year.", ["hr"]),
    "it": ("Reset your VPN token at the IT service desk on floor 3.", ["it", "everyone"]),
    "fac": ("The cafeteria serves lunch from 11:30 to 14:00 on weekdays.", ["everyone"]),
    "code": ("Error code ZX-4471 means the badge reader lost power.", ["everyone"]),
}


@pytest.fixture(scope="module")
def embedding() -> OnnxMiniLMEmbedding:
    return build_embedding(EmbeddedEmbeddingSettings())


@pytest.fixture(params=["edge", "server-api"])
def store(request: pytest.FixtureRequest, tmp_path: Path, embedding: OnnxMiniLMEmbedding) -> Iterator[Any]:
    if request.param == "edge":
        s: Any = EdgeStore(tmp_path / "edge", embedding.dimension)
    else:
        s = QdrantServerStore(QdrantServerStoreSettings(path=tmp_path / "local", collection="t"), embedding.dimension)
    yield s
    s.close()


def _ids() -> dict[str, str]:
    return {k: str(uuid.uuid5(uuid.NAMESPACE_URL, k)) for k in TEXTS}


def _fill(store: Any, embedding: OnnxMiniLMEmbedding) -> dict[str, str]:
    ids = _ids()
    vectors = embedding.embed([t for t, _ in TEXTS.values()])
    store.upsert([
        StorePoint(id=ids[k], vector=list(map(float, v)), text=t,
                   payload={"path": f"/docs/{k}.txt", "page": None, "acl_groups": acl, "doc_id": k})
        for (k, (t, acl)), v in zip(TEXTS.items(), vectors, strict=True)
    ])
    return ids


def _search(store: Any, embedding: OnnxMiniLMEmbedding, q: str, groups: list[str] | None = None) -> list[Any]:
    return store.search(list(map(float, embedding.embed([q])[0])), q, limit=4, candidates=10, groups=groups)


def test_hybrid_search_ranks_the_relevant_chunk_first(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    ids = _fill(store, embedding)
    assert store.count() == 4
    hits = _search(store, embedding, "how many vacation days do I get?")
    assert hits[0].id == ids["hr"]
    assert hits[0].payload["path"] == "/docs/hr.txt"
    assert hits[0].payload["text"] == TEXTS["hr"][0]
    assert hits[0].dense_score is not None
    assert hits[0].dense_score > 0.3


def test_exact_identifiers_are_found_by_bm25(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    ids = _fill(store, embedding)
    hits = _search(store, embedding, "ZX-4471")
    assert hits[0].id == ids["code"]
    assert hits[0].keyword_score is not None
    assert hits[0].keyword_score > 0


IDENTIFIER_TEXTS = {
    "target": "ZX-4471: badge reader lost power. Replace the supply unit.",
    "d1": "What does an error code mean? Every error code of the door system, such as AB-1120 or CD-3310, "
          "is explained in the facilities manual.",
    "d2": "Error codes tell you what went wrong: look the code up in the manual to see what it means.",
    "d3": "The meaning of each status code shown on the badge reader display is listed in chapter 4.",
}


def test_hybrid_finds_an_identifier_that_dense_alone_misses(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    ids = {k: str(uuid.uuid5(uuid.NAMESPACE_URL, k)) for k in IDENTIFIER_TEXTS}
    vectors = embedding.embed(list(IDENTIFIER_TEXTS.values()))
    store.upsert([StorePoint(id=ids[k], vector=list(map(float, v)), text=t, payload={"acl_groups": ["everyone"]})
                  for (k, t), v in zip(IDENTIFIER_TEXTS.items(), vectors, strict=True)])
    question = "What does error code ZX-4471 mean?"
    query = list(map(float, embedding.embed([question])[0]))

    def first(spec: SearchSpec) -> str:
        hits = store.search(query, question, limit=4, candidates=10, spec=spec)
        return str(hits[0].id)

    assert first(SearchSpec(mode="dense")) != ids["target"]  # the generic passages read closer
    assert first(SearchSpec(mode="keyword")) == ids["target"]
    # DBSF (the default) weighs how far ahead BM25 puts it; plain RRF sees ranks only, and ties here.
    assert first(SearchSpec(mode="hybrid", fusion="dbsf")) == ids["target"]


def test_acl_filter_is_applied_in_the_query(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    ids = _fill(store, embedding)
    hits = _search(store, embedding, "how many vacation days do I get?", groups=["everyone"])
    assert ids["hr"] not in {h.id for h in hits}
    assert all("everyone" in h.payload["acl_groups"] for h in hits)
    hr_only = _search(store, embedding, "cafeteria lunch", groups=["hr"])
    assert [h.id for h in hr_only] == [ids["hr"]]


def test_delete_and_upsert_are_idempotent(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    ids = _fill(store, embedding)
    _fill(store, embedding)  # same ids again: overwritten, not duplicated
    assert store.count() == 4
    store.delete([ids["hr"], ids["it"]])
    assert store.count() == 2
    assert ids["hr"] not in {h.id for h in _search(store, embedding, "paid annual leave")}


def test_edge_store_persists_across_reopen(tmp_path: Path, embedding: OnnxMiniLMEmbedding) -> None:
    s = EdgeStore(tmp_path / "edge", embedding.dimension)
    ids = _fill(s, embedding)
    s.close()
    again = EdgeStore(tmp_path / "edge", embedding.dimension)
    try:
        assert again.count() == 4
        assert _search(again, embedding, "VPN token reset")[0].id == ids["it"]
    finally:
        again.close()


def test_llama_index_retriever_runs_on_the_adapter(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    from llama_index.core import VectorStoreIndex
    from llama_index.core.vector_stores.types import FilterOperator, MetadataFilter, MetadataFilters

    ids = _fill(store, embedding)
    index = VectorStoreIndex.from_vector_store(ApplianceVectorStore(store), embed_model=embedding)
    flt = MetadataFilters(filters=[MetadataFilter(key="acl_groups", value=["everyone"], operator=FilterOperator.ANY)])
    nodes = index.as_retriever(similarity_top_k=3, vector_store_query_mode="hybrid", filters=flt).retrieve(
        "where do I reset my VPN token?")
    assert nodes[0].node.node_id == ids["it"]
    assert nodes[0].node.metadata["path"] == "/docs/it.txt"
    assert ids["hr"] not in {n.node.node_id for n in nodes}


def test_unsupported_metadata_filter_is_refused(store: Any, embedding: OnnxMiniLMEmbedding) -> None:
    from llama_index.core.vector_stores.types import MetadataFilter, MetadataFilters, VectorStoreQuery

    adapter = ApplianceVectorStore(store)
    query = VectorStoreQuery(query_embedding=[0.0] * 384, similarity_top_k=2,
                             filters=MetadataFilters(filters=[MetadataFilter(key="author", value="x")]))
    with pytest.raises(ValueError, match="author"):
        adapter.query(query)


def test_the_embedded_store_refuses_a_second_opener(tmp_path: Path, embedding: OnnxMiniLMEmbedding) -> None:
    from appliance.backends.store import StoreLocked

    first = EdgeStore(tmp_path / "edge", embedding.dimension)
    try:
        with pytest.raises(StoreLocked, match="in use by another process"):
            EdgeStore(tmp_path / "edge", embedding.dimension)
    finally:
        first.close()
