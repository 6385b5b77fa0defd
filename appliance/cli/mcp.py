"""`appliance mcp`: the documents as an MCP server over stdin/stdout, for an agent or IDE assistant that
launches it (appliance/api/mcp_server.py). Registered on the main group by appliance.cli.main."""

from __future__ import annotations

import os
from pathlib import Path

import click

from appliance.cli.common import _fail_cleanly, _services, settings_options

KEY_ENV = "APPLIANCE_API_KEY"


@click.command("mcp")
@click.option("--key-file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help=f"Read the API key from this file (its first line) [default: env {KEY_ENV}].")
@settings_options
def mcp_command(key_file: Path | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Serve MCP over stdin/stdout with the permissions of an API key.

    The key (`appliance keys create NAME --user USER`) comes from --key-file or the APPLIANCE_API_KEY
    environment variable; without one, or with one that does not verify, nothing is served. Every call
    is filtered by the key's groups, rate-limited and audited as /v1 does. While `appliance serve`
    holds the store, point the MCP client at that server's /mcp instead."""
    from appliance.backends.store import StoreLocked

    if key_file is not None:
        lines = key_file.read_text(encoding="utf-8", errors="replace").splitlines()
        key = lines[0].strip() if lines else ""
    else:
        key = os.environ.get(KEY_ENV, "").strip()
    if not key:
        raise click.ClickException(f"an API key is needed: set {KEY_ENV} or pass --key-file "
                                   "(an administrator creates one with `appliance keys create NAME --user USER`)")
    services = _services(config_file, data_dir)

    def serve() -> None:
        from appliance.api.mcp_server import serve_stdio

        try:  # open the store now: a running server's lock is reported before anything is served
            services.store.count()
        except StoreLocked as exc:
            raise click.ClickException(f"{exc}\nWhile `appliance serve` runs, point the MCP client at that "
                                       "server's /mcp (streamable HTTP, the same key).") from None
        serve_stdio(services, key)

    from appliance.api.mcp_server import Refused

    try:
        _fail_cleanly(serve)
    except Refused as exc:
        raise click.ClickException(f"refused: {exc}") from None
    finally:
        services.close()
