"""A user of the identity provider is bound to the issuer and `sub` of their first sign-in (users_0002):
another subject with the same name is refused, on SQLite and PostgreSQL, and an account made before
the migration adopts the first subject it sees."""

from __future__ import annotations

import concurrent.futures
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest

from appliance.access.auth import AuthError, Users
from appliance.stores.database import Postgres, Where, connect, head, revision

ISSUER = "https://sso.example.internal/realms/acme"


@pytest.fixture(params=["sqlite", "postgresql"])
def where(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], Where]:
    if request.param == "sqlite":
        return lambda: tmp_path / "users.sqlite"
    url = request.getfixturevalue("postgres_url")
    return lambda: Postgres(url)


def test_another_subject_with_a_bound_name_is_refused(where: Callable[[], Where]) -> None:
    users = Users(where())
    users.upsert_external("dana", ["hr"], True, ISSUER, "f:1111")
    with pytest.raises(AuthError, match="belongs to another person"):
        users.upsert_external("dana", ["sales"], False, ISSUER, "f:2222")
    with pytest.raises(AuthError, match="belongs to another person"):  # sub is unique per issuer only
        users.upsert_external("dana", ["sales"], False, "https://other.example.internal", "f:1111")
    dana = users.get("dana")
    assert dana is not None
    assert (dana.groups, dana.admin) == (["hr"], True)
    assert users.upsert_external("dana", ["finance"], False, ISSUER, "f:1111").groups == ["finance"]
    users.close()


def test_two_first_sign_ins_at_once_bind_the_name_to_one_subject(where: Callable[[], Where]) -> None:
    replicas = [Users(where()) for _ in range(4)]

    def sign_in(i: int) -> str:
        try:
            replicas[i].upsert_external("erin", [], False, ISSUER, f"f:{i}")
        except AuthError:
            return "refused"
        return "ok"

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        outcomes = list(pool.map(sign_in, range(4)))
    assert sorted(outcomes) == ["ok", "refused", "refused", "refused"]
    for users in replicas:
        users.close()


def test_an_account_made_before_subjects_were_kept_adopts_the_first_it_sees(tmp_path: Path) -> None:
    path = tmp_path / "users.sqlite"
    with sqlite3.connect(path) as db:  # the tables as users_0001 made them, with an OIDC user signed in
        db.execute("CREATE TABLE users (name TEXT PRIMARY KEY, password TEXT, groups TEXT NOT NULL, admin INTEGER "
                   "NOT NULL, source TEXT NOT NULL, disabled INTEGER NOT NULL DEFAULT 0, created_at DOUBLE PRECISION "
                   "NOT NULL, last_sign_in DOUBLE PRECISION)")
        db.execute('CREATE TABLE sessions (sha256 TEXT PRIMARY KEY, "user" TEXT NOT NULL REFERENCES users(name) '
                   "ON DELETE CASCADE, created_at DOUBLE PRECISION NOT NULL, last_seen DOUBLE PRECISION NOT NULL, "
                   "csrf TEXT NOT NULL)")
        db.execute("CREATE TABLE retired (name TEXT PRIMARY KEY, removed_at DOUBLE PRECISION NOT NULL)")
        db.execute("""INSERT INTO users VALUES ('olga', NULL, '["hr"]', 0, 'oidc', 0, 1.0, 2.0)""")
    db.close()
    users = Users(path)
    database = connect(path)
    with database.begin() as tx:
        assert revision(tx, "users") == head("users") == "users_0002"
    database.close()
    assert users.upsert_external("olga", ["hr", "finance"], False, ISSUER, "f:olga").groups == ["finance", "hr"]
    with pytest.raises(AuthError, match="belongs to another person"):
        users.upsert_external("olga", [], False, ISSUER, "f:newcomer")
    # Sessions and local users work on the new columns: a password session has no provider to sign out of.
    users.add("paul", "Tulip-Harbor-9921")
    session = users.session(users.start_session("paul"))
    assert session is not None
    assert session.sign_out_url is None
    url = "https://sso.example.internal/logout?id_token_hint=eyJ.a.b"
    session = users.session(users.start_session("olga", url))
    assert session is not None
    assert session.sign_out_url == url
    users.close()
