"""`appliance users`, `appliance acl` and `appliance audit`: who may sign in, who may read what, what happened.

Registered on the main group by appliance.cli. Every change is written to the audit trail, with the
operating-system user who ran the command as the actor.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from appliance.cli.common import _fail_cleanly, _services, settings_options


def actor() -> str:
    from appliance.handover import os_actor

    return os_actor()


def _password(stdin: bool, confirm: bool = True) -> str:
    if stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True, confirmation_prompt=confirm))


@click.group("users")
def users_group() -> None:
    """Local users of the chat page and API (passwords kept as Argon2id hashes)."""


@users_group.command("add")
@click.argument("name")
@click.option("--group", "groups", multiple=True, help="A group the user belongs to (repeat for more).")
@click.option("--admin", is_flag=True, help="May manage documents, permissions, and read the audit trail.")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (scripts).")
@settings_options
def users_add(name: str, groups: tuple[str, ...], admin: bool, password_stdin: bool, config_file: Path | None,
              data_dir: Path | None) -> None:
    """Create user NAME; the password is asked twice (there is no default password)."""
    from appliance.access.auth import AuthError

    services = _services(config_file, data_dir)
    try:
        user = services.users.add(name, _password(password_stdin), groups, admin)
        services.audit.record("user", actor(), action="add", user=user.name, groups=user.groups, admin=admin)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"User {user.name!r} created{' (administrator)' if admin else ''}; groups: "
               f"{', '.join(user.groups) or '(none besides everyone)'}.")


@users_group.command("passwd")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from the first line of stdin (scripts).")
@settings_options
def users_passwd(name: str, password_stdin: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Set a new password for NAME; their open sessions end."""
    from appliance.access.auth import AuthError

    services = _services(config_file, data_dir)
    try:
        services.users.set_password(name, _password(password_stdin))
        services.audit.record("user", actor(), action="passwd", user=name.lower())
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"Password of {name!r} changed; their sessions ended.")


@users_group.command("set")
@click.argument("name")
@click.option("--group", "groups", multiple=True, help="Replace the user's groups with these (repeat).")
@click.option("--no-groups", is_flag=True, help="Remove every group (the user keeps 'everyone').")
@click.option("--admin/--no-admin", default=None, help="Grant or withdraw administration.")
@click.option("--disable/--enable", "disabled", default=None, help="Disable (sessions end at once) or enable.")
@settings_options
def users_set(name: str, groups: tuple[str, ...], no_groups: bool, admin: bool | None, disabled: bool | None,
              config_file: Path | None, data_dir: Path | None) -> None:
    """Change NAME's groups, role or state; counts from their next request."""
    from appliance.access.auth import AuthError

    services = _services(config_file, data_dir)
    try:
        new_groups = [] if no_groups else list(groups) if groups else None
        user = services.users.update(name, new_groups, admin, disabled)
        services.audit.record("user", actor(), action="set", user=user.name, groups=user.groups, admin=user.admin,
                              disabled=user.disabled)
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"{user.name}: groups {', '.join(user.groups) or '(none)'}; "
               f"{'administrator' if user.admin else 'user'}{'; disabled' if user.disabled else ''}.")


@users_group.command("rm")
@click.argument("name")
@settings_options
def users_rm(name: str, config_file: Path | None, data_dir: Path | None) -> None:
    """Remove user NAME and end their sessions (their conversations stay, for the audit)."""
    from appliance.access.auth import AuthError

    services = _services(config_file, data_dir)
    try:
        services.users.remove(name)
        services.audit.record("user", actor(), action="rm", user=name.lower())
    except AuthError as exc:
        raise click.ClickException(str(exc)) from None
    finally:
        services.close()
    click.echo(f"User {name!r} removed.")


@users_group.command("list")
@click.option("--json", "as_json", is_flag=True)
@settings_options
def users_list(as_json: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """List the users with their groups and roles."""
    import time

    services = _services(config_file, data_dir)
    try:
        found = services.users.list()
    finally:
        services.close()
    if as_json:
        click.echo(json.dumps([u.__dict__ for u in found]))
        return
    for u in found:
        last = time.strftime("%Y-%m-%d %H:%M", time.localtime(u.last_sign_in)) if u.last_sign_in else "never"
        flags = "".join([" admin" if u.admin else "", " disabled" if u.disabled else "", f" ({u.source})"])
        click.echo(f"{u.name:24} {', '.join(u.groups) or '-':30} last sign-in {last}{flags}")


@click.group("acl")
def acl_group() -> None:
    """Who may read which documents (the settings' `acl:` rules)."""


@acl_group.command("apply")
@click.option("--dry-run", is_flag=True, help="Say which documents would change; change nothing.")
@settings_options
def acl_apply(dry_run: bool, config_file: Path | None, data_dir: Path | None) -> None:
    """Update the readers of every stored document to the current rules, without re-ingesting.

    While `appliance serve` holds the store, the server re-reads its settings file and applies them."""
    from appliance.cli.handover import apply_acl_through, server_holding_store

    services = _services(config_file, data_dir)

    def run() -> list[dict[str, Any]]:
        server = server_holding_store(services)
        if server is not None:  # it holds the store: the job runs there, with its settings file read again
            return apply_acl_through(server, dry_run)
        from appliance.usecases import apply_acl

        return [c.__dict__ for c in apply_acl(services, actor(), "cli", dry_run=dry_run)]

    try:
        changes = _fail_cleanly(run)
    finally:
        services.close()
    for c in changes:
        click.echo(f"{'would change' if dry_run else 'changed'}  {c['path']}: {', '.join(c['before'])} -> "
                   f"{', '.join(c['after'])} ({c['chunks']} chunks)")
    click.echo(f"{len(changes)} document(s) {'would change' if dry_run else 'changed'}; nothing re-embedded.")


@acl_group.command("show")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@settings_options
def acl_show(paths: tuple[Path, ...], config_file: Path | None, data_dir: Path | None) -> None:
    """Which rule decides who reads each path, and what is stored for it now."""
    services = _services(config_file, data_dir)
    try:
        rules = services.access_rules()
        for given in paths:
            path = str(given.absolute())
            rule = rules.rule_for(path)
            stored = services.manifest.get(path)
            source = f"rule {rule.path!r}" if rule else "ingest.default_groups (no rule)"
            now = f"; stored: {', '.join(stored.acl)}" if stored else "; not ingested"
            click.echo(f"{path}: {', '.join(rules.groups_for(path))}  [{source}{now}]")
    finally:
        services.close()


@click.group("audit")
def audit_group() -> None:
    """The audit trail: search, export, check that no line was changed."""


def _audit_filters(func: Any) -> Any:
    for option in (click.option("--event", default=None, help="sign_in, question, upload, delete, permissions..."),
                   click.option("--user", "actor_name", default=None, help="Who did it."),
                   click.option("--since", default=None, help="ISO 8601 time, e.g. 2026-12-01 or 2026-12-01T09:00."),
                   click.option("--until", default=None, help="ISO 8601 time prefix.")):
        func = option(func)
    return func


@audit_group.command("search")
@click.argument("text", required=False, default="")
@_audit_filters
@click.option("--limit", type=click.IntRange(min=1), default=50, show_default=True)
@settings_options
def audit_search(text: str, event: str | None, actor_name: str | None, since: str | None, until: str | None,
                 limit: int, config_file: Path | None, data_dir: Path | None) -> None:
    """Print matching lines, newest first (TEXT: found anywhere in the line)."""
    services = _services(config_file, data_dir)
    for entry in services.audit.search(text, actor_name, event, since, until, limit):
        click.echo(json.dumps({k: v for k, v in entry.items() if k not in ("prev", "hash")}, ensure_ascii=False))


@audit_group.command("export")
@click.argument("out", type=click.File("w"), default="-")
@_audit_filters
@settings_options
def audit_export(out: Any, event: str | None, actor_name: str | None, since: str | None, until: str | None,
                 config_file: Path | None, data_dir: Path | None) -> None:
    """Write the matching lines (oldest first, with their hashes) to OUT as JSON lines."""
    services = _services(config_file, data_dir)
    count = services.audit.export(out, event=event, actor=actor_name, since=since, until=until)
    click.echo(f"{count} lines exported.", err=True)


@audit_group.command("verify")
@settings_options
def audit_verify(config_file: Path | None, data_dir: Path | None) -> None:
    """Check the hash chain: exit 1 if any line was changed, added or removed."""
    services = _services(config_file, data_dir)
    result = services.audit.verify()
    for problem in result.problems:
        click.echo(problem, err=True)
    click.echo(f"{result.lines} lines; {'intact' if result.ok else f'{len(result.problems)} problem(s)'}.")
    sys.exit(0 if result.ok else 1)


@audit_group.command("archive")
@click.argument("dest", type=click.Path(file_okay=False, path_type=Path))
@settings_options
def audit_archive(dest: Path, config_file: Path | None, data_dir: Path | None) -> None:
    """Verify the chain, then move the rotated files (not the current one) to DEST, a 0700 folder."""
    from appliance.access.audit import AuditError

    services = _services(config_file, data_dir)
    try:
        moved = services.audit.archive(dest, actor=actor())
    except AuditError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"{len(moved)} files moved to {dest.absolute()}; `appliance audit verify` checks what stays.")


@click.group("feedback")
def feedback_group() -> None:
    """Employees' thumbs up/down on answers, with their questions, sources and comments."""


@feedback_group.command("export")
@click.argument("out", type=click.File("w"), default="-")
@click.option("--rating", type=click.Choice(["up", "down"]), default=None, help="Only these ratings.")
@settings_options
def feedback_export(out: Any, rating: str | None, config_file: Path | None, data_dir: Path | None) -> None:
    """Write the rated answers to OUT as JSON lines (the last rating of each answer), oldest first."""
    services = _services(config_file, data_dir)
    count = services.feedback.export(out, rating)  # type: ignore[arg-type]
    click.echo(f"{count} rated answers exported.", err=True)


COMMANDS = (users_group, acl_group, audit_group, feedback_group)
