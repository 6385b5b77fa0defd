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

from appliance.stores.database import INTEGRITY_ERRORS, Where, open_database

EVERYONE = "everyone"  # every signed-in user is in it; files no ACL rule covers are readable by it
USER_PREFIX = "user:"  # a user's own group: their uploads, and files they own (acl posix)
_NAME = re.compile(r"^[a-z0-9][a-z0-9._@-]{0,63}$")
_GROUP = re.compile(r"^[A-Za-z0-9][A-Za-z0-9 ._:@/-]{0,127}$")
# The start of the usual lists of leaked passwords; the length rule removes most of the rest.
_COMMON = {"password", "password123", "changeme", "admin", "administrator", "letmein", "welcome", "qwerty",
           "qwertyuiop", "123456789012", "1234567890", "iloveyou", "secret", "default", "passw0rd"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    password TEXT,               -- Argon2id hash; NULL for users of the identity provider (OIDC)
    groups TEXT NOT NULL,        -- JSON list
    admin INTEGER NOT NULL,
    source TEXT NOT NULL,        -- local | oidc
    disabled INTEGER NOT NULL DEFAULT 0,
    created_at DOUBLE PRECISION NOT NULL,
    last_sign_in DOUBLE PRECISION
);
CREATE TABLE IF NOT EXISTS sessions (
    sha256 TEXT PRIMARY KEY,
    "user" TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
    created_at DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    csrf TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_user ON sessions("user");
CREATE TABLE IF NOT EXISTS retired (   -- removed users' names: never given to someone else
    name TEXT PRIMARY KEY,
    removed_at DOUBLE PRECISION NOT NULL
);
"""


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
        self._db = open_database(path, SCHEMA)
        self._lock = threading.Lock()

    # -- users -----------------------------------------------------------------------------------
    def _not_retired(self, name: str) -> None:
        with self._lock:
            gone = self._db.execute("SELECT 1 FROM retired WHERE name = ?", (name,)).fetchone()
        if gone:
            raise AuthError(f"the name {name!r} belonged to a removed user: it is not given again, so that nobody "
                            "inherits their uploads, conversations or keys; choose another")

    def add(self, name: str, password: str, groups: Iterable[str] = (), admin: bool = False) -> User:
        name = check_name(name)
        self._not_retired(name)
        check_password(name, password, self._min_length)
        user = User(name, check_groups(groups), admin, "local", False, time.time())
        with self._lock:
            try:
                self._db.execute("INSERT INTO users VALUES (?, ?, ?, ?, 'local', 0, ?, NULL)",
                                 (name, self._hasher.hash(password), json.dumps(user.groups), int(admin),
                                  user.created_at))
                self._db.commit()
            except INTEGRITY_ERRORS:
                raise AuthError(f"a user named {name!r} exists") from None
        return user

    def get(self, name: str) -> User | None:
        with self._lock:
            row = self._db.execute("SELECT name, groups, admin, source, disabled, created_at, last_sign_in "
                                   "FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else _user(row)

    def list(self) -> list[User]:
        with self._lock:
            rows = self._db.execute("SELECT name, groups, admin, source, disabled, created_at, last_sign_in "
                                    "FROM users ORDER BY name").fetchall()
        return [_user(r) for r in rows]

    def count(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM users").fetchone()[0])

    def _require(self, name: str) -> str:
        name = name.strip().lower()
        if self.get(name) is None:
            raise AuthError(f"no user named {name!r} (`appliance users list`)")
        return name

    def set_password(self, name: str, password: str) -> None:
        """A new password; every session of the user ends."""
        name = self._require(name)
        check_password(name, password, self._min_length)
        with self._lock:
            self._db.execute("UPDATE users SET password = ?, source = 'local' WHERE name = ?",
                             (self._hasher.hash(password), name))
            self._db.execute("DELETE FROM sessions WHERE \"user\" = ?", (name,))
            self._db.commit()

    def update(self, name: str, groups: Iterable[str] | None = None, admin: bool | None = None,
               disabled: bool | None = None) -> User:
        name = self._require(name)
        with self._lock:
            if groups is not None:
                self._db.execute("UPDATE users SET groups = ? WHERE name = ?", (json.dumps(check_groups(groups)), name))
            if admin is not None:
                self._db.execute("UPDATE users SET admin = ? WHERE name = ?", (int(admin), name))
            if disabled is not None:
                self._db.execute("UPDATE users SET disabled = ? WHERE name = ?", (int(disabled), name))
                if disabled:
                    self._db.execute("DELETE FROM sessions WHERE \"user\" = ?", (name,))
            self._db.commit()
        user = self.get(name)
        assert user is not None
        return user

    def remove(self, name: str) -> None:
        name = self._require(name)
        with self._lock:
            self._db.execute("DELETE FROM sessions WHERE \"user\" = ?", (name,))
            self._db.execute("DELETE FROM users WHERE name = ?", (name,))
            self._db.execute("INSERT INTO retired VALUES (?, ?) ON CONFLICT(name) DO UPDATE "
                             "SET removed_at = excluded.removed_at", (name, time.time()))
            self._db.commit()

    def verify_password(self, name: str, password: str) -> User | None:
        """The user, when the password is theirs and the account is enabled; None otherwise."""
        from argon2.exceptions import InvalidHashError, VerificationError

        name = name.strip().lower()
        with self._lock:
            row = self._db.execute("SELECT password FROM users WHERE name = ? AND disabled = 0",
                                   (name,)).fetchone()
        stored = row[0] if row and row[0] else self._dummy
        try:
            self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return None
        if stored is self._dummy:
            return None
        if self._hasher.check_needs_rehash(stored):  # parameters raised since: upgrade on the way
            with self._lock:
                self._db.execute("UPDATE users SET password = ? WHERE name = ?", (self._hasher.hash(password), name))
                self._db.commit()
        return self.get(name)

    def upsert_external(self, name: str, groups: Iterable[str], admin: bool) -> User:
        """A user of the identity provider: created at first sign-in, groups and role refreshed at each."""
        name = check_name(name)
        self._not_retired(name)
        clean = check_groups(g for g in groups if _GROUP.match(g.strip()) and not g.startswith(USER_PREFIX))
        with self._lock:
            row = self._db.execute("SELECT source, disabled FROM users WHERE name = ?", (name,)).fetchone()
            if row is not None and row[0] == "local":
                raise AuthError(f"{name!r} is a local user: sign in with the password")
            if row is not None and row[1]:
                raise AuthError(f"the account {name!r} is disabled")
            self._db.execute("INSERT INTO users VALUES (?, NULL, ?, ?, 'oidc', 0, ?, NULL) ON CONFLICT(name) DO "
                             "UPDATE SET groups = excluded.groups, admin = excluded.admin",
                             (name, json.dumps(clean), int(admin), time.time()))
            self._db.commit()
        user = self.get(name)
        assert user is not None
        return user

    # -- sessions --------------------------------------------------------------------------------
    def start_session(self, name: str) -> str:
        token = secrets.token_urlsafe(32)
        now = time.time()
        with self._lock:
            self._db.execute("INSERT INTO sessions VALUES (?, ?, ?, ?, ?)",
                             (_digest(token), name, now, now, secrets.token_urlsafe(24)))
            self._db.execute("UPDATE users SET last_sign_in = ? WHERE name = ?", (now, name))
            # Expired sessions of everyone go at each sign-in: the table never grows without bound.
            self._db.execute("DELETE FROM sessions WHERE last_seen < ? OR created_at < ?",
                             (now - self._idle_s, now - self._max_age_s))
            self._db.commit()
        return token

    def session(self, token: str | None) -> Session | None:
        """The live session of a cookie (its idle clock restarts), or None when unknown, expired or disabled."""
        if not token:
            return None
        now = time.time()
        key = _digest(token)
        with self._lock:
            row = self._db.execute("SELECT s.\"user\", s.created_at, s.last_seen, s.csrf FROM sessions s JOIN users u "
                                   "ON u.name = s.\"user\" WHERE s.sha256 = ? AND u.disabled = 0", (key,)).fetchone()
            if row is None:
                return None
            if row[2] < now - self._idle_s or row[1] < now - self._max_age_s:
                self._db.execute("DELETE FROM sessions WHERE sha256 = ?", (key,))
                self._db.commit()
                return None
            if now - row[2] > 30:  # a write per request would serialise every request on SQLite
                self._db.execute("UPDATE sessions SET last_seen = ? WHERE sha256 = ?", (now, key))
                self._db.commit()
        user = self.get(str(row[0]))
        return None if user is None else Session(user, str(row[3]))

    def end_session(self, token: str) -> str | None:
        """Sign-out; the user whose session it was."""
        with self._lock:
            row = self._db.execute("SELECT \"user\" FROM sessions WHERE sha256 = ?", (_digest(token),)).fetchone()
            self._db.execute("DELETE FROM sessions WHERE sha256 = ?", (_digest(token),))
            self._db.commit()
        return None if row is None else str(row[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


def _user(row: tuple[object, ...]) -> User:
    name, groups, admin, source, disabled, created, last = row
    return User(str(name), list(json.loads(str(groups))), bool(admin), str(source), bool(disabled),
                float(created), None if last is None else float(last))  # type: ignore[arg-type]
