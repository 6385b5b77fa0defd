"""Users, passwords and sessions, and who a request is (a Principal).

Passwords are hashed with Argon2id (argon2-cffi's RFC 9106 defaults). A session is 32 random
bytes in an HttpOnly cookie; only its SHA-256 is stored, so a copy of the database opens no
session. Users and sessions live in <data_dir>/users.sqlite (WAL), which the CLI writes while the
server reads, or in the PostgreSQL database that every replica shares (database.url): a user
added, disabled or regrouped counts from that user's next request.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from sqlalchemy import text

from appliance.stores.database import IntegrityError, Where, open_database

EVERYONE = "everyone"  # every signed-in user is in it; files no ACL rule covers are readable by it
USER_PREFIX = "user:"  # a user's own group: their uploads, and files they own (acl posix)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,127}$")
# The start of the usual lists of leaked passwords; the length rule removes most of the rest.
_COMMON = {"password", "password123", "changeme", "admin", "administrator", "letmein", "welcome", "qwerty",
           "qwertyuiop", "123456789012", "1234567890", "iloveyou", "secret", "default", "passw0rd"}



class AuthError(ValueError):
    """A user name, group or password is refused; the message says why."""


def user_group(name: str) -> str:
    return USER_PREFIX + name


@dataclass(frozen=True)
class Principal:
    """Who a request is: what it may read (groups; None: everything) and whether it may administer."""

    name: str
    kind: Literal["user", "key", "local", "server"]
    groups: frozenset[str] | None
    admin: bool

    @property
    def reads(self) -> list[str] | None:
        """The groups for the store's filter (None: no filter)."""
        return None if self.groups is None else sorted(self.groups)

    def can_read(self, acl: Iterable[str]) -> bool:
        return self.groups is None or not self.groups.isdisjoint(acl)

    @property
    def fair_share_key(self) -> str | None:
        """Whose rates and queue share this caller counts against; None for the machine's own operator
        (loopback without sign-in, or server.json), who is not limited."""
        return None if self.kind in ("local", "server") else self.name


SESSION_COOKIE = "appliance_session"  # HttpOnly, SameSite=Lax; only its SHA-256 is stored
LOCAL = Principal("local", "local", None, True)  # loopback without sign-in: the machine's operator


@dataclass
class User:
    name: str
    groups: list[str]
    admin: bool
    source: str
    disabled: bool
    created_at: float
    last_sign_in: float | None = None

    def principal(self) -> Principal:
        return Principal(self.name, "user", frozenset([*self.groups, EVERYONE, user_group(self.name)]), self.admin)


@dataclass
class Session:
    user: User
    csrf: str  # the token forms of this session send back (sign-out)
    sign_out_url: str | None = None  # where the browser signs out at the identity provider too; None: nowhere


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# Names the appliance itself uses for principals that are not users (ui.chat maps names back to them).
RESERVED = frozenset({"local", "server.json", "server", "cli", "admin.local", "everyone", "anonymous"})


def check_name(name: str) -> str:
    name = name.strip().lower()
    if not _NAME.match(name):
        raise AuthError(f"user name {name!r}: 1 to 64 of a-z 0-9 . _ @ -, starting with a letter or digit")
    if name in RESERVED:
        raise AuthError(f"user name {name!r} is reserved by the appliance; choose another")
    return name


def check_groups(groups: Iterable[str]) -> list[str]:
    out = sorted({g.strip() for g in groups if g.strip()})
    for g in out:
        if not _GROUP.match(g):
            raise AuthError(f"group name {g!r}: 1 to 128 letters, digits, spaces or . _ : @ / -")
        if g.startswith(USER_PREFIX):
            raise AuthError(f"group name {g!r}: names starting with {USER_PREFIX!r} are each user's own")
    return out


def check_password(name: str, password: str, min_length: int) -> None:
    if len(password) < min_length:
        raise AuthError(f"the password must have at least {min_length} characters (auth.min_password_length)")
    lowered = password.lower()
    if lowered in _COMMON or name.lower() in lowered or len(set(password)) < 4:
        raise AuthError("the password is too easy to guess: avoid the user name, common words and repeats")


class Users:
    def __init__(self, path: Where, min_password_length: int = 12, idle_s: float = 8 * 3600,
                 max_age_s: float = 24 * 3600) -> None:
        from argon2 import PasswordHasher

        self._hasher = PasswordHasher()
        self._dummy = self._hasher.hash(secrets.token_hex(16))  # unknown users cost a hash too: no timing oracle
        self._min_length = min_password_length
        self._idle_s, self._max_age_s = idle_s, max_age_s
        self._db = open_database(path, "users")
        self._lock = threading.Lock()

    # -- users -----------------------------------------------------------------------------------
    def _not_retired(self, name: str) -> None:
        with self._lock, self._db.begin() as tx:
            gone = tx.execute(text("SELECT 1 FROM retired WHERE name = :name"), {"name": name}).first()
        if gone:
            raise AuthError(f"the name {name!r} belonged to a removed user: it is not given again, so that nobody "
                            "inherits their uploads, conversations or keys; choose another")

    def add(self, name: str, password: str, groups: Iterable[str] = (), admin: bool = False) -> User:
        name = check_name(name)
        self._not_retired(name)
        check_password(name, password, self._min_length)
        user = User(name, check_groups(groups), admin, "local", False, time.time())
        try:
            with self._lock, self._db.begin() as tx:
                tx.execute(text("INSERT INTO users (name, password, groups, admin, source, disabled, created_at) "
                                "VALUES (:name, :hash, :groups, :admin, 'local', 0, :now)"),
                           {"name": name, "hash": self._hasher.hash(password), "groups": json.dumps(user.groups),
                            "admin": int(admin), "now": user.created_at})
        except IntegrityError:
            raise AuthError(f"a user named {name!r} exists") from None
        return user

    def get(self, name: str) -> User | None:
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text(f"SELECT {_USER} FROM users WHERE name = :name"), {"name": name}).first()
        return None if row is None else _user(tuple(row))

    def list(self) -> list[User]:
        with self._lock, self._db.begin() as tx:
            rows = tx.execute(text(f"SELECT {_USER} FROM users ORDER BY name")).all()
        return [_user(tuple(r)) for r in rows]

    def count(self) -> int:
        with self._lock, self._db.begin() as tx:
            return int(tx.execute(text("SELECT count(*) FROM users")).scalar_one())

    def _require(self, name: str) -> str:
        name = name.strip().lower()
        if self.get(name) is None:
            raise AuthError(f"no user named {name!r} (`appliance users list`)")
        return name

    def set_password(self, name: str, password: str) -> None:
        """A new password; every session of the user ends."""
        name = self._require(name)
        check_password(name, password, self._min_length)
        with self._lock, self._db.begin() as tx:
            tx.execute(text("UPDATE users SET password = :hash, source = 'local' WHERE name = :name"),
                       {"hash": self._hasher.hash(password), "name": name})
            tx.execute(text('DELETE FROM sessions WHERE "user" = :name'), {"name": name})

    def update(self, name: str, groups: Iterable[str] | None = None, admin: bool | None = None,
               disabled: bool | None = None) -> User:
        name = self._require(name)
        with self._lock, self._db.begin() as tx:
            if groups is not None:
                tx.execute(text("UPDATE users SET groups = :groups WHERE name = :name"),
                           {"groups": json.dumps(check_groups(groups)), "name": name})
            if admin is not None:
                tx.execute(text("UPDATE users SET admin = :admin WHERE name = :name"),
                           {"admin": int(admin), "name": name})
            if disabled is not None:
                tx.execute(text("UPDATE users SET disabled = :disabled WHERE name = :name"),
                           {"disabled": int(disabled), "name": name})
                if disabled:
                    tx.execute(text('DELETE FROM sessions WHERE "user" = :name'), {"name": name})
        user = self.get(name)
        assert user is not None
        return user

    def remove(self, name: str) -> None:
        name = self._require(name)
        with self._lock, self._db.begin() as tx:
            tx.execute(text('DELETE FROM sessions WHERE "user" = :name'), {"name": name})
            tx.execute(text("DELETE FROM users WHERE name = :name"), {"name": name})
            tx.execute(text("INSERT INTO retired VALUES (:name, :now) ON CONFLICT(name) DO UPDATE "
                            "SET removed_at = excluded.removed_at"), {"name": name, "now": time.time()})

    def verify_password(self, name: str, password: str) -> User | None:
        """The user, when the password is theirs and the account is enabled; None otherwise."""
        from argon2.exceptions import InvalidHashError, VerificationError

        name = name.strip().lower()
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text("SELECT password FROM users WHERE name = :name AND disabled = 0"),
                             {"name": name}).first()
        stored = row[0] if row and row[0] else self._dummy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if stored is self._dummy:
            return None
        if self._hasher.check_needs_rehash(stored):  # parameters raised since: upgrade on the way
            with self._lock, self._db.begin() as tx:
                tx.execute(text("UPDATE users SET password = :hash WHERE name = :name"),
                           {"hash": self._hasher.hash(password), "name": name})
        return self.get(name)

    def upsert_external(self, name: str, groups: Iterable[str], admin: bool, issuer: str, subject: str) -> User:
        """A user of the identity provider: created at first sign-in and bound to the provider's issuer and
        subject (`sub`) then, groups and role refreshed at each; another subject with that name is refused."""
        name = check_name(name)
        self._not_retired(name)
        clean = check_groups(g for g in groups if _GROUP.match(g.strip()) and not g.startswith(USER_PREFIX))
        with self._lock, self._db.begin() as tx:
            # Names can be given again or renamed at the provider; its `sub` is never reassigned. One
            # statement, so two first sign-ins at once (two replicas) cannot both bind the name; a row made
            # before users_0002 (no subject) adopts the first it sees.
            bound = tx.execute(text(
                "INSERT INTO users (name, password, groups, admin, source, disabled, created_at, oidc_issuer, "
                "oidc_subject) VALUES (:name, NULL, :groups, :admin, 'oidc', 0, :now, :issuer, :subject) "
                "ON CONFLICT(name) DO UPDATE SET groups = excluded.groups, admin = excluded.admin, "
                "oidc_issuer = excluded.oidc_issuer, oidc_subject = excluded.oidc_subject "
                "WHERE users.source = 'oidc' AND users.disabled = 0 AND (users.oidc_subject IS NULL OR "
                "(users.oidc_issuer = excluded.oidc_issuer AND users.oidc_subject = excluded.oidc_subject)) "
                "RETURNING name"), {"name": name, "groups": json.dumps(clean), "admin": int(admin),
                                    "now": time.time(), "issuer": issuer, "subject": subject}).first()
            row = None if bound else tx.execute(text("SELECT source, disabled FROM users WHERE name = :name"),
                                                {"name": name}).first()
        if bound is None:
            if row is None:  # removed while signing in
                raise AuthError(f"the account {name!r} changed during the sign-in: please sign in again")
            if row[0] == "local":
                raise AuthError(f"{name!r} is a local user: sign in with the password")
            if row[1]:
                raise AuthError(f"the account {name!r} is disabled")
            raise AuthError(f"the account {name!r} here belongs to another person of the identity provider (the name "
                            "was given again, or renamed, there), so it is not opened for you. Ask the administrator: "
                            "the identity provider must give you a user name of your own")
        user = self.get(name)
        assert user is not None
        return user

    # -- sessions --------------------------------------------------------------------------------
    def start_session(self, name: str, sign_out_url: str | None = None) -> str:
        """A new session's cookie; sign_out_url: the identity provider's sign-out for this session, if it has one."""
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock, self._db.begin() as tx:
            tx.execute(text('INSERT INTO sessions (sha256, "user", created_at, last_seen, csrf, sign_out_url) '
                            "VALUES (:sha256, :name, :now, :now, :csrf, :sign_out_url)"),
                       {"sha256": _digest(token), "name": name, "now": now, "csrf": secrets.token_urlsafe(24),
                        "sign_out_url": sign_out_url})
            tx.execute(text("UPDATE users SET last_sign_in = :now WHERE name = :name"), {"now": now, "name": name})
            # Expired sessions of everyone go at each sign-in: the table never grows without bound.
            tx.execute(text("DELETE FROM sessions WHERE last_seen < :idle OR created_at < :old"),
                       {"idle": now - self._idle_s, "old": now - self._max_age_s})
        return token

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie (its idle clock restarts), or None when unknown, expired or disabled."""
        if not token:
            return None
        now = time.time()
        key = _digest(token)
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text('SELECT s."user", s.created_at, s.last_seen, s.csrf, s.sign_out_url '
                                  'FROM sessions s JOIN users u ON u.name = s."user" '
                                  'WHERE s.sha256 = :key AND u.disabled = 0'),
                             {"key": key}).first()
            if row is None:
                return None
            if row[2] < now - self._idle_s or row[1] < now - self._max_age_s:
                tx.execute(text("DELETE FROM sessions WHERE sha256 = :key"), {"key": key})
                return None
            if now - row[2] > 30:  # a write per request would serialise every request on SQLite
                tx.execute(text("UPDATE sessions SET last_seen = :now WHERE sha256 = :key"), {"now": now, "key": key})
        user = self.get(str(row[0]))
        return None if user is None else Session(user, str(row[3]), None if row[4] is None else str(row[4]))

    def end_session(self, token: str) -> str | None:
        """Sign-out; the user whose session it was."""
        with self._lock, self._db.begin() as tx:
            row = tx.execute(text('DELETE FROM sessions WHERE sha256 = :key RETURNING "user"'),
                             {"key": _digest(token)}).first()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


_USER = "name, groups, admin, source, disabled, created_at, last_sign_in"


def _user(row: tuple[object, ...]) -> User:
    name, groups, admin, source, disabled, created, last = row
    return User(str(name), list(json.loads(str(groups))), bool(admin), str(source), bool(disabled),
                float(created), None if last is None else float(last))  # type: ignore[arg-type]
