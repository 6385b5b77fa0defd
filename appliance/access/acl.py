"""Who may read a file: the settings' `acl:` rules, the files' own POSIX permissions, or the uploader.

The groups are stored on every chunk (payload `acl_groups`) and every retrieval filters on them
inside the store query. The most specific matching rule wins: the one whose fixed part (the path
before any wildcard) is deepest; at equal depth a pattern beats a plain folder, and an exact file
beats both. `*` in a pattern also matches across folders (fnmatch).
"""

from __future__ import annotations

import fnmatch
import grp
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING

from appliance.access.auth import EVERYONE, Principal, user_group
from appliance.settings import AclRule

if TYPE_CHECKING:
    from ingest.manifest import FileRecord

_WILD = set("*?[")


@dataclass(frozen=True)
class _Compiled:
    rule: AclRule
    prefix: PurePosixPath  # the part before any wildcard
    pattern: bool

    def matches(self, path: str) -> bool:
        if self.pattern:
            return fnmatch.fnmatchcase(path, self.rule.path)
        root = os.path.normpath(self.rule.path)
        return path == root or path.startswith(root.rstrip("/") + "/")

    def rank(self, path: str) -> tuple[int, int]:
        exact = not self.pattern and path == os.path.normpath(self.rule.path)
        return len(self.prefix.parts), 2 if exact else 1 if self.pattern else 0


def _compile(rule: AclRule) -> _Compiled:
    parts = PurePosixPath(rule.path).parts
    first_wild = next((i for i, p in enumerate(parts) if _WILD & set(p)), len(parts))
    fixed = parts[:first_wild]
    return _Compiled(rule, PurePosixPath(*fixed) if fixed else PurePosixPath("/"), first_wild < len(parts))


class AccessRules:
    def __init__(self, rules: Sequence[AclRule], default_groups: Sequence[str], upload_dir: Path | None = None) -> None:
        self._rules = [_compile(r) for r in rules]
        self._default = sorted(set(default_groups))
        # As discover spells paths (os.path.abspath: no '..'), or an upload would miss its owner's rule.
        self._uploads = os.path.abspath(upload_dir) if upload_dir is not None else None

    def rule_for(self, path: str) -> AclRule | None:
        found = [c for c in self._rules if c.matches(path)]
        return max(found, key=lambda c: c.rank(path)).rule if found else None

    def groups_for(self, path: str, st: os.stat_result | None = None) -> list[str]:
        """The groups that may read the file at `path` (absolute)."""
        if self._uploads is not None:
            owner = _uploader(path, self._uploads)
            if owner is not None:
                return [user_group(owner)]  # a user's upload is theirs alone
        rule = self.rule_for(path)
        if rule is None:
            return list(self._default)
        groups = set(rule.groups)
        if rule.posix:
            groups |= posix_groups(path, st)
        return sorted(groups)


def _uploader(path: str, upload_dir: str) -> str | None:
    prefix = upload_dir.rstrip("/") + "/"
    if not path.startswith(prefix):
        return None
    rest = path[len(prefix):].split("/")
    return rest[0] if len(rest) > 1 else None  # uploads/<user>/<file>; older uploads/<file> follow the rules


def posix_groups(path: str, st: os.stat_result | None = None) -> set[str]:
    """Who the file system lets read the file: its group if group-readable, its owner (user:NAME),
    everyone if world-readable. A file gone since is readable by nobody."""
    try:
        st = st or os.stat(path)
    except OSError:
        return set()
    found = set()
    if st.st_mode & stat.S_IRUSR:
        found.add(user_group(_name(pwd.getpwuid, st.st_uid)))
    if st.st_mode & stat.S_IRGRP:
        found.add(_name(grp.getgrgid, st.st_gid))
    if st.st_mode & stat.S_IROTH:
        found.add(EVERYONE)
    return found


def _name(lookup: object, number: int) -> str:
    try:
        return str(lookup(number)[0])  # type: ignore[operator]
    except KeyError:  # an id with no name on this machine (NFS, containers): the number, as ls shows it
        return str(number)


def visible(principal: Principal, rec: FileRecord, upload_dir: Path, every: bool = False) -> bool:
    """Whether the principal may see that the document exists: the documents they may read and their
    own uploads (failed ones too); with `every`, an administrator sees every row (to manage ingestion)."""
    return (every and principal.admin) or principal.can_read(rec.acl) or own_upload(principal, rec, upload_dir)


def own_upload(principal: Principal, rec: FileRecord, upload_dir: Path) -> bool:
    return Path(rec.path).parent == upload_dir / principal.name
