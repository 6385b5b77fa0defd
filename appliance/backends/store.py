"""Vector stores: Qdrant Edge in-process (default) and a Qdrant server through qdrant-client.

Both hold the same points: a named dense vector ``dense`` (cosine), a named sparse vector
``bm25`` (Qdrant's BM25 with the IDF modifier, so IDF follows the corpus as it grows) and the
same payload (see ``ingest.chunk.Chunk.payload``), so a collection moves from one to the
other (``appliance.ops.migrate`` copies it point by point). Hybrid search runs in the engine: dense
and BM25 prefetches fused by (weighted) RRF or DBSF, with the ACL filter and the question's scope
(``appliance.backends.scope``) applied inside every prefetch.
"""

from __future__ import annotations

import ssl
import threading
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from appliance.backends.common import BackendUnavailable
from appliance.backends.scope import Scope, conditions

if TYPE_CHECKING:
    from appliance.settings import EmbeddedStoreSettings, QdrantServerStoreSettings

DENSE = "dense"
SPARSE = "bm25"
# Payload fields with an index: filters on them stay fast at millions of points.
KEYWORD_INDEXES = ("acl_groups", "doc_id", "path", "folders", "file_type")
DATETIME_INDEXES = ("date",)  # ranges on the document's date (a scope's dates)


@dataclass(frozen=True)
class StorePoint:
    id: str
    vector: list[float]
    text: str
    payload: dict[str, Any]

    @property
    def indexed_text(self) -> str:
        """What BM25 indexes: the chunk's heading (document title and section path), then its text."""
        head = self.payload.get("heading")
        return f"{head}\n{self.text}" if head else self.text


@dataclass(frozen=True)
class SearchSpec:
    """How candidates are ranked: dense only, BM25 only, or both fused in the engine."""

    mode: str = "hybrid"  # hybrid | dense | keyword
    fusion: str = "dbsf"  # dbsf | rrf
    rrf_k: int = 60
    dense_weight: float = 1.0  # RRF weights of the dense and BM25 rankings
    keyword_weight: float = 1.0


@dataclass
class Hit:
    id: str
    score: float
    payload: dict[str, Any]
    dense_score: float | None = None
    keyword_score: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class StoreLocked(RuntimeError):
    """The embedded store is held by another process (usually a running `appliance serve`)."""


class ChunkStore(Protocol):
    """What the appliance needs of a store; EdgeStore and QdrantServerStore both provide it."""

    def upsert(self, points: list[StorePoint]) -> None: ...
    def delete(self, ids: list[str]) -> None: ...
    def search(self, dense: list[float], text: str, limit: int, candidates: int,
               groups: list[str] | None = None, spec: SearchSpec = SearchSpec(),
               exclude: Collection[str] = (), scope: Scope | None = None) -> list[Hit]: ...
    def chunks_of(self, doc_id: str, limit: int, exclude: Collection[str] = (),
                  groups: list[str] | None = None) -> list[Hit]: ...
    def set_groups(self, ids: list[str], groups: list[str]) -> None: ...
    def retrieve(self, ids: list[str]) -> list[StorePoint]: ...
    def count(self) -> int: ...
    def scroll(self, batch: int = 256) -> Iterator[list[StorePoint]]: ...
    def flush(self) -> None: ...
    def optimize(self) -> None: ...
    def close(self) -> None: ...


def _hold_exclusively(lock_path: Path) -> Any:
    """Take the store's lock file before Qdrant Edge opens anything.

    Measured: a second process whose EdgeShard.load fails on Edge's own lock has already truncated
    files the holder writes (its next flush fails: "tracker journal is shorter than expected"). So
    no process touches the shard's files unless it holds this lock; the kernel drops it on exit."""
    import fcntl

    handle = lock_path.open("a")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise StoreLocked(f"the embedded store at {lock_path.with_suffix('')} is in use by another process "
                          "(usually a running `appliance serve`)") from None
    return handle


def _bm25() -> Any:
    from qdrant_edge import Bm25, Bm25Config

    # English stemming and stopwords; the same tokenisation as a Qdrant server's BM25.
    return Bm25(Bm25Config(language="english"))


class EdgeStore:
    """The Qdrant engine in-process (qdrant-edge-py): HNSW, sparse BM25, RRF fusion, WAL."""

    def __init__(self, path: Path, dimension: int) -> None:
        try:
            import qdrant_edge as qe
        except ImportError:
            raise BackendUnavailable("qdrant-edge-py is not installed: pip install qdrant-edge-py") from None
        self._qe = qe
        self._lock = threading.RLock()
        self._bm25 = _bm25()
        config = qe.EdgeConfig(
            vectors={DENSE: qe.EdgeVectorParams(size=dimension, distance=qe.Distance.Cosine)},
            sparse_vectors={SPARSE: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
        )
        path.mkdir(parents=True, exist_ok=True)
        self._hold = _hold_exclusively(path.parent / f"{path.name}.lock")
        try:
            if (path / "edge_config.json").exists():
                self._shard = qe.EdgeShard.load(str(path), config)
            else:
                self._shard = qe.EdgeShard.create(str(path), config)
            # A store made before an index existed gains it (measured: 0.3 s for 20k points, once).
            have = set(self._shard.info().payload_schema)
            wanted = [(k, qe.PayloadSchemaType.Keyword) for k in KEYWORD_INDEXES]
            wanted += [(k, qe.PayloadSchemaType.Datetime) for k in DATETIME_INDEXES]
            for key, kind in wanted:
                if key not in have:
                    self._shard.update(qe.UpdateOperation.create_field_index(key, kind))
        except Exception as exc:
            text = str(exc)
            self._hold.close()
            if any(w in text.lower() for w in ("lock", "in use", "wouldblock", "resource temporarily")):
                raise StoreLocked(f"the embedded store at {path} is in use by another process "
                                  "(usually a running `appliance serve`)") from None
            if "incompatible" in text.lower() and "vector size" in text.lower():
                raise BackendUnavailable(
                    f"the embedded store at {path} was filled by another embedding model ({text.split(': ')[-1]}): "
                    "the embedding model changed; ingest into a new store.collection or restore the old model"
                ) from None
            raise

    def upsert(self, points: list[StorePoint]) -> None:
        qe = self._qe
        built = [
            qe.Point(
                id=p.id,
                vector={DENSE: p.vector, SPARSE: self._bm25.embed_document(p.indexed_text)},
                payload={**p.payload, "text": p.text},
            )
            for p in points
        ]
        with self._lock:
            self._shard.update(qe.UpdateOperation.upsert_points(built))

    def delete(self, ids: list[str]) -> None:
        if ids:
            with self._lock:
                self._shard.update(self._qe.UpdateOperation.delete_points(list(ids)))

    def set_groups(self, ids: list[str], groups: list[str]) -> None:
        """Who may read these chunks: a payload update, nothing re-embedded."""
        if ids:
            with self._lock:
                self._shard.update(self._qe.UpdateOperation.set_payload(list(ids), {"acl_groups": list(groups)}))

    def _filter(self, groups: list[str] | None, exclude: Collection[str] = (), doc_id: str | None = None,
                scope: Scope | None = None) -> Any:
        """The reader's groups, the document, the scope, and the chunks not published (ingest.manifest's hidden)."""
        qe = self._qe
        must: list[Any] = []
        if groups is not None:
            must.append(qe.FieldCondition(key="acl_groups", match=qe.MatchAny(any=list(groups))))
        if doc_id is not None:
            must.append(qe.FieldCondition(key="doc_id", match=qe.MatchValue(doc_id)))
        must += conditions(scope, qe, qe.RangeDateTime)
        must_not = [qe.HasIdCondition(set(exclude))] if exclude else None
        return qe.Filter(must=must or None, must_not=must_not) if must or must_not else None

    def search(self, dense: list[float], text: str, limit: int, candidates: int,
               groups: list[str] | None = None, spec: SearchSpec = SearchSpec(),
               exclude: Collection[str] = (), scope: Scope | None = None) -> list[Hit]:
        qe = self._qe
        flt = self._filter(groups, exclude, scope=scope)
        sparse = self._bm25.embed_query(text)
        dense_q = qe.Query.Nearest(dense, using=DENSE)
        sparse_q = qe.Query.Nearest(sparse, using=SPARSE)
        # The first two give every hit its dense and BM25 scores (the relevance rules use them).
        requests = [
            qe.QueryRequest(limit=candidates, query=dense_q, filter=flt, with_payload=False),
            qe.QueryRequest(limit=candidates, query=sparse_q, filter=flt, with_payload=False),
        ]
        if spec.mode == "hybrid":
            fusion = (qe.Fusion.Dbsf() if spec.fusion == "dbsf"
                      else qe.Fusion.Rrf(k=spec.rrf_k, weights=[spec.dense_weight, spec.keyword_weight]))
            requests.append(qe.QueryRequest(
                limit=limit, query=fusion, filter=flt, with_payload=True,
                prefetches=[qe.Prefetch(limit=candidates, query=dense_q, filter=flt),
                            qe.Prefetch(limit=candidates, query=sparse_q, filter=flt)],
            ))
        else:
            single = dense_q if spec.mode == "dense" else sparse_q
            requests.append(qe.QueryRequest(limit=limit, query=single, filter=flt, with_payload=True))
        with self._lock:
            dense_hits, sparse_hits, ranked = self._shard.query_batch(qe.QueryBatchRequest(requests))
        return _merge(
            [(str(p.id), p.score, p.payload or {}) for p in ranked],
            {str(p.id): p.score for p in dense_hits},
            {str(p.id): p.score for p in sparse_hits},
        )

    def chunks_of(self, doc_id: str, limit: int, exclude: Collection[str] = (),
                  groups: list[str] | None = None) -> list[Hit]:
        """A document's chunks in reading order (at most `limit`), those the groups may read."""
        qe = self._qe
        flt = self._filter(groups, exclude, doc_id)
        with self._lock:
            records, _next = self._shard.scroll(qe.ScrollRequest(limit=limit, filter=flt, with_payload=True))
        return _reading_order(records)

    def retrieve(self, ids: list[str]) -> list[StorePoint]:
        """Points by id, with vector and text (the ones not found are left out)."""
        if not ids:
            return []
        with self._lock:
            records = self._shard.retrieve(list(ids), with_payload=True, with_vector=[DENSE])
        return [_as_point(r) for r in records]

    def count(self) -> int:
        with self._lock:
            return int(self._shard.count(self._qe.CountRequest(exact=True)))

    def scroll(self, batch: int = 256) -> Iterator[list[StorePoint]]:
        """Every point with its dense vector and text, in pages of `batch` (ordered by id)."""
        qe = self._qe
        offset: Any = None
        while True:
            # The lock is held per page only, so a long copy does not stall searches.
            with self._lock:
                records, offset = self._shard.scroll(
                    qe.ScrollRequest(offset=offset, limit=batch, with_payload=True, with_vector=[DENSE]))
            if records:
                yield [_as_point(r) for r in records]
            if offset is None:
                return

    def flush(self) -> None:
        with self._lock:
            self._shard.flush()

    def optimize(self) -> None:
        with self._lock:
            self._shard.optimize()

    def close(self) -> None:
        with self._lock:
            try:
                self._shard.flush()
            finally:
                self._shard.close()
                self._hold.close()  # released only once the shard is closed: see _hold_exclusively


class QdrantServerStore:
    """A Qdrant server or cluster through qdrant-client (or its local mode, for tests)."""

    def __init__(self, settings: QdrantServerStoreSettings, dimension: int) -> None:
        try:
            from qdrant_client import QdrantClient, models
        except ImportError:
            raise BackendUnavailable("qdrant-client is not installed: pip install qdrant-client") from None
        if not settings.url and not settings.path:
            raise BackendUnavailable("store.provider=qdrant needs store.url (or store.path for local mode)")
        self._m = models
        self._collection = settings.collection
        self._bm25 = _bm25()
        api_key = settings.api_key.get_secret_value() if settings.api_key else None
        if settings.url:
            tls: dict[str, Any] = {}
            if settings.ca_cert:
                # REST only: extra kwargs reach httpx, which takes a context (a path is deprecated).
                # The client's version check is a bare httpx.get that cannot see this CA: it would
                # only ever warn, so it is skipped.
                tls = {"verify": _ca_context(settings.ca_cert), "check_compatibility": False}
            self._client = QdrantClient(url=settings.url, api_key=api_key,
                                        timeout=max(1, round(settings.timeout_s)), **tls)
        else:
            self._client = QdrantClient(path=str(settings.path))
        try:
            exists = self._client.collection_exists(self._collection)
        except Exception as exc:
            raise BackendUnavailable(f"cannot use Qdrant at {settings.url or settings.path}: {exc}") from exc
        if exists:
            info = self._client.get_collection(self._collection)
            self._check_dimension(info, dimension)
            if settings.url:  # local mode has no payload indexes
                self._add_indexes(set(info.payload_schema or {}))
            return
        on_disk = settings.on_disk or None  # None leaves the server's defaults
        self._client.create_collection(
            self._collection,
            vectors_config={DENSE: models.VectorParams(size=dimension, distance=models.Distance.COSINE,
                                                       on_disk=on_disk)},
            sparse_vectors_config={SPARSE: models.SparseVectorParams(
                modifier=models.Modifier.IDF, index=models.SparseIndexParams(on_disk=on_disk))},
            # Fixed at creation on a server; local mode accepts and ignores them.
            shard_number=settings.shard_number,
            replication_factor=settings.replication_factor,
            write_consistency_factor=settings.write_consistency_factor,
            on_disk_payload=on_disk,
        )
        if settings.url:
            self._add_indexes(set())

    def _add_indexes(self, have: set[str]) -> None:
        """The payload indexes a collection lacks (one made before an index existed gains it)."""
        m = self._m
        wanted = [(k, m.PayloadSchemaType.KEYWORD) for k in KEYWORD_INDEXES]
        wanted += [(k, m.PayloadSchemaType.DATETIME) for k in DATETIME_INDEXES]
        for key, kind in wanted:
            if key not in have:
                self._client.create_payload_index(self._collection, key, kind)

    def _check_dimension(self, info: Any, dimension: int) -> None:
        """An existing collection must hold vectors of the embedding model's size."""
        vectors = info.config.params.vectors
        params = vectors.get(DENSE) if isinstance(vectors, dict) else None
        size = getattr(params, "size", None)
        if size is None:
            raise BackendUnavailable(f"collection {self._collection!r} has no {DENSE!r} vector: it was not made "
                                     "by the appliance; choose another store.collection")
        if size != dimension:
            raise BackendUnavailable(
                f"collection {self._collection!r} holds {DENSE!r} vectors of size {size}, but the embedding model "
                f"makes {dimension}: the model changed since it was filled; ingest into a new collection "
                "(store.collection)")

    def upsert(self, points: list[StorePoint]) -> None:
        m = self._m
        built = []
        for p in points:
            sparse = self._bm25.embed_document(p.indexed_text)
            built.append(
                m.PointStruct(
                    id=p.id,
                    vector={DENSE: p.vector, SPARSE: m.SparseVector(indices=sparse.indices, values=sparse.values)},
                    payload={**p.payload, "text": p.text},
                )
            )
        self._client.upsert(self._collection, built, wait=True)

    def delete(self, ids: list[str]) -> None:
        if ids:
            self._client.delete(self._collection, self._m.PointIdsList(points=list(ids)), wait=True)

    def set_groups(self, ids: list[str], groups: list[str]) -> None:
        """Who may read these chunks: a payload update, nothing re-embedded."""
        if ids:
            self._client.set_payload(self._collection, {"acl_groups": list(groups)}, points=list(ids), wait=True)

    def _filter(self, groups: list[str] | None, exclude: Collection[str] = (), doc_id: str | None = None,
                scope: Scope | None = None) -> Any:
        m = self._m
        must: list[Any] = []
        if groups is not None:
            must.append(m.FieldCondition(key="acl_groups", match=m.MatchAny(any=list(groups))))
        if doc_id is not None:
            must.append(m.FieldCondition(key="doc_id", match=m.MatchValue(value=doc_id)))
        must += conditions(scope, m, m.DatetimeRange)
        must_not: list[Any] | None = [m.HasIdCondition(has_id=list(exclude))] if exclude else None
        return m.Filter(must=must or None, must_not=must_not) if must or must_not else None

    def search(self, dense: list[float], text: str, limit: int, candidates: int,
               groups: list[str] | None = None, spec: SearchSpec = SearchSpec(),
               exclude: Collection[str] = (), scope: Scope | None = None) -> list[Hit]:
        m = self._m
        flt = self._filter(groups, exclude, scope=scope)
        sq = self._bm25.embed_query(text)
        sparse = m.SparseVector(indices=sq.indices, values=sq.values)
        requests = [
            m.QueryRequest(query=dense, using=DENSE, limit=candidates, filter=flt),
            m.QueryRequest(query=sparse, using=SPARSE, limit=candidates, filter=flt),
        ]
        if spec.mode == "hybrid":
            # Weights need a recent server; plain RRF is sent as before when they are equal.
            weights = None if spec.dense_weight == spec.keyword_weight else [spec.dense_weight, spec.keyword_weight]
            fusion: Any = (m.FusionQuery(fusion=m.Fusion.DBSF) if spec.fusion == "dbsf"
                           else m.RrfQuery(rrf=m.Rrf(k=spec.rrf_k, weights=weights)))
            requests.append(m.QueryRequest(
                prefetch=[m.Prefetch(query=dense, using=DENSE, limit=candidates, filter=flt),
                          m.Prefetch(query=sparse, using=SPARSE, limit=candidates, filter=flt)],
                query=fusion, limit=limit, filter=flt, with_payload=True,
            ))
        else:
            single: Any = dense if spec.mode == "dense" else sparse
            requests.append(m.QueryRequest(query=single, using=DENSE if spec.mode == "dense" else SPARSE,
                                           limit=limit, filter=flt, with_payload=True))
        dense_r, sparse_r, ranked = self._client.query_batch_points(self._collection, requests)
        return _merge(
            [(str(p.id), p.score, p.payload or {}) for p in ranked.points],
            {str(p.id): p.score for p in dense_r.points},
            {str(p.id): p.score for p in sparse_r.points},
        )

    def chunks_of(self, doc_id: str, limit: int, exclude: Collection[str] = (),
                  groups: list[str] | None = None) -> list[Hit]:
        """A document's chunks in reading order (at most `limit`), those the groups may read."""
        flt = self._filter(groups, exclude, doc_id)
        records, _next = self._client.scroll(self._collection, scroll_filter=flt, limit=limit, with_payload=True)
        return _reading_order(records)

    def retrieve(self, ids: list[str]) -> list[StorePoint]:
        """Points by id, with vector and text (the ones not found are left out)."""
        if not ids:
            return []
        records = self._client.retrieve(self._collection, list(ids), with_payload=True, with_vectors=[DENSE])
        return [_as_point(r) for r in records]

    def count(self) -> int:
        return int(self._client.count(self._collection, exact=True).count)

    def scroll(self, batch: int = 256) -> Iterator[list[StorePoint]]:
        """Every point with its dense vector and text, in pages of `batch` (ordered by id)."""
        offset: Any = None
        while True:
            records, offset = self._client.scroll(self._collection, limit=batch, offset=offset,
                                                  with_payload=True, with_vectors=[DENSE])
            if records:
                yield [_as_point(r) for r in records]
            if offset is None:
                return

    def flush(self) -> None:
        """Writes are acknowledged with wait=True; nothing to flush."""

    def optimize(self) -> None:
        """The server optimizes on its own."""

    def close(self) -> None:
        self._client.close()


def _merge(fused: list[tuple[str, float, dict[str, Any]]], dense: dict[str, float],
           sparse: dict[str, float]) -> list[Hit]:
    return [
        Hit(id=pid, score=score, payload=payload, dense_score=dense.get(pid), keyword_score=sparse.get(pid))
        for pid, score, payload in fused
    ]


def _as_point(record: Any) -> StorePoint:
    """A scrolled record (either engine) back as the StorePoint it was written from."""
    payload = dict(record.payload or {})
    text = str(payload.pop("text", ""))
    vector = record.vector[DENSE] if isinstance(record.vector, dict) else record.vector
    return StorePoint(id=str(record.id), vector=[float(x) for x in vector], text=text, payload=payload)


def _ca_context(ca_cert: Path) -> ssl.SSLContext:
    """Trusts only the given CA (a PEM bundle, or a folder of hashed certs), not the system store."""
    if not ca_cert.exists():
        raise BackendUnavailable(f"store.ca_cert {ca_cert} does not exist")
    if ca_cert.is_dir():
        return ssl.create_default_context(capath=str(ca_cert))
    return ssl.create_default_context(cafile=str(ca_cert))


def _reading_order(records: Any) -> list[Hit]:
    """Scrolled records of one document as hits, sorted by their place in it."""
    hits = [Hit(id=str(r.id), score=0.0, payload=r.payload or {}) for r in records]
    return sorted(hits, key=lambda h: int(h.payload.get("chunk_index") or 0))


def build_store(settings: EmbeddedStoreSettings | QdrantServerStoreSettings, store_dir: Path,
                dimension: int) -> ChunkStore:
    if settings.provider == "embedded":
        return EdgeStore(store_dir / settings.collection, dimension)
    return QdrantServerStore(settings, dimension)
