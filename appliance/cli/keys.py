"""`appliance keys`: API keys for programmatic clients of /v1 (kept hashed; a key is shown once).

Registered on the main group by appliance.cli.main. Creating and revoking a key is written to the audit
trail, with the operating-system user who ran the command as the actor.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from appliance.cli.common import _services, settings_options


@click.group("keys")
def keys_group() -> None:
    """API keys for programmatic clients of /v1 (kept hashed; a key is shown once)."""


def _api_keys(config_file: Path | None, data_dir: Path | None) -> Any:
    services = _services(config_file, data_dir)
    return services, services.api_keys


@keys_group.command("create")
@click.argument("name")
@click.option("--user", default=None, help="The key acts as this user: reads what they may read.")
@click.option("--admin", is_flag=True, help="The key may manage documents and read the audit trail.")
@settings_options
def keys_create(name: str, user: str | None, admin: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Create a key called NAME and print it (the only time it is shown).

    Without --user it is a service key: it reads the documents that everyone may read."""
    from appliance.access.apikeys import ApiKeyError
    from appliance.cli.access import actor

    services, keys = _api_keys(config_file, data_dir)
    try:
        if user is not None and services.users.get(user.strip().lower()) is None:
            raise click.ClickException(f"no user named {user!r} (`appliance users list`)")
        token = keys.create(name, user.strip().lower() if user else None, admin)
        services.audit.record("api_key", actor(), action="create", key=name, user=user, admin=admin)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(token)
    click.echo(f"Key {name!r} created. Store it now: only its hash is kept. "
               "Clients send it as 'Authorization: Bearer <key>'.", err=True)


@keys_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@settings_options
def keys_list(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """List the keys (names and first characters, never the keys)."""
    import time

    services, keys = _api_keys(config_file, data_dir)
    try:
        found = keys.list()
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps([k.__dict__ for k in found]))
        return

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"

    for k in found:
        who = f"as {k.user}" if k.user else "service key"
        click.echo(f"{k.name:24} {k.hint}...  {who}{' admin' if k.admin else ''}  created {when(k.created_at)}  "
                   f"last used {when(k.last_used_at)}")


@keys_group.command("revoke")
@click.argument("name")
@settings_options
def keys_revoke(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Revoke the key called NAME: requests with it fail from now on."""
    from appliance.access.apikeys import ApiKeyError
    from appliance.cli.access import actor

    services, keys = _api_keys(config_file, data_dir)
    try:
        keys.revoke(name)
        services.audit.record("api_key", actor(), action="revoke", key=name)
    except ApiKeyError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"Key {name!r} revoked.")
