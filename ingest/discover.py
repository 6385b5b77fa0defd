"""Walk the given paths and list the files to ingest; problems are reported, never fatal."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Discovery:
    files: list[Path] = field(default_factory=list)
    problems: list[tuple[Path, str]] = field(default_factory=list)  # (path, reason)
    roots: list[Path] = field(default_factory=list)


def discover(paths: list[Path], exclude: tuple[Path, ...] = ()) -> Discovery:
    """exclude: folders never walked into (the appliance's own data directory)."""
    found = Discovery()
    seen: set[Path] = set()
    skip = {os.path.abspath(p) for p in exclude}
    for given in paths:
        root = Path(os.path.abspath(given))
        if not root.exists():
            found.problems.append((root, "no such file or folder"))
            continue
        found.roots.append(root)
        if root.is_file():
            _add(found, seen, root)
            continue

        # followlinks=False: a symlink loop can never trap the walk; linked files are still read.
        for folder, dirs, names in os.walk(root, onerror=lambda err: _unreadable(found, err), followlinks=False):
            dirs[:] = sorted(d for d in dirs if not d.startswith(".") and os.path.join(folder, d) not in skip)
            for name in sorted(names):
                if name.startswith("."):
                    continue
                _add(found, seen, Path(folder) / name)
    return found


def _unreadable(found: Discovery, err: OSError) -> None:
    found.problems.append((Path(err.filename or "?"), f"cannot read folder: {err.strerror}"))


def _add(found: Discovery, seen: set[Path], path: Path) -> None:
    if path in seen:
        return
    seen.add(path)
    if path.is_symlink() and not path.exists():
        found.problems.append((path, "broken symbolic link"))
        return
    if not path.is_file():
        return
    found.files.append(path)


def file_size(path: Path) -> int:
    """Its size in bytes; 0 when it cannot be read (the run reports why when it reads it)."""
    try:
        return path.stat().st_size
    except OSError:
        return 0


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
