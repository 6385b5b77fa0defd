"""What a reader may ask about, for the chat page: the picker's choices (folders, documents, file
types of the documents they may read), its values as a Scope and back, and the empty page's
welcome (how much there is to search, and example questions from the reader's own documents).

A picker value is `folder:<path>`, `doc:<id>` or `type:<ext>`. Gradio refuses a value that is not
one of the reader's choices, and Scope.checked refuses the rest: a scope only ever narrows what the
reader's groups allow (appliance/backends/scope.py), so a forged value can hide documents from the
reader's own answer, never show one.
"""

from __future__ import annotations

import html
import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.metadata import name_title

if TYPE_CHECKING:
    from appliance.access.auth import Principal
    from appliance.backends.scope import Scope
    from appliance.services import Services
    from ingest.manifest import FileRecord

MAX_FOLDERS = 60  # the most populous: a share of thousands of folders is searched by typing, not scrolled
MAX_DOCUMENTS = 500
PRIVACY = "Nothing you ask, and nothing of the documents, leaves this server."


def readable_records(services: Services, principal: Principal) -> list[FileRecord]:
    """The ingested documents the reader may read (not failed ones, not others' uploads)."""
    return [r for r in services.manifest.all() if r.status == "ok" and principal.can_read(r.acl)]


def share_root(paths: Sequence[str]) -> str:
    """The folder the documents share (the share's root), shown as nothing: names are relative to it."""
    if not paths:
        return "/"
    common = posixpath.commonpath(paths)
    return common if len(paths) > 1 else posixpath.dirname(common)


def relative(path: str, root: str) -> str:
    rel = posixpath.relpath(path, root)
    return "/" if rel == "." else rel  # the share's own top


def folder_counts(records: Iterable[FileRecord]) -> tuple[Counter[str], str]:
    """Documents under each folder (every folder above each file, below the shared root), and that root."""
    paths = [r.path for r in records]
    root = share_root(paths)
    counts: Counter[str] = Counter()
    for path in paths:
        folder = posixpath.dirname(path)
        while folder.startswith(root) and folder != root:
            counts[folder] += 1
            folder = posixpath.dirname(folder)
    return counts, root


def title_of(rec: FileRecord) -> str:
    return str(rec.meta.get("title") or name_title(Path(rec.path)))


def scope_choices(services: Services, principal: Principal) -> list[tuple[str, str]]:
    """The picker's choices: folders (by how many documents they hold), then file types, then documents."""
    from ingest.points import doc_id_of

    records = readable_records(services, principal)
    counts, root = folder_counts(records)
    folders = [(f"Folder: {relative(f, root)} ({n})", f"folder:{f}") for f, n in counts.most_common(MAX_FOLDERS)]
    types = Counter(Path(r.path).suffix.lower().lstrip(".") for r in records)
    kinds = [(f"Type: {t.upper()} ({n})", f"type:{t}") for t, n in sorted(types.items()) if t]
    documents = [(f"Document: {title_of(r)} · {relative(r.path, root)}", f"doc:{doc_id_of(r.path)}")
                 for r in sorted(records, key=lambda r: r.path)[:MAX_DOCUMENTS]]
    return folders + kinds + documents


def scope_of(values: Iterable[str] | None) -> Scope | None:
    """The picker's values as a Scope (None: everything the reader may read); InvalidScope if forged."""
    from appliance.backends.scope import InvalidScope, Scope

    picked: dict[str, list[str]] = {"folder": [], "doc": [], "type": []}
    for value in values or []:
        kind, _, rest = str(value).partition(":")
        if kind not in picked or not rest:
            raise InvalidScope(f"{str(value)[:80]!r} is not a folder, document or file type of the picker")
        picked[kind].append(rest)
    scope = Scope.checked(folders=picked["folder"], documents=picked["doc"], file_types=picked["type"])
    return scope or None


def values_of(scope: dict[str, Any]) -> list[str]:
    """A stored scope (Scope.to_dict) as the picker's values again."""
    return ([f"folder:{f}" for f in scope.get("folders", [])] + [f"doc:{d}" for d in scope.get("documents", [])]
            + [f"type:{t}" for t in scope.get("file_types", [])])


def welcome(services: Services, principal: Principal) -> str:
    """The empty chat: what the reader may search, three questions drawn from their own documents'
    titles, and the privacy statement. Markdown; every document-derived string is escaped."""
    records = readable_records(services, principal)
    if not records:
        return ("**No document is readable for you yet.** Ask an administrator to ingest your share, or "
                f"upload files in the Library.\n\n<small>{PRIVACY}</small>")
    counts, root = folder_counts(records)
    top = [f"{html.escape(relative(f, root))} ({n})" for f, n in counts.most_common(3)]
    where = f" — largest folders: {', '.join(top)}" if top else ""
    # The newest documents' titles, those from the documents' own properties or headings first.
    newest = sorted(records, key=lambda r: (not r.meta.get("title"), -r.ingested_at))
    titled = list(dict.fromkeys(title_of(r) for r in newest))
    shapes = ("What are the key points of “{}”?", "Summarise “{}” in five lines.", "What does “{}” say about dates "
              "and deadlines?")
    examples = [shape.format(html.escape(t[:80])) for shape, t in zip(shapes, titled[:3], strict=False)]
    lines = "\n".join(f"- {e}" for e in examples)
    return (f"**You can ask about {len(records)} document{'s' if len(records) != 1 else ''}**{where}.\n\n"
            f"Try:\n{lines}\n\nType **#** to choose folders, documents or types to ask about.\n\n"
            f"<small>{PRIVACY}</small>")
