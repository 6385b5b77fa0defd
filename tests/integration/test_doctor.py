"""`appliance doctor`'s checks against the real parts: embedded models and store, and model servers that are down."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.backends.store import EdgeStore
from appliance.ops.doctor import Check, checks_to_json, render_table, run_checks, worst
from tests.conftest import make_services

NAMES = ["configuration", "chat model", "embedding model", "store", "database", "embedding dimension", "reranker",
         "sign-in", "audit trail", "ocr", "disk space", "telemetry", "proxy", "remote endpoints"]
# Nothing listens on port 9 (discard): a model server that is down.
OLLAMA_DOWN = {"provider": "ollama", "model": "mistral-small4", "host": "http://127.0.0.1:9"}
OPENAI_DOWN = {"provider": "openai", "base_url": "http://127.0.0.1:9/v1", "model": "x"}


@pytest.fixture
def doctor(data_dir: Path) -> Iterator[Any]:
    """Runs the checks on services built from these overrides, and closes every one of them."""
    opened: list[Any] = []

    def run(**overrides: Any) -> dict[str, Check]:
        services = make_services(data_dir, **overrides)
        opened.append(services)
        checks = run_checks(services)
        assert [c.name for c in checks] == NAMES
        return {c.name: c for c in checks}

    yield run
    for services in opened:
        services.close()


def test_embedded_default_is_healthy(doctor: Any) -> None:
    checks = doctor()
    bad = {c.name: c.detail for c in checks.values() if c.status not in ("ok", "warn")}
    assert not bad
    for name in ("configuration", "chat model", "embedding model", "store", "embedding dimension", "reranker",
                 "sign-in", "audit trail", "telemetry", "remote endpoints"):
        assert checks[name].status == "ok", checks[name]
    assert ".gguf" in checks["chat model"].detail
    assert "384 dimensions" in checks["embedding model"].detail
    assert checks["store"].detail.startswith("0 chunks")
    assert checks["database"].detail.startswith("SQLite files in ")
    assert "0 documents" in checks["database"].detail
    assert "384-dimension" in checks["embedding dimension"].detail
    assert checks["reranker"].detail == "none configured"
    assert "GiB free" in checks["disk space"].detail
    assert "in-process" in checks["remote endpoints"].detail
    assert worst(list(checks.values())) in ("ok", "warn")

    table = render_table(list(checks.values()))
    assert all(len(line) <= 120 for line in table.splitlines())
    assert table.splitlines()[0].split() == ["check", "status", "detail", "fix"]
    rows = checks_to_json(list(checks.values()))
    assert rows[0] == {"name": "configuration", "status": "ok", "detail": checks["configuration"].detail, "fix": ""}


def test_ollama_down_fails_the_chat_model_only(doctor: Any) -> None:
    checks = doctor(llm=OLLAMA_DOWN)
    chat = checks["chat model"]
    assert chat.status == "fail"
    assert "cannot reach Ollama at http://127.0.0.1:9" in chat.detail
    assert "ollama serve" in chat.detail
    assert chat.fix
    # The checks after it still ran, on the real embedding model and store.
    for name in ("embedding model", "store", "embedding dimension", "telemetry"):
        assert checks[name].status == "ok", checks[name]
    assert checks["remote endpoints"].detail == "contacts llm.host 127.0.0.1 (loopback)"
    assert worst(list(checks.values())) == "fail"


def test_openai_server_down_fails_the_chat_model_only(doctor: Any) -> None:
    checks = doctor(llm=OPENAI_DOWN)
    chat = checks["chat model"]
    assert chat.status == "fail"
    assert "cannot reach the model server at http://127.0.0.1:9/v1" in chat.detail
    assert "model server" in chat.fix
    for name in ("embedding model", "store", "embedding dimension"):
        assert checks[name].status == "ok", checks[name]
    assert "llm.base_url 127.0.0.1 (loopback)" in checks["remote endpoints"].detail


def test_store_held_by_another_process_is_a_warning(doctor: Any, data_dir: Path) -> None:
    held = make_services(data_dir, llm=OLLAMA_DOWN)
    try:
        held.store.count()  # as a running `appliance serve` would
        checks = doctor(llm=OLLAMA_DOWN)
    finally:
        held.close()
    assert checks["store"].status == "warn"
    assert "in use" in checks["store"].detail
    assert "/readyz" in checks["store"].fix
    # Read from the shard's config file, which the lock does not cover.
    assert checks["embedding dimension"].status == "ok"


def test_collection_of_another_dimension_fails(doctor: Any, data_dir: Path) -> None:
    EdgeStore(data_dir / "store" / "documents", 128).close()  # filled by some other embedding model
    checks = doctor(llm=OLLAMA_DOWN)
    assert checks["store"].status == "fail"
    dim = checks["embedding dimension"]
    assert dim.status == "fail"
    assert "128-dimension" in dim.detail
    assert "makes 384" in dim.detail
    assert "new collection" in dim.fix


def test_table_wraps_to_width_and_worst_ranks() -> None:
    checks = [
        Check("store", "ok", "12 chunks"),
        Check("a long check name that goes on", "warn", "word " * 80, "fix " * 50),
        Check("disk space", "fail", "/" + "q" * 300, "free space"),
    ]
    table = render_table(checks)
    assert all(len(line) <= 120 for line in table.splitlines())
    assert "".join(table.split()).count("q") == 300  # an unbroken path wraps, nothing is lost
    assert worst(checks) == "fail"
    assert worst(checks[:2]) == "warn"
    assert worst([]) == "ok"


def test_sign_in_without_users_and_weak_secrets_are_reported(doctor: Any) -> None:
    checks = doctor(server={"host": "0.0.0.0"}, rerank={"provider": "http", "url": "http://127.0.0.1:9/rerank",
                                                       "api_key": "changeme"})
    assert checks["sign-in"].status == "warn"
    assert "no user exists" in checks["sign-in"].detail
    assert checks["configuration"].status == "fail"
    assert "rerank.api_key" in checks["configuration"].detail
    assert "changeme" not in checks["configuration"].detail


def test_the_shared_database_is_checked(doctor: Any, postgres_url: str, tmp_path: Path) -> None:
    checks = doctor(database={"url": postgres_url})
    assert checks["database"].status == "warn", checks["database"]  # shared tables, but this store is local
    assert "shared by every replica" in checks["database"].detail
    assert "0 users, 0 documents" in checks["database"].detail
    assert "store.provider: qdrant" in checks["database"].fix
    down = doctor(database={"url": f"postgresql://appliance@/appliance?host={tmp_path / 'no-server'}"})
    assert down["database"].status == "fail"
    assert "PostgreSQL database 'appliance'" in down["database"].detail
    assert "check database.url and database.password" in down["database"].detail
    assert down["chat model"].status == "ok"  # the rest is still told
