"""Moving a collection from the embedded store to a Qdrant server store (qdrant-client local mode)."""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.backends.common import BackendUnavailable
from appliance.backends.embeddings import OnnxMiniLMEmbedding, build_embedding
from appliance.backends.store import EdgeStore, QdrantServerStore, StorePoint
from appliance.ops.migrate import MigrationError, migrate
from appliance.settings import EmbeddedEmbeddingSettings, QdrantServerStoreSettings

TOPICS = ["annual leave", "VPN token", "expense report", "parking permit", "laptop refresh", "fire drill",
          "travel booking", "badge reader", "payroll date", "printer toner", "visitor policy", "data retention"]
PLACES = ["Berlin office", "Lyon plant", "Austin lab", "Osaka branch", "head office"]
ACLS = [["everyone"], ["hr"], ["it", "everyone"], ["finance"]]
N = 300


@pytest.fixture(scope="module")
def embedding() -> OnnxMiniLMEmbedding:
    return build_embedding(EmbeddedEmbeddingSettings())


@pytest.fixture(scope="module")
def points(embedding: OnnxMiniLMEmbedding) -> list[StorePoint]:
    rnd = random.Random(7)
    texts = [
        f"{rnd.choice(TOPICS).capitalize()} at the {rnd.choice(PLACES)}: form {1000 + i} applies "
        f"(ticket KX{i:04d}), ask {rnd.choice(['the service desk', 'your manager', 'HR', 'facilities'])}."
        for i in range(N)
    ]
    vectors = embedding.embed(texts)
    return [
        StorePoint(id=str(uuid.uuid5(uuid.NAMESPACE_URL, f"chunk-{i}")), vector=list(map(float, v)), text=t,
                   payload={"path": f"/docs/{i // 10}.txt", "doc_id": f"doc-{i // 10}", "chunk_index": i % 10,
                            "page": None if i % 3 else i % 7, "heading_path": ["Handbook", TOPICS[i % 12]],
                            "acl_groups": ACLS[i % len(ACLS)]})
        for i, (t, v) in enumerate(zip(texts, vectors, strict=True))
    ]


@pytest.fixture
def source(tmp_path: Path, points: list[StorePoint], embedding: OnnxMiniLMEmbedding) -> Iterator[EdgeStore]:
    s = EdgeStore(tmp_path / "edge", embedding.dimension)
    s.upsert(points)
    s.optimize()
    yield s
    s.close()


@pytest.fixture
def target(tmp_path: Path, embedding: OnnxMiniLMEmbedding) -> Iterator[QdrantServerStore]:
    s = QdrantServerStore(QdrantServerStoreSettings(path=tmp_path / "local", collection="moved"), embedding.dimension)
    yield s
    s.close()


def _contents(store: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    return {p.id: (p.text, p.payload) for page in store.scroll(64) for p in page}


def test_scroll_returns_points_as_written(source: EdgeStore, points: list[StorePoint]) -> None:
    pages = list(source.scroll(128))
    assert [len(p) for p in pages] == [128, 128, N - 256]
    written = {p.id: p for p in points}
    for got in (p for page in pages for p in page):
        assert (got.text, got.payload) == (written[got.id].text, written[got.id].payload)
        # Cosine vectors are stored normalised; the model's are already unit length.
        assert got.vector == pytest.approx(written[got.id].vector, abs=1e-5)


def test_migrate_copies_every_point_and_searches_the_same(
        source: EdgeStore, target: QdrantServerStore, embedding: OnnxMiniLMEmbedding) -> None:
    seen: list[int] = []
    assert migrate(source, target, progress=seen.append, batch=100) == N
    assert seen == [100, 100, 100]
    assert target.count() == N
    assert _contents(target) == _contents(source)
    for question, groups in [("how do I reset my VPN token?", None), ("KX0042", None),
                             ("parking permit in Lyon", ["everyone"]), ("when is payroll paid?", ["hr"])]:
        q = list(map(float, embedding.embed([question])[0]))
        before = source.search(q, question, limit=5, candidates=30, groups=groups)
        after = target.search(q, question, limit=5, candidates=30, groups=groups)
        assert [h.id for h in after][:3] == [h.id for h in before][:3], question
        assert [h.score for h in after] == pytest.approx([h.score for h in before], abs=1e-3)
        assert after[0].payload == before[0].payload


def test_migrate_back_into_a_new_embedded_store(
        tmp_path: Path, source: EdgeStore, target: QdrantServerStore, embedding: OnnxMiniLMEmbedding) -> None:
    migrate(source, target)
    back = EdgeStore(tmp_path / "back", embedding.dimension)
    try:
        assert migrate(target, back, batch=1000) == N
        assert _contents(back) == _contents(source)
    finally:
        back.close()


def test_a_rerun_overwrites_and_a_killed_run_can_be_rerun(source: EdgeStore, target: QdrantServerStore) -> None:
    def die_after_first_batch(n: int) -> None:
        raise KeyboardInterrupt("killed")

    with pytest.raises(KeyboardInterrupt):
        migrate(source, target, progress=die_after_first_batch, batch=50)
    assert target.count() == 50
    assert migrate(source, target) == N
    assert migrate(source, target) == N  # same ids again: overwritten, not duplicated
    assert target.count() == N


def test_a_target_with_other_points_fails_the_count_check(
        source: EdgeStore, target: QdrantServerStore, points: list[StorePoint]) -> None:
    stray = StorePoint(id=str(uuid.uuid4()), vector=points[0].vector, text="left over", payload={})
    target.upsert([stray])
    with pytest.raises(MigrationError, match=f"target holds {N + 1} and the source {N}"):
        migrate(source, target)


def test_an_existing_collection_of_another_dimension_is_refused(tmp_path: Path) -> None:
    settings = QdrantServerStoreSettings(path=tmp_path / "local", collection="docs")
    QdrantServerStore(settings, 384).close()
    expected = r"'docs' holds 'dense' vectors of size 384.*makes 768.*new collection"
    with pytest.raises(BackendUnavailable, match=expected):
        QdrantServerStore(settings, 768)


def test_cluster_settings_are_accepted_in_local_mode(tmp_path: Path, points: list[StorePoint]) -> None:
    settings = QdrantServerStoreSettings(path=tmp_path / "local", shard_number=3, replication_factor=2,
                                         write_consistency_factor=2, on_disk=True)
    store = QdrantServerStore(settings, len(points[0].vector))
    try:
        store.upsert(points[:10])
        assert store.count() == 10
        assert store.search(points[3].vector, points[3].text, limit=1, candidates=5)[0].id == points[3].id
    finally:
        store.close()
