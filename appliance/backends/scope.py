"""Where a question is searched: folders, documents, file types and a date range, applied inside the
store query next to the reader's groups (so a scope only ever narrows what the groups allow).

The rule: (any folder OR any document) AND any file type AND the date range; a kind left empty does
not narrow. The payload fields it reads are written at ingest (``ingest.points.chunk_payload``):

- ``folders``: every folder above the file (``/a/b/c.pdf`` → ``/a/b``, ``/a``, ``/``). Qdrant matches
  keywords exactly (a server has no prefix match), so a folder scope is an indexed keyword-list match;
  a scope path that names a file matches its ``path``.
- ``doc_id``, ``file_type`` (the extension, lower case).
- ``date``: the document's date, YYYY-MM-DD (sent, else modified, else created:
  ``DocumentMeta.date``), a datetime-indexed field; a document without one is outside any date range.

Every channel builds its scope with ``Scope.checked``: it refuses hostile input with one clear line.
"""

from __future__ import annotations

import posixpath
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

MAX_ITEMS = 100  # per kind: a page's or a script's selection, not a way to send megabytes of filter
MAX_PATH_CHARS = 4096  # Linux's PATH_MAX
_DOC_ID = re.compile(r"[0-9a-f]{16}")  # ingest.points.doc_id_of
_FILE_TYPE = re.compile(r"[a-z0-9]{1,10}")
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# Control characters and lone surrogates: no stored path has them, and a surrogate cannot reach the engine.
_UNPRINTABLE = re.compile(r"[\x00-\x1f\x7f\ud800-\udfff]")


class InvalidScope(ValueError):
    """A scope refused before anything is searched: what is wrong, in one line."""


@dataclass(frozen=True)
class Scope:
    folders: tuple[str, ...] = ()  # absolute, normalised folder (or file) paths
    documents: tuple[str, ...] = ()  # doc ids
    file_types: tuple[str, ...] = ()  # extensions without the dot, lower case
    date_from: str | None = None  # YYYY-MM-DD, inclusive
    date_to: str | None = None  # YYYY-MM-DD, inclusive

    def __bool__(self) -> bool:
        return bool(self.folders or self.documents or self.file_types or self.date_from or self.date_to)

    @classmethod
    def checked(cls, folders: Iterable[str] = (), documents: Iterable[str] = (), file_types: Iterable[str] = (),
                date_from: str | None = None, date_to: str | None = None) -> Scope:
        """The scope, normalised, or InvalidScope naming the first problem."""
        scope = cls(folders=_bounded("folders", (_folder(f) for f in folders)),
                    documents=_bounded("documents", (_doc_id(d) for d in documents)),
                    file_types=_bounded("file_types", (_file_type(t) for t in file_types)),
                    date_from=_date("date_from", date_from), date_to=_date("date_to", date_to))
        if scope.date_from and scope.date_to and scope.date_from > scope.date_to:
            raise InvalidScope(f"date_from {scope.date_from} is after date_to {scope.date_to}")
        return scope

    def to_dict(self) -> dict[str, Any]:
        """The kinds that narrow, for the audit line and a client's echo."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in vars(self).items() if v}

    def describe(self) -> str:
        """One line for a person: `folders /srv/finance; types pdf; from 2024-01-01`."""
        parts = [f"{name} {', '.join(values)}" for name, values in
                 (("folders", self.folders), ("documents", self.documents), ("types", self.file_types)) if values]
        parts += [f"from {self.date_from}"] if self.date_from else []
        parts += [f"to {self.date_to}"] if self.date_to else []
        return "; ".join(parts)


def conditions(scope: Scope | None, lib: Any, date_range: Any) -> list[Any]:
    """The scope as conditions to AND into a filter's `must`, for qdrant_edge or qdrant_client.models
    (`lib`: both name FieldCondition, MatchAny and Filter alike; `date_range`: their datetime range)."""
    if not scope:
        return []
    must: list[Any] = []
    where: list[Any] = []
    if scope.folders:
        where.append(lib.FieldCondition(key="folders", match=lib.MatchAny(any=list(scope.folders))))
        where.append(lib.FieldCondition(key="path", match=lib.MatchAny(any=list(scope.folders))))
    if scope.documents:
        where.append(lib.FieldCondition(key="doc_id", match=lib.MatchAny(any=list(scope.documents))))
    if where:
        must.append(lib.Filter(should=where))
    if scope.file_types:
        must.append(lib.FieldCondition(key="file_type", match=lib.MatchAny(any=list(scope.file_types))))
    if scope.date_from or scope.date_to:
        within = date_range(gte=scope.date_from, lt=_day_after(scope.date_to))
        must.append(lib.FieldCondition(key="date", range=within))
    return must


def _day_after(day: str | None) -> str | None:
    """`lt` the next day rather than `lte` the day: a date with a time of day still falls in it."""
    if day is None or day == date.max.isoformat():
        return None
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def _bounded(kind: str, values: Iterable[str]) -> tuple[str, ...]:
    out: list[str] = []
    for value in values:
        if value not in out:
            out.append(value)
        if len(out) > MAX_ITEMS:
            raise InvalidScope(f"at most {MAX_ITEMS} {kind} in a scope")
    return tuple(out)


def _text(kind: str, value: object, most: int) -> str:
    if not isinstance(value, str):
        raise InvalidScope(f"{kind}: {value!r} is not a string")
    value = value.strip()
    if not value:
        raise InvalidScope(f"{kind}: an empty value")
    if len(value) > most:
        raise InvalidScope(f"{kind}: a value longer than {most} characters")
    if _UNPRINTABLE.search(value):
        raise InvalidScope(f"{kind}: control characters in {value[:80]!r}")
    return value


def _folder(value: str) -> str:
    """An absolute path as the documents list shows them, normalised as ingest stored it (os.path.abspath):
    `/srv/share/../hr/` is `/srv/hr`. Normalising grants nothing: the reader's groups still filter."""
    path = _text("folders", value, MAX_PATH_CHARS)
    if not path.startswith("/"):
        raise InvalidScope(f"folders: {path[:80]!r} is not an absolute path (GET /v1/documents shows the paths)")
    path = posixpath.normpath(path)
    return "/" + path.lstrip("/")  # normpath keeps a leading '//' (POSIX leaves it implementation-defined)


def _doc_id(value: str) -> str:
    doc_id = _text("documents", value, 64).lower()
    if not _DOC_ID.fullmatch(doc_id):
        raise InvalidScope(f"documents: {doc_id[:80]!r} is not a document id (16 hex digits, as GET /v1/documents "
                           "lists them)")
    return doc_id


def _file_type(value: str) -> str:
    ext = _text("file_types", value, 16).lower().removeprefix(".")
    if not _FILE_TYPE.fullmatch(ext):
        raise InvalidScope(f"file_types: {ext[:20]!r} is not a file extension (like pdf, docx, eml)")
    return ext


def _date(kind: str, value: str | None) -> str | None:
    if value is None:
        return None
    text = _text(kind, value, 64)
    try:
        if not _DATE.fullmatch(text):
            raise ValueError
        return date.fromisoformat(text).isoformat()
    except ValueError:
        raise InvalidScope(f"{kind}: {text!r} is not a date (YYYY-MM-DD)") from None
