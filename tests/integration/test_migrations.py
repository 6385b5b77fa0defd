"""Alembic owns the schema: databases made before it existed are adopted as they are, older ones gain
the columns they lack, and every store's branch reaches its newest revision on SQLite and PostgreSQL."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from click.testing import CliRunner

from appliance.access.apikeys import ApiKeys
from appliance.access.auth import Users
from appliance.cli import main
from appliance.stores.conversations import Conversations
from appliance.stores.database import connect, head, revision
from ingest.manifest import Manifest

PRE_ALEMBIC = Path(__file__).parents[1] / "fixtures" / "pre_alembic"  # made by d8ae896 (its README says how)
STORES = {"users.sqlite": "users", "api_keys.sqlite": "api_keys", "conversations.sqlite": "conversations",
          "manifest.sqlite": "manifest"}


def _revision(path: Path, store: str) -> str | None:
    db = connect(path)
    try:
        with db.begin() as tx:
            return revision(tx, store)
    finally:
        db.close()


@pytest.fixture
def old_data(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    data.mkdir()
    for name in STORES:
        shutil.copy(PRE_ALEMBIC / name, data / name)
    return data


def test_a_database_made_before_alembic_is_adopted_with_every_row(old_data: Path) -> None:
    for name, store in STORES.items():
        assert _revision(old_data / name, store) is None

    users = Users(old_data / "users.sqlite")
    alice = users.get("alice")
    assert alice is not None
    assert alice.admin
    assert alice.groups == ["finance"]
    assert users.verify_password("alice", "correct horse battery staple") is not None
    assert users.get("bob") is None
    with pytest.raises(Exception, match="belonged to a removed user"):
        users.add("bob", "a brand new passphrase")
    users.close()

    keys = ApiKeys(old_data / "api_keys.sqlite")
    assert {(k.name, k.user) for k in keys.list()} == {("ci-bot", "alice"), ("service", None)}
    keys.close()

    conversations = Conversations(old_data / "conversations.sqlite")
    (conv,) = conversations.list("alice")
    turns = conversations.get("alice", conv.id)
    assert turns is not None
    assert turns.turns[0].sources[0]["file"] == "policy.pdf"
    manifest = Manifest(old_data / "manifest.sqlite")
    record = manifest.get("/docs/policy.pdf")
    assert record is not None
    assert record.chunk_ids == ["c1", "c2"]
    assert record.config == "cfg1"
    assert manifest.hidden_ids() == ["c3"]
    manifest.close()
    conversations.close()

    for name, store in STORES.items():
        assert _revision(old_data / name, store) == head(store)


def test_db_status_and_upgrade_from_the_command_line(old_data: Path) -> None:
    runner = CliRunner()
    before = runner.invoke(main, ["db", "status", "--data-dir", str(old_data)])
    assert before.exit_code == 1, before.output
    assert before.output.count("behind") == len(STORES)
    upgraded = runner.invoke(main, ["db", "upgrade", "--json", "--data-dir", str(old_data)])
    assert upgraded.exit_code == 0, upgraded.output
    after = runner.invoke(main, ["db", "status", "--data-dir", str(old_data)])
    assert after.exit_code == 0, after.output
    assert after.output.count("current") == len(STORES), after.output


def test_api_keys_made_before_users_existed_gain_their_columns(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.sqlite"
    with sqlite3.connect(path) as db:  # the table of the first release, with one key
        db.execute("CREATE TABLE api_keys (name TEXT PRIMARY KEY, sha256 TEXT NOT NULL UNIQUE, hint TEXT NOT NULL, "
                   "created_at DOUBLE PRECISION NOT NULL, last_used_at DOUBLE PRECISION)")
        db.execute("INSERT INTO api_keys VALUES ('old', 'x', 'rag-abc', 1.0, NULL)")
    db.close()
    keys = ApiKeys(path)
    (old,) = keys.list()
    assert (old.name, old.user, old.admin) == ("old", None, False)  # a service key, not an admin
    keys.create("new", user="carol")
    assert {k.name for k in keys.list()} == {"old", "new"}
    keys.close()


def test_two_processes_opening_a_new_database_at_once_upgrade_it_once(tmp_path: Path) -> None:
    import concurrent.futures

    path = tmp_path / "users.sqlite"
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for users in pool.map(lambda _: Users(path), range(4)):
            users.close()
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT count(*) FROM alembic_version_users").fetchone() == (1,)
    db.close()
