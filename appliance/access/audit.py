"""The audit trail: append-only JSON lines under <data_dir>/audit/, rotated by size, hash-chained.

Each line carries the SHA-256 of the line before it and of itself, so an edited, inserted or removed
line breaks the chain (`appliance audit verify`). The app has no route that changes the trail; the
server and the CLI both append, under an fcntl lock, so lines of two processes never interleave.
Document text is not written unless audit.include_text is set: a question's sources are named by
file and page only.

Every line is bounded, whatever a user sends: a string longer than MAX_CHARS (TEXT_CHARS for an
answer or a passage under include_text) is logged as {"chars", "sha256", "prefix"}; a list or object
keeps its first MAX_ITEMS entries and counts the rest in a sibling "<key>_omitted"; a line that would
still pass MAX_LINE_BYTES is bounded again, tighter. The hash chain covers the line as written.

Rotation never deletes: past audit.keep_files rotated files the trail warns (log, `appliance doctor`)
and keeps everything until an administrator runs `appliance audit archive DEST`, which verifies the
chain, moves the rotated files out and leaves an anchor (the last archived hash) that `verify`
checks the remaining trail against.
"""

from __future__ import annotations

import contextlib
import fcntl
import filecmp
import hashlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

CURRENT = "audit.jsonl"
ANCHOR = "anchor.json"
GENESIS = "0" * 64

MAX_CHARS = 1_000  # a 100k-character question becomes its length, hash and first 200 characters
TEXT_CHARS = 8_000  # answers and passages, logged only under include_text
LONG_KEYS = frozenset({"answer", "text"})
MAX_ITEMS = 100  # entries of one list or object (sources, files, ACL rules)
MAX_DEPTH = 6
MAX_KEY_CHARS = 100
MAX_LINE_BYTES = 64 << 10
_CHAIN_BYTES = 256  # room for "prev" and "hash" (2 x 64 hex digits and their keys)
# Tighter (chars, text chars) bounds, tried in turn until a line fits MAX_LINE_BYTES.
_LEVELS = ((MAX_CHARS, TEXT_CHARS), (MAX_CHARS, MAX_CHARS), (200, 200), (50, 50))
_BLOCK = 1 << 16

log = logging.getLogger("appliance.access.audit")


class AuditError(Exception):
    """The trail cannot be archived as asked (its chain is broken, or the destination holds other files)."""


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)


def _hash(prev: str, entry: dict[str, Any]) -> str:
    body = json.dumps(entry, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256((prev + body).encode("utf-8")).hexdigest()


@dataclass
class Verification:
    lines: int
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems


@dataclass
class _Walk:
    lines: int
    problems: list[str]
    last_hash: str | None


class AuditLog:
    def __init__(self, folder: Path, max_bytes: int = 50 << 20, keep: int = 50, include_text: bool = False) -> None:
        self.folder = folder
        self.max_bytes = max_bytes
        self.keep = keep
        self.include_text = include_text
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        fd = os.open(self.folder / ".lock", os.O_CREAT | os.O_RDWR, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def record(self, event: str, actor: str, **fields: Any) -> None:
        """Append one event, bounded; an answer and the sources' text are dropped unless include_text."""
        entry: dict[str, Any] = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "event": event,
                                 "actor": actor}
        entry.update({k: v for k, v in fields.items() if v is not None})
        if not self.include_text:
            entry.pop("answer", None)
            if isinstance(entry.get("sources"), list | tuple):  # copies: the caller's sources stay whole
                entry["sources"] = [{k: v for k, v in s.items() if k != "text"} if isinstance(s, dict) else s
                                    for s in entry["sources"]]
        entry = _fit(entry, self.include_text)
        with self._locked():
            path = self.folder / CURRENT
            if path.exists() and path.stat().st_size >= self.max_bytes:
                self._rotate(path)
            prev = _last_hash(self.folder)
            entry["prev"] = prev
            entry["hash"] = _hash(prev, {k: v for k, v in entry.items() if k != "hash"})
            line = (json.dumps(entry, ensure_ascii=False) + "\n").encode("utf-8")
            fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_APPEND, 0o600)
            try:
                size = os.fstat(fd).st_size
                if size and _last_byte(path, size) != b"\n":
                    line = b"\n" + line  # a torn last line (a crash mid-write) must not swallow this one
                os.write(fd, line)
            finally:
                os.close(fd)

    def _rotate(self, path: Path) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.folder / f"audit-{stamp}-{time.time_ns() % 10**9:09d}.jsonl"
        os.replace(path, target)
        rotated = len(self._rotated())
        if rotated > self.keep:  # never delete: user traffic must not be able to push evidence out
            log.warning("audit trail %s holds %d rotated files, over audit.keep_files (%d); nothing is deleted: "
                        "archive them with `appliance audit archive DEST`", self.folder, rotated, self.keep)

    def files(self) -> list[Path]:
        """Oldest first; the current file last."""
        return _files(self.folder)

    def _rotated(self) -> list[Path]:
        return sorted(self.folder.glob("audit-*.jsonl"))

    @property
    def over_quota(self) -> bool:
        """More rotated files than audit.keep_files: an administrator should archive them."""
        return len(self._rotated()) > self.keep

    @property
    def rotated_count(self) -> int:
        return len(self._rotated())

    def entries(self) -> Iterator[dict[str, Any]]:
        """Every line, oldest first; a damaged line is skipped here (verify reports it)."""
        for path in self.files():
            with path.open(encoding="utf-8", errors="replace") as lines:
                for line in lines:
                    if line.strip():
                        try:
                            yield json.loads(line)
                        except json.JSONDecodeError:
                            continue

    def search(self, text: str = "", actor: str | None = None, event: str | None = None,
               since: str | None = None, until: str | None = None, limit: int = 200) -> list[dict[str, Any]]:
        """Newest first. `text` matches anywhere in the line (case-insensitive); times are ISO 8601 prefixes."""
        found: list[dict[str, Any]] = []
        needle = text.lower().strip()
        for entry in self.entries():
            if actor and entry.get("actor") != actor:
                continue
            if event and entry.get("event") != event:
                continue
            ts = str(entry.get("ts", ""))
            if (since and ts < since) or (until and ts[: len(until)] > until):
                continue
            if needle and needle not in json.dumps(entry, ensure_ascii=False).lower():
                continue
            found.append(entry)
        return found[::-1][:limit]

    def export(self, out: TextIO, **filters: Any) -> int:
        rows = self.search(limit=10**9, **filters)[::-1]
        for entry in rows:
            out.write(json.dumps(entry, ensure_ascii=False) + "\n")
        return len(rows)

    def verify(self) -> Verification:
        """Walk the chain; it must start at the last archive's anchor, or anywhere if none was archived."""
        problems: list[str] = []
        try:
            anchor = self._anchor()
        except (OSError, ValueError, KeyError) as exc:
            problems.append(f"{ANCHOR}: unreadable ({exc})")
            anchor = None
        walk = _walk(self.files(), anchor)
        return Verification(walk.lines, problems + walk.problems)

    def _anchor(self) -> str | None:
        path = self.folder / ANCHOR
        if not path.exists():
            return None
        return str(json.loads(path.read_text(encoding="utf-8"))["last_hash"])

    def archive(self, dest: Path, actor: str = "appliance") -> list[Path]:
        """Verify the chain, then move the rotated files (never the current one) to `dest`; returns their new paths.

        `dest` becomes a 0700 folder of 0600 files that `AuditLog(dest).verify()` checks on its own; the
        trail keeps an anchor (the last archived line's hash) so its own verify still passes, and
        records the archive as an event.
        """
        dest = dest.absolute()
        if dest == self.folder.absolute():
            raise AuditError("archive into another folder than the trail's own")
        rotated = self._rotated()
        if not rotated:
            return []
        # Rotated files are never written again: check them outside the lock, so the server's appends don't wait.
        walk = _walk(rotated, self._anchor())
        if walk.problems:
            raise AuditError(f"the trail does not verify, nothing was archived: {'; '.join(walk.problems[:5])}")
        dest.mkdir(parents=True, exist_ok=True, mode=0o700)
        if dest.stat().st_mode & 0o077:
            os.chmod(dest, 0o700)
        placed = [_place(src, dest / src.name) for src in rotated]
        _fsync_dir(dest)
        with self._locked():
            rest = [p for p in self.files() if p not in rotated]
            first = _first_entry(rest[0]) if rest else None
            if first is not None and first.get("prev") != walk.last_hash:
                raise AuditError(f"{rest[0].name} does not continue the rotated files: the chain is broken, nothing "
                                 f"was removed from the trail (copies are in {dest})")
            anchor = {"ts": datetime.now(UTC).isoformat(timespec="milliseconds"), "last_hash": walk.last_hash,
                      "lines": walk.lines, "archived_to": str(dest), "files": [p.name for p in rotated]}
            tmp = self.folder / f".{ANCHOR}.tmp"
            fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(json.dumps(anchor, ensure_ascii=False) + "\n")
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, self.folder / ANCHOR)  # before the unlinks: verify accepts either side of a crash
            for src in rotated:
                src.unlink()
            _fsync_dir(self.folder)
        self.record("audit_archive", actor, dest=str(dest), files=[p.name for p in rotated], lines=walk.lines,
                    last_hash=walk.last_hash)
        return placed


def _walk(paths: Sequence[Path], anchor: str | None) -> _Walk:
    """Check each line's hash and link; with an anchor, the chain must start at it or still hold it."""
    problems: list[str] = []
    prev: str | None = None
    first_prev: str | None = None
    anchored = anchor is None
    count = 0
    for path in paths:
        with path.open(encoding="utf-8", errors="replace") as lines:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                count += 1
                where = f"{path.name}:{number}"
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    problems.append(f"{where}: not JSON")
                    prev = None
                    continue
                if count == 1:
                    first_prev = str(entry.get("prev"))
                if prev is not None and entry.get("prev") != prev:
                    problems.append(f"{where}: does not follow the line before it (a line was removed or added)")
                if entry.get("hash") != _hash(str(entry.get("prev")), {k: v for k, v in entry.items()
                                                                      if k != "hash"}):
                    problems.append(f"{where}: its content was changed")
                prev = str(entry.get("hash"))
                anchored = anchored or anchor in (first_prev, prev)  # still holding it: an archive was interrupted
    if count and not anchored:
        problems.append(f"the trail does not start where the last archive ended ({ANCHOR}): its first lines were "
                        "removed")
    return _Walk(count, problems, prev)


def _fit(entry: dict[str, Any], include_text: bool) -> dict[str, Any]:
    """The entry bounded so that its line stays under MAX_LINE_BYTES."""
    budget = MAX_LINE_BYTES - _CHAIN_BYTES
    bounded: dict[str, Any] = {}
    for chars, text_chars in _LEVELS:
        bounded = _bound_dict(entry, chars, text_chars if include_text else chars, 0)
        if _size(bounded) <= budget:
            return bounded
    for key in sorted((k for k in bounded if k != "ts"), key=lambda k: _size(bounded[k]), reverse=True):
        bounded[key] = _digest(bounded[key], 0)
        if _size(bounded) <= budget:
            return bounded
    return {"ts": entry["ts"], "event": _bound(entry["event"], 50, 50, 0), "oversized": _digest(bounded, 0)}


def _size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False).encode("utf-8"))


def _bound(value: Any, chars: int, text_chars: int, depth: int, key: str = "") -> Any:
    if isinstance(value, str):
        value = _clean(value)
        limit = text_chars if key in LONG_KEYS else chars
        return value if len(value) <= limit else _digest(value, min(200, chars // 5))
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict):
        return _bound_dict(value, chars, text_chars, depth) if depth < MAX_DEPTH else _digest(value, 0)
    if isinstance(value, list | tuple):
        if depth >= MAX_DEPTH:
            return _digest(value, 0)
        items = [_bound(v, chars, text_chars, depth + 1, key) for v in value[:MAX_ITEMS]]
        if len(value) > MAX_ITEMS:
            items.append({"items_omitted": len(value) - MAX_ITEMS})
        return items
    return _bound(str(value), chars, text_chars, depth, key)  # a Path or a datetime: as its text


def _bound_dict(value: dict[Any, Any], chars: int, text_chars: int, depth: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    pairs = list(value.items())
    for raw_key, item in pairs[:MAX_ITEMS]:
        # String keys only: verify re-reads them as strings, and sort_keys can't order mixed types.
        key = _clean(str(raw_key))
        if len(key) > MAX_KEY_CHARS:
            key = f"{key[:40]}...sha256:{hashlib.sha256(key.encode('utf-8')).hexdigest()}"
        if isinstance(item, list | tuple) and len(item) > MAX_ITEMS and depth < MAX_DEPTH:
            out[f"{key}_omitted"] = len(item) - MAX_ITEMS
            item = item[:MAX_ITEMS]
        out[key] = _bound(item, chars, text_chars, depth + 1, key)
    if len(pairs) > MAX_ITEMS:
        out["keys_omitted"] = len(pairs) - MAX_ITEMS
    return out


def _digest(value: Any, prefix: int) -> dict[str, Any]:
    """A value too long to log: its length and SHA-256 (of the text, or of the canonical JSON), and how it starts."""
    text = value if isinstance(value, str) else _clean(_canonical(value))
    digest: dict[str, Any] = {"chars": len(text), "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest()}
    if prefix:
        digest["prefix"] = text[:prefix]
    return digest


def _clean(text: str) -> str:
    """Lone surrogates (valid in JSON input, not in UTF-8) written as \\udXXX, so the line can be encoded."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def _last_hash(folder: Path) -> str:
    for path in reversed(_files(folder)):
        line = _last_line(path)
        if line is None:
            continue
        try:
            return str(json.loads(line)["hash"])
        except (ValueError, KeyError, TypeError):
            return GENESIS  # a damaged last line: verify reports it; the chain goes on from here
    return GENESIS


def _last_line(path: Path) -> bytes | None:
    """The last non-blank line, read backwards block by block: a line may be longer than any block."""
    blocks: list[bytes] = []
    with path.open("rb") as f:
        pos = f.seek(0, os.SEEK_END)
        while pos > 0:
            step = min(_BLOCK, pos)
            pos -= step
            f.seek(pos)
            block = f.read(step)
            if not blocks:
                block = block.rstrip()  # the blocks after this one held only the trailing newline(s)
                if not block:
                    continue
            cut = block.rfind(b"\n")
            if cut >= 0:
                blocks.append(block[cut + 1:])
                break
            blocks.append(block)
    return b"".join(reversed(blocks)) if blocks else None


def _last_byte(path: Path, size: int) -> bytes:
    with path.open("rb") as f:
        f.seek(size - 1)
        return f.read(1)


def _first_entry(path: Path) -> dict[str, Any] | None:
    with path.open(encoding="utf-8", errors="replace") as lines:
        for line in lines:
            if line.strip():
                try:
                    entry = json.loads(line)
                except json.JSONDecodeError:
                    return {}
                return entry if isinstance(entry, dict) else {}
    return None


def _place(src: Path, target: Path) -> Path:
    """`src` also at `target` (0600): a hard link where it can, else a copy; an identical copy there already is fine."""
    if target.exists():
        if filecmp.cmp(src, target, shallow=False):
            return target
        raise AuditError(f"{target} already exists and differs from {src}: nothing was removed from the trail")
    try:
        os.link(src, target)
    except OSError:  # another file system, or one without hard links
        tmp = target.with_name(f".{target.name}.tmp")
        fd = os.open(tmp, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as out, src.open("rb") as inp:
            shutil.copyfileobj(inp, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
    os.chmod(target, 0o600)
    return target


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _files(folder: Path) -> list[Path]:
    rotated = sorted(folder.glob("audit-*.jsonl"))
    current = folder / CURRENT
    return [*rotated, current] if current.exists() else rotated
