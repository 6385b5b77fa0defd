"""The administrators' tabs of the chat page: status (ui/status.py), users and groups, and the audit trail.

Built inside the page's Blocks; shown only to administrators, and every handler checks the role
again on the server (a hidden tab is not a permission)."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import gradio as gr

    from appliance.access.auth import Principal
    from appliance.services import Services

AUDIT_EVENTS = ["", "sign_in", "sign_out", "question", "search", "read", "upload", "delete", "ingest", "permissions",
                "api_key", "user", "audit_export", "feedback", "feedback_export", "settings"]


def audit_rows(entries: list[dict[str, Any]]) -> list[list[str]]:
    rows = []
    for e in entries:
        detail = {k: v for k, v in e.items() if k not in ("ts", "event", "actor", "prev", "hash")}
        rows.append([str(e.get("ts", "")), str(e.get("event", "")), str(e.get("actor", "")),
                     json.dumps(detail, ensure_ascii=False)[:400]])
    return rows


def user_rows(services: Services) -> list[list[str]]:
    import time

    def when(t: float | None) -> str:
        return time.strftime("%Y-%m-%d %H:%M", time.localtime(t)) if t else "never"

    return [[u.name, ", ".join(u.groups), "yes" if u.admin else "", u.source, "disabled" if u.disabled else "active",
             when(u.last_sign_in)] for u in services.users.list()]


@dataclass
class AdminTabs:
    tabs: list[Any]  # hidden until the page knows the user is an administrator
    timer: Any  # the Status tab's refresh, started for administrators
    refresh: Callable[..., Any]  # request -> the values of `refreshed`
    refreshed: list[Any]


def build_admin_tabs(services: Services, caller: Callable[[Any], Principal]) -> AdminTabs:
    """The Status, Users and Audit tabs. caller(request) -> Principal."""
    import gradio as gr

    from appliance.access.auth import AuthError
    from ui.status import build_status_tab


    def admin(request: gr.Request) -> Principal:
        principal: Principal = caller(request)
        if not principal.admin:
            raise gr.Error("this needs an administrator")
        return principal

    def change(action: str, name: str, groups: str, password: str, is_admin: bool,
               request: gr.Request) -> tuple[Any, ...]:
        who = admin(request)
        name = (name or "").strip().lower()
        wanted = [g.strip() for g in (groups or "").split(",") if g.strip()]
        try:
            if action == "add":
                services.users.add(name, password or "", wanted, is_admin)
                detail: dict[str, Any] = {"groups": wanted, "admin": is_admin}
            elif action == "update":
                if name == who.name and not is_admin:
                    raise AuthError("you cannot withdraw your own administration")
                services.users.update(name, wanted, is_admin)
                detail = {"groups": wanted, "admin": is_admin}
            elif action == "passwd":
                services.users.set_password(name, password or "")
                detail = {}
            elif action in ("disable", "enable"):
                if name == who.name:
                    raise AuthError("you cannot disable yourself")
                services.users.update(name, disabled=action == "disable")
                detail = {}
            else:  # rm
                if name == who.name:
                    raise AuthError("you cannot remove yourself")
                services.users.remove(name)
                detail = {}
        except AuthError as exc:
            return gr.update(), f"⚠ {exc}", gr.update()
        services.audit.record("user", who.name, action=action, user=name, via="page", **detail)
        done = {"add": "created", "update": "updated", "passwd": "has a new password (sessions ended)",
                "disable": "disabled (sessions ended)", "enable": "enabled", "rm": "removed"}[action]
        return user_rows(services), f"✓ {name} {done}.", ""  # the password box is emptied

    def search_audit(text: str, event: str, actor: str, request: gr.Request) -> Any:
        admin(request)
        return audit_rows(services.audit.search(text, actor.strip() or None, event or None, limit=500))

    def export_audit(text: str, event: str, actor: str, request: gr.Request) -> Any:
        who = admin(request)
        out = Path(tempfile.mkdtemp(prefix="audit-export-")) / "audit.jsonl"  # a 0700 folder
        with open(os.open(out, os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600), "w", encoding="utf-8") as f:
            services.audit.export(f, text=text, actor=actor.strip() or None, event=event or None)
        services.audit.record("audit_export", who.name, q=text or None, event_filter=event or None)
        return str(out)

    def refresh(request: gr.Request) -> tuple[Any, ...]:
        """The users table and the status, for administrators (empty for anyone else)."""
        try:
            allowed = caller(request).admin
        except PermissionError:
            allowed = False
        return (user_rows(services) if allowed else [], *refresh_status(request))

    # Gradio passes gr.Request to parameters annotated with it (typing.get_type_hints): this module's
    # annotations are strings (gradio is imported lazily), so give the handlers the real type.
    for handler in (search_audit, export_audit, refresh):
        handler.__annotations__ = {"request": gr.Request}

    def handler_for(action: str) -> Any:
        def handler(n: str, g: str, p: str, a: bool, request: Any) -> tuple[Any, ...]:
            return change(action, n, g, p, a, request)

        handler.__annotations__ = {"request": gr.Request}
        return handler

    status_tab, timer, refresh_status, status_outputs = build_status_tab(services, admin)
    with gr.Tab("Users", id="users-tab", visible=False) as users_tab:
        gr.Markdown("Local users sign in with a password; users of the identity provider (OIDC) appear after "
                    "their first sign-in, with the provider's groups. Everyone is also in `everyone`. Changes "
                    "count from the user's next request. The same is done with `appliance users`.")
        table = gr.Dataframe(headers=["user", "groups", "admin", "source", "state", "last sign-in"],
                             interactive=False, elem_id="users-table")
        with gr.Row():
            name = gr.Textbox(label="User name", elem_id="user-name")
            groups = gr.Textbox(label="Groups (comma-separated)", elem_id="user-groups")
            password = gr.Textbox(label="Password (new users, or a reset)", type="password", elem_id="user-password")
            is_admin = gr.Checkbox(label="Administrator", elem_id="user-admin")
        with gr.Row():
            buttons = {action: gr.Button(label, variant="primary" if action == "add" else "secondary",
                                         elem_id=f"user-{action}")
                       for action, label in (("add", "Add user"), ("update", "Save groups and role"),
                                             ("passwd", "Set password"), ("disable", "Disable"),
                                             ("enable", "Enable"), ("rm", "Remove"))}
        status = gr.Markdown("", elem_id="user-status")
        for action, button in buttons.items():
            button.click(handler_for(action), [name, groups, password, is_admin], [table, status, password])
    with gr.Tab("Audit", id="audit-tab", visible=False) as audit_tab:
        gr.Markdown("Sign-ins, questions and their sources, uploads, deletions, permission changes and API key "
                    "use, newest first. The trail is append-only and hash-chained (`appliance audit verify`).")
        with gr.Row():
            audit_text = gr.Textbox(label="Contains", scale=3, elem_id="audit-text")
            audit_event = gr.Dropdown(AUDIT_EVENTS, value="", label="Event", scale=1)
            audit_actor = gr.Textbox(label="User", scale=1)
        with gr.Row():
            audit_go = gr.Button("Search", variant="primary", elem_id="audit-search")
            audit_export_btn = gr.Button("Export as JSON lines")
        audit_table = gr.Dataframe(headers=["time (UTC)", "event", "user", "details"], interactive=False,
                                   wrap=True, elem_id="audit-table")
        audit_file = gr.File(label="Export", interactive=False)
    inputs = [audit_text, audit_event, audit_actor]
    audit_go.click(search_audit, inputs, audit_table)
    audit_text.submit(search_audit, inputs, audit_table)
    audit_export_btn.click(export_audit, inputs, audit_file)
    return AdminTabs([status_tab, users_tab, audit_tab], timer, refresh, [table, *status_outputs])
