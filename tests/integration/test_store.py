"""Both store backends against the real engines: Qdrant Edge, and qdrant-client (local mode)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.backends.common import BackendUnavailable
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


def _private_ca(tmp_path: Path) -> tuple[Path, Path, Path]:
    """A CA of our own and a certificate it signed for 127.0.0.1: (ca.pem, server.pem, server.key)."""
    import datetime
    import ipaddress

    x509 = pytest.importorskip("cryptography.x509")
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)

    def cert(subject: str, key: Any, issuer: str, signer: Any, ca: bool) -> Any:
        builder = (x509.CertificateBuilder()
                   .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
                   .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer)]))
                   .public_key(key.public_key()).serial_number(x509.random_serial_number())
                   .not_valid_before(now - datetime.timedelta(minutes=5))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if not ca:
            builder = builder.add_extension(
                x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
        return builder.sign(signer, hashes.SHA256())

    ca_key, server_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    files = tmp_path / "ca.pem", tmp_path / "server.pem", tmp_path / "server.key"
    files[0].write_bytes(cert("Test CA", ca_key, "Test CA", ca_key, True).public_bytes(serialization.Encoding.PEM))
    files[1].write_bytes(cert("qdrant", server_key, "Test CA", ca_key, False).public_bytes(serialization.Encoding.PEM))
    files[2].write_bytes(server_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    return files


@pytest.fixture
def tls_qdrant(tmp_path: Path) -> Iterator[tuple[str, Path, list[tuple[str, str, Any]]]]:
    """Just enough of Qdrant's REST API over HTTPS (private CA) to create a collection: (url, ca, requests)."""
    import json
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    ca, server_cert, server_key = _private_ca(tmp_path)
    seen: list[tuple[str, str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, result: Any) -> None:
            body = json.dumps({"result": result, "status": "ok", "time": 0.0}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            seen.append(("GET", self.path, None))
            if self.path == "/":
                body = json.dumps({"title": "qdrant - vector search engine", "version": "1.15.0"}).encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)
            else:
                self._answer({"exists": False})

        def do_PUT(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])) or b"null")
            seen.append(("PUT", self.path.split("?")[0], body))
            self._answer(True if "/index" not in self.path else {"operation_id": 1, "status": "completed"})

        def log_message(self, *args: Any) -> None:
            pass

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(server_cert, server_key)
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    before = set(threading.enumerate())
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"https://127.0.0.1:{server.server_address[1]}", ca, seen
    # qdrant-client checks the server version in a thread of its own: let it end inside this test.
    for t in set(threading.enumerate()) - before - {thread}:
        t.join(timeout=10)
    server.shutdown()
    server.server_close()


def test_a_server_behind_a_private_ca_is_reached_with_ca_cert(
        tls_qdrant: tuple[str, Path, list[tuple[str, str, Any]]]) -> None:
    url, ca, seen = tls_qdrant
    settings = QdrantServerStoreSettings(url=url, ca_cert=ca, collection="docs", shard_number=2,
                                         replication_factor=2, write_consistency_factor=2, on_disk=True)
    QdrantServerStore(settings, 384).close()
    created = next(body for method, path, body in seen if method == "PUT" and path == "/collections/docs")
    assert created["vectors"]["dense"] == {"size": 384, "distance": "Cosine", "on_disk": True}
    assert created["sparse_vectors"]["bm25"] == {"index": {"on_disk": True}, "modifier": "idf"}
    assert (created["shard_number"], created["replication_factor"], created["write_consistency_factor"],
            created["on_disk_payload"]) == (2, 2, 2, True)
    indexed = {body["field_name"] for method, path, body in seen if path == "/collections/docs/index"}
    assert indexed == {"acl_groups", "doc_id", "path", "folders", "file_type", "date"}


@pytest.mark.filterwarnings("ignore:Failed to obtain server version")  # it cannot verify the server either
def test_a_private_ca_is_not_trusted_without_ca_cert(tls_qdrant: tuple[str, Path, list[Any]]) -> None:
    url, _ca, _seen = tls_qdrant
    with pytest.raises(BackendUnavailable, match="CERTIFICATE_VERIFY_FAILED"):
        QdrantServerStore(QdrantServerStoreSettings(url=url, collection="docs"), 384)


def test_a_missing_ca_cert_is_named(tmp_path: Path) -> None:
    settings = QdrantServerStoreSettings(url="https://127.0.0.1:1", ca_cert=tmp_path / "nope.pem")
    with pytest.raises(BackendUnavailable, match=r"store\.ca_cert .*nope\.pem does not exist"):
        QdrantServerStore(settings, 384)


def test_an_embedded_store_filled_by_another_model_is_a_clear_error(tmp_path: Path) -> None:
    from appliance.backends.common import BackendUnavailable
    from appliance.backends.store import EdgeStore

    EdgeStore(tmp_path / "shard", 384).close()
    with pytest.raises(BackendUnavailable, match=r"filled by another embedding model .*new store\.collection"):
        EdgeStore(tmp_path / "shard", 1024)


def test_a_second_process_cannot_open_or_damage_a_held_embedded_store(
        tmp_path: Path, embedding: OnnxMiniLMEmbedding) -> None:
    import subprocess
    import sys

    held = EdgeStore(tmp_path / "shard", embedding.dimension)
    try:
        _fill(held, embedding)
        held.flush()
        probe = ("from pathlib import Path; from appliance.backends.store import EdgeStore; "
                 f"EdgeStore(Path({str(tmp_path / 'shard')!r}), {embedding.dimension})")
        proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1
        assert "StoreLocked" in proc.stderr
        assert "in use by another process" in proc.stderr
        # The holder writes on as if nothing happened (an attempt used to truncate its journal files).
        vector = embedding.embed(["Badge access to the server room is granted by facilities."])[0]
        held.upsert([StorePoint(id=str(uuid.uuid4()), vector=list(map(float, vector)),
                                text="Badge access to the server room is granted by facilities.",
                                payload={"doc_id": "badge", "path": "/docs/badge.txt", "acl_groups": ["everyone"]})])
        held.delete([next(iter(_ids().values()))])
        held.optimize()
        held.flush()
        count = held.count()
    finally:
        held.close()
    reopened = EdgeStore(tmp_path / "shard", embedding.dimension)
    try:
        assert reopened.count() == count
    finally:
        reopened.close()
