"""What every backend shares: the error for a missing part, and finding shipped model files."""

from __future__ import annotations

import importlib.util
from pathlib import Path


class BackendUnavailable(RuntimeError):
    """A backend's package or model is missing or broken; the message names what to install or fix."""


def package_dir(name: str, pip_name: str | None = None) -> Path:
    """The folder of an installed package, found without importing it (some __init__s are heavy)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.submodule_search_locations:
        raise BackendUnavailable(f"package {name!r} is not installed: pip install {pip_name or name.replace('_', '-')}")
    return Path(next(iter(spec.submodule_search_locations)))
