"""The appliance's tables on both databases: SQLite files (one server) and a real PostgreSQL server
(several replicas). Two instances of each store stand for two replicas, or two ingest runs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.access.apikeys import ApiKeyError, ApiKeys
from appliance.access.auth import AuthError, Users
from appliance.stores.conversations import Conversations, Turn
from appliance.stores.database import IntegrityError, Postgres, Where
from ingest.manifest import FileRecord, LeaseLost, Manifest
from ingest.runs import RunLease

PASSWORD = "Tulip-Harbor-9921"
Opener = Callable[[str], Where]


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    """name -> where that store lives: a SQLite file of the data directory, or the shared database."""
    if request.param == "sqlite":
        return lambda name: tmp_path / f"{name}.sqlite"
    url = request.getfixturevalue("postgres_url")
    return lambda name: Postgres(url)


def test_a_session_started_on_one_replica_is_seen_and_ended_on_another(where: Opener) -> None:
    a, b = Users(where("users")), Users(where("users"))
    a.add("alice", PASSWORD, ["hr"])
    assert b.verify_password("alice", PASSWORD) is not None
    token = a.start_session("alice")
    session = b.session(token)
    assert session is not None
    assert session.user.groups == ["hr"]
    assert b.end_session(token) == "alice"
    assert a.session(token) is None
    with pytest.raises(AuthError, match="exists"):
        b.add("alice", PASSWORD)
    token = b.start_session("alice")
    a.update("alice", disabled=True)
    assert b.session(token) is None
    a.update("alice", disabled=False)
    b.remove("alice")
    with pytest.raises(AuthError, match="removed user"):
        a.add("alice", PASSWORD)
    assert a.count() == 0
    a.close()
    b.close()


def test_api_keys_work_on_every_replica(where: Opener) -> None:
    a, b = ApiKeys(where("api_keys")), ApiKeys(where("api_keys"))
    token = a.create("reporting", user="alice")
    info = b.verify(token)
    assert info is not None
    assert (info.name, info.user) == ("reporting", "alice")
    with pytest.raises(ApiKeyError, match="exists"):
        b.create("reporting")
    b.revoke("reporting")
    assert a.verify(token) is None
    with pytest.raises(ApiKeyError, match="no key"):
        a.revoke("reporting")


def test_a_conversation_continues_on_another_replica(where: Opener) -> None:
    a, b = Conversations(where("conversations")), Conversations(where("conversations"))
    cid = a.create("alice", "What does band E4 pay?")
    assert b.add_turn("alice", cid, Turn("q1", "a1", [{"path": "/x", "page": 2}]))
    assert a.add_turn("alice", cid, Turn("q2", "a2"))
    assert not b.add_turn("bob", cid, Turn("q", "a"))
    got = a.get("alice", cid)
    assert got is not None
    assert [t.question for t in got.turns] == ["q1", "q2"]
    assert got.turns[0].sources == [{"path": "/x", "page": 2}]
    assert b.drop_turn("alice", cid, 1)
    assert b.rename("alice", cid, "Band E4")
    assert [c.title for c in a.list("alice")] == ["Band E4"]
    assert b.get("bob", cid) is None
    assert a.delete("alice", cid)
    assert b.get("alice", cid) is None


def _record(path: str, ids: list[str]) -> FileRecord:
    return FileRecord(path=path, size=1, mtime_ns=1_700_000_000_123_456_789, sha256="ab", status="ok",
                      chunk_ids=ids, acl=["everyone"])


def test_one_file_is_leased_to_one_run_until_it_ends_or_dies(where: Opener) -> None:
    m1, m2 = Manifest(where("manifest")), Manifest(where("manifest"))
    first, second = RunLease(m1), RunLease(m2)
    first.start()
    second.start()
    assert first.claim("/docs/a.pdf")
    assert not second.claim("/docs/a.pdf")
    assert second.claim("/docs/b.pdf")
    assert m2.held_by_live("/docs/a.pdf")
    # The first run's new chunks are hidden, and no other run may delete them while it lives.
    m1.hide_new("/docs/a.pdf", ["p1", "p2"], first.owner)
    assert sorted(m2.hidden_ids()) == ["p1", "p2"]
    assert m2.orphaned_ids() == []
    # A run may publish only a file it holds.
    with pytest.raises(LeaseLost):
        m2.publish(_record("/docs/a.pdf", ["p1", "p2"]), [], second.owner)
    m1.publish(_record("/docs/a.pdf", ["p1", "p2"]), [], first.owner)
    assert m2.hidden_ids() == []
    got = m2.get("/docs/a.pdf")
    assert got is not None
    assert got.mtime_ns == 1_700_000_000_123_456_789  # a nanosecond time needs 64 bits
    first.release("/docs/a.pdf")
    assert second.claim("/docs/a.pdf")
    # A run that dies (no heartbeat) frees its files and orphans its hidden chunks.
    m2.hide_new("/docs/b.pdf", ["p3"], second.owner)
    m1.reap([second.owner])
    assert m1.orphaned_ids() == ["p3"]
    assert first.claim("/docs/b.pdf")
    with pytest.raises(LeaseLost):
        m2.publish(_record("/docs/b.pdf", ["p3"]), [], second.owner)
    first.stop()
    assert not m2.held_by_live("/docs/b.pdf")
    assert m2.workers() == []
    # Hidden rows of an older version (no owner) are orphans too.
    m1.hide_new("/docs/c.pdf", ["p4"])
    assert sorted(m2.orphaned_ids()) == ["p3", "p4"]


def test_a_run_whose_process_is_gone_is_dead_at_once_on_its_machine(where: Opener) -> None:
    import subprocess
    import sys

    m = Manifest(where("manifest"))
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(gone.stdout)
    run = RunLease(m)
    m.register("ghost", run.host, pid, time.time() - 5)
    m.claim("/docs/a.pdf", "ghost")
    run.start()  # reaps the dead run of this machine: no 60 s wait for its heartbeat to run out
    assert [w.owner for w in m.workers()] == [run.owner]
    assert run.claim("/docs/a.pdf")
    run.stop()


def test_limits_and_sign_ins_are_counted_across_replicas(postgres_url: str) -> None:
    from appliance.access.shared_state import SharedRateLimiter, SharedSignInThrottle, SharedState

    a, b = SharedState(Postgres(postgres_url)), SharedState(Postgres(postgres_url))
    on_a, on_b = SharedRateLimiter(a, "questions", 3), SharedRateLimiter(b, "questions", 3)
    assert [on_a.hit("alice"), on_b.hit("alice"), on_a.hit("alice")] == [None, None, None]
    wait = on_b.hit("alice")
    assert wait is not None
    assert 0 < wait <= 60
    assert on_b.hit("bob") is None
    throttle_a, throttle_b = SharedSignInThrottle(a, 2), SharedSignInThrottle(b, 2)
    throttle_a.failed("user:alice", "ip:1")
    throttle_b.failed("user:alice", "ip:2")
    assert throttle_a.blocked("user:alice")
    assert not throttle_b.blocked("ip:1")
    throttle_b.succeeded("user:alice")
    assert not throttle_a.blocked("user:alice")
    # An identity-provider sign-in started on one replica finishes on another, once.
    a.put_sign_in("state-1", "nonce", "verifier", "/")
    assert b.pop_sign_in("state-1", 600) == ("nonce", "verifier", "/")
    assert a.pop_sign_in("state-1", 600) is None


def test_database_url_must_be_postgresql() -> None:
    from appliance.settings import Settings

    with pytest.raises(ValueError, match="postgresql://"):
        Settings(database={"url": "mysql://db/appliance"})
    s = Settings(database={"url": "postgresql://appliance@db:5432/appliance", "password": "pw"})
    target = s.database_for(s.users_path)
    assert isinstance(target, Postgres)
    assert target.engine_url().password == "pw"
    assert target.engine_url().drivername == "postgresql+psycopg"



def test_a_replica_outlives_the_database_dropping_its_connections(postgres_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    users = Users(Postgres(postgres_url))
    users.add("alice", PASSWORD)
    token = users.start_session("alice")
    url = make_url(postgres_url)
    with psycopg.connect(host=url.query["host"], user=url.username, dbname=url.database, autocommit=True) as c:
        dropped = c.execute("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                            "WHERE datname = current_database() AND pid <> pg_backend_pid()").fetchone()
    assert dropped is not None
    assert dropped[0] >= 1  # the replica's pooled connection is gone (a restart, a fail-over)
    session = users.session(token)  # no error: the pool finds the dead connection and opens another
    assert session is not None
    assert session.user.name == "alice"
    users.close()


def test_a_run_counted_dead_can_neither_claim_nor_write_and_hides_nothing_published(where: Opener) -> None:
    ma, mb = Manifest(where("manifest")), Manifest(where("manifest"))
    a, b = RunLease(ma), RunLease(mb)
    a.start()
    b.start()
    assert a.claim("/docs/p.pdf")
    assert ma.hide_new("/docs/p.pdf", ["x1", "x2"], a.owner) == []
    mb.reap([a.owner])  # a paused too long: counted dead, its file taken over by b
    assert not ma.heartbeat(a.owner)  # a learns it at its next beat
    assert not a.claim("/docs/q.pdf")  # a dead run takes no lease
    assert b.claim("/docs/p.pdf")
    assert mb.hide_new("/docs/p.pdf", ["x1", "x2"], b.owner) == []  # a's rows taken over: a is dead
    mb.publish(_record("/docs/p.pdf", ["x1", "x2"]), [], b.owner)
    # a wakes up: it may not hide b's published chunks again, nor publish.
    with pytest.raises(LeaseLost):
        ma.hide_new("/docs/p.pdf", ["x1", "x2"], a.owner)
    with pytest.raises(LeaseLost):
        ma.publish(_record("/docs/p.pdf", ["x1", "x2"]), [], a.owner)
    assert mb.hidden_ids() == []
    assert mb.orphaned_ids() == []
    b.stop()


def test_superseded_chunks_taken_over_by_another_run_are_not_deleted(where: Opener) -> None:
    ma, mc = Manifest(where("manifest")), Manifest(where("manifest"))
    a, c = RunLease(ma), RunLease(mc)
    a.start()
    c.start()
    path = "/docs/p.pdf"
    assert a.claim(path)
    ma.hide_new(path, ["v2"], a.owner)
    ma.publish(_record(path, ["v2"]), ["v1"], a.owner)  # v1 superseded, to be deleted by a in a moment
    a.release(path)
    assert c.claim(path)  # the file is back to its first content: the same ids as v1
    assert mc.hide_new(path, ["v1"], c.owner) == []  # c takes the stale row over
    assert ma.start_deleting(a.owner, ["v1"]) == []  # so a deletes nothing of it
    mc.publish(_record(path, ["v1"]), ["v2"], c.owner)
    mine = mc.start_deleting(c.owner, ["v2"])
    assert mine == ["v2"]
    # While c deletes v2, nobody else may take those rows over: a run writing them waits.
    c.release(path)
    assert a.claim(path)
    assert ma.hide_new(path, ["v2"], a.owner) == ["v2"]
    mc.unhide(mine, c.owner)
    assert ma.hide_new(path, ["v2"], a.owner) == []
    a.stop()
    c.stop()


def test_a_failed_statement_rolls_its_whole_transaction_back(postgres_url: str) -> None:
    from sqlalchemy import text

    from appliance.stores.database import connect

    db = connect(Postgres(postgres_url))
    with db.begin() as tx:
        tx.execute(text("CREATE TABLE IF NOT EXISTS t (k TEXT PRIMARY KEY, v TEXT)"))
        tx.execute(text("INSERT INTO t VALUES (:k, :v)"), {"k": "a", "v": "100%"})
    with db.begin() as tx:  # a literal % and a named parameter side by side
        found = tx.execute(text("SELECT k FROM t WHERE v LIKE '%!%' ESCAPE '!' AND k = :k"), {"k": "a"}).all()
    assert found == [("a",)]

    def insert_twice() -> None:
        with db.begin() as tx:
            tx.execute(text("INSERT INTO t VALUES (:k, :v)"), {"k": "b", "v": "first"})
            tx.execute(text("INSERT INTO t VALUES (:k, :v)"), {"k": "a", "v": "again"})

    with pytest.raises(IntegrityError):
        insert_twice()
    with db.begin() as tx:
        assert tx.execute(text("SELECT k FROM t ORDER BY k")).all() == [("a",)]
        tx.execute(text("DROP TABLE t"))
    db.close()
