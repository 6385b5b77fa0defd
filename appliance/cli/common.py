"""What every CLI command shares: the settings options, building the services, clean errors."""

from __future__ import annotations

import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from appliance.offline import enforce_offline

F = TypeVar("F", bound=Callable[..., Any])


def settings_options(func: F) -> F:
    """--config and --data-dir, accepted by every command."""
    func = click.option("--data-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
                        help="Folder for the store, manifest and logs [env APPLIANCE_DATA_DIR; default ./data].")(func)
    func = click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                        help="YAML settings file [env APPLIANCE_CONFIG].")(func)
    return func


def _settings(config_file: Path | None, data_dir: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    """The settings of --config, APPLIANCE_CONFIG or the defaults, with --data-dir and the overrides."""
    from appliance.settings import SettingsError, load_settings

    merged: dict[str, Any] = dict(overrides or {})
    if data_dir is not None:
        merged["data_dir"] = data_dir
    try:
        return load_settings(_config_path(config_file), merged)
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None


def _config_path(config_file: Path | None) -> Path | None:
    return config_file or (Path(os.environ["APPLIANCE_CONFIG"]) if os.environ.get("APPLIANCE_CONFIG") else None)


def _services(config_file: Path | None, data_dir: Path | None, overrides: dict[str, Any] | None = None) -> Any:
    enforce_offline()  # before any library that phones home is imported
    # Parsers log per-file warnings; the ingest summary reports each file's problem once.
    logging.getLogger().setLevel(logging.ERROR)  # parsers warn through the root logger too
    warnings.filterwarnings("ignore", module="unstructured")
    from appliance.backends.common import BackendUnavailable
    from appliance.services import build_services
    from appliance.settings import SettingsError

    settings = _settings(config_file, data_dir, overrides)
    try:
        return build_services(settings, _config_path(config_file))
    except (SettingsError, BackendUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:  # e.g. a data directory that cannot be created
        raise click.ClickException(f"cannot use the data directory: {exc}") from None


def _fail_cleanly(func: Callable[[], Any]) -> Any:
    from appliance.backends.common import BackendUnavailable
    from appliance.backends.store import StoreLocked
    from appliance.rag import QuestionTooLong
    from appliance.settings import SettingsError

    try:
        return func()
    except QuestionTooLong as exc:
        raise click.ClickException(str(exc)) from None
    except SettingsError as exc:
        raise click.ClickException(str(exc)) from None
    except StoreLocked as exc:
        raise click.ClickException(
            f"{exc}\nAsk the running server instead, through its page or /v1 (`appliance doctor` prints how), "
            "or stop `appliance serve` first."
        ) from None
    except BackendUnavailable as exc:
        raise click.ClickException(str(exc)) from None
    except ValueError as exc:  # llama.cpp: a corrupt or unreadable GGUF file
        if "model" in str(exc).lower():
            raise click.ClickException(f"cannot load the chat model: {exc}") from None
        raise
    except ConnectionError as exc:
        raise click.ClickException(f"cannot reach the store: {exc}") from None
