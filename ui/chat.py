"""The Gradio chat page: streamed answers, numbered citations, and a sources panel.

Per-user state lives in the session's components (the Chatbot value and a gr.State), never
on a shared object, so two browsers never see each other's conversation.
"""

from __future__ import annotations

import html
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    import gradio as gr

    from appliance.api.state import AppState
    from appliance.auth import Principal
    from appliance.rag import Answer
    from appliance.services import Services

EMPTY_SOURCES = "_Sources of the answer appear here._"


def theme() -> gr.themes.Base:
    import gradio as gr

    # System fonts only: the default theme fetches fonts from the internet, which an
    # air-gapped page must never do.
    return gr.themes.Default(
        font=["system-ui", "-apple-system", "Segoe UI", "Roboto", "sans-serif"],
        font_mono=["ui-monospace", "SFMono-Regular", "Menlo", "monospace"],
    )


def inert(text: str) -> str:
    """Text from documents or the model, made safe to render as Markdown: no HTML, and no image
    syntax, so a passage like ![](http://host/?q=...) can never make a browser fetch anything."""
    return html.escape(text).replace("![", "!&#91;")  # an entity is never Markdown syntax


def render_sources(answer: Answer) -> str:
    if not answer.sources:
        return EMPTY_SOURCES
    title = "### Sources" if answer.grounded else "### Closest passages\n_None was relevant enough to answer from._"
    parts = [title]
    for s in answer.sources:
        where = f"page {s.page_name or s.page}" if s.page is not None else ""
        section = " › ".join(s.section)
        meta = " · ".join(x for x in (where, section) if x)
        cited = " ✓ cited" if s.number in answer.cited else ""
        sim = f"similarity {s.dense_score:.2f}" if s.dense_score is not None else ""
        passage = " ".join(s.text.split())
        if len(passage) > 900:
            passage = passage[:900] + "…"
        # One HTML block per source (no blank line inside), so Markdown inside it is not interpreted.
        parts.append(
            f"<div class='source'><b>[{s.number}] {html.escape(s.file_name)}</b>{cited}<br>"
            f"<small>{html.escape(meta)}{' · ' if meta and sim else ''}{sim}<br>"
            f"<code>{html.escape(s.path)}</code></small>"
            f"<blockquote>{inert(passage)}</blockquote></div>\n"
        )
    return "\n".join(parts)


def citation_footer(answer: Answer) -> str:
    if not answer.grounded or not answer.sources:
        return ""
    labels = "; ".join(f"[{s.number}] {s.location}" for s in answer.sources)
    return f"\n\n<small>Sources: {html.escape(labels)}</small>"


def principal_named(state: AppState, username: str | None) -> Principal:
    """The principal of a Gradio event, from the user name our guard resolved for this very request."""
    from appliance.auth import EVERYONE, LOCAL, Principal

    services = state.services
    if username == "local" and not services.auth_required():
        return LOCAL
    if username == "server.json":
        return Principal("server.json", "server", None, True)
    if username and username.startswith("key:"):
        return Principal(username, "key", frozenset([EVERYONE]), False)
    user = services.users.get(username) if username else None
    if user is None or user.disabled:
        raise PermissionError("your session has ended: reload the page and sign in again")
    return user.principal()


def signed_in_bar(principal: Principal, csrf: str | None) -> str:
    if principal.kind != "user":
        return ""
    role = " (administrator)" if principal.admin else ""
    token = html.escape(csrf or "", quote=True)
    form = ("<form method='post' action='/logout' style='display:inline'>"
            f"<input type='hidden' name='csrf' value='{token}'>"
            "<button type='submit' id='sign-out'>Sign out</button></form>")
    return f"<div id='who'>Signed in as <b>{html.escape(principal.name)}</b>{role} · {form}</div>"


def build_chat_ui(services: Services, state: AppState) -> gr.Blocks:
    import gradio as gr

    from appliance.api.errors import ApiError
    from appliance.api.security import COOKIE, check_question_rate
    from appliance.conversations import Turn
    from appliance.rag import Answer
    from ui.admin import build_admin_tabs

    settings = services.settings

    def respond(message: str, chat: list[dict[str, Any]], qa: list[tuple[str, str]], conv: str,
                request: gr.Request) -> Iterator[tuple[Any, ...]]:
        message = (message or "").strip()
        if not message:
            yield chat, gr.update(), qa, "", conv
            return
        chat = [*chat, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        try:
            principal = principal_named(state, request.username)
            check_question_rate(state, principal)
        except (PermissionError, ApiError) as exc:
            chat[-1] = {"role": "assistant", "content": f"⚠️ {inert(str(exc))}"}
            yield chat, gr.update(), qa, message, conv
            return
        yield chat, "_Searching the documents…_", qa, "", conv
        text = ""
        try:
            for event in services.rag.stream(message, history=qa, groups=principal.reads):
                if isinstance(event, Answer):
                    chat[-1] = {"role": "assistant", "content": inert(event.text) + citation_footer(event)}
                    # The searched query (a follow-up with its subject), so the next follow-up keeps it.
                    qa = [*qa, (event.query or message, event.text)][-10:]
                    state.record_answer(principal, "ui", event)
                    conv = save_turn(principal.name, conv, event)
                    yield chat, render_sources(event), qa, "", conv
                else:
                    text += event
                    chat[-1] = {"role": "assistant", "content": inert(text)}
                    yield chat, gr.update(), qa, "", conv
        except Exception:  # show the failure in the chat, never lose the question; details (hosts, paths) go to the log
            import logging
            import uuid

            ref = uuid.uuid4().hex[:12]
            logging.getLogger("appliance.ui").exception("answer failed (reference %s)", ref)
            chat[-1] = {"role": "assistant", "content": f"⚠️ Could not answer (reference {ref}; the administrator "
                                                        "finds the details in the server log). Your question is kept "
                                                        "in the box: try again."}
            yield chat, gr.update(), qa, message, conv

    def save_turn(owner: str, conv: str, answer: Answer) -> str:
        store = services.conversations
        if not conv:
            conv = store.create(owner, answer.question)
        sources = [{"path": s.path, "file_name": s.file_name, "page": s.page, "doc_id": s.doc_id}
                   for s in answer.sources]
        store.add_turn(owner, conv, Turn(answer.question, answer.text, sources))
        return conv

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        try:
            principal = principal_named(state, request.username)
        except PermissionError:
            return gr.update(value=""), gr.update(visible=False), gr.update(visible=False)
        session = services.users.session(_cookie(request, COOKIE)) if principal.kind == "user" else None
        return (gr.update(value=signed_in_bar(principal, session.csrf if session else None)),
                gr.update(visible=principal.admin), gr.update(visible=principal.admin))

    # Gradio passes gr.Request to a parameter annotated with it, found with typing.get_type_hints; this
    # module's annotations are strings (gradio is imported lazily), so give those handlers the real type.
    for handler in (respond, on_load):
        handler.__annotations__ = {"request": gr.Request}

    with gr.Blocks(title=settings.ui.title, analytics_enabled=False) as blocks:
        with gr.Row():
            gr.Markdown(f"## {html.escape(settings.ui.title)}\nAnswers come only from your organisation's "
                        "documents, with numbered sources. Nothing leaves this server.")
            who = gr.HTML("", elem_id="who-bar")
        qa_state = gr.State([])
        conv_state = gr.State("")  # this browser tab's conversation id (stored per user)
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"), gr.Row(equal_height=False):
                with gr.Column(scale=3):
                    chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chat",
                                         placeholder="Ask a question about the ingested documents.")
                    with gr.Row():
                        box = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=5,
                                         autofocus=True, elem_id="question", lines=1, max_lines=6,
                                         submit_btn=True)
                    clear = gr.Button("New conversation", variant="secondary", size="sm")
                with gr.Column(scale=2):
                    sources = gr.Markdown(EMPTY_SOURCES, elem_id="sources")
            users_tab, audit_tab, (refresh_users, users_table) = build_admin_tabs(
                state, lambda request: principal_named(state, request.username))
        # As many answers at once as the model serves (Gradio's default is one); the rest wait in a bounded queue.
        box.submit(respond, [box, chatbot, qa_state, conv_state], [chatbot, sources, qa_state, box, conv_state],
                   concurrency_limit=settings.llm.max_parallel)
        clear.click(lambda: ([], EMPTY_SOURCES, [], "", ""), None, [chatbot, sources, qa_state, box, conv_state])
        blocks.load(on_load, None, [who, users_tab, audit_tab]).then(refresh_users, None, users_table)
    blocks.queue(max_size=max(1, settings.server.max_queued))
    return cast("gr.Blocks", blocks)


def _cookie(request: Any, name: str) -> str | None:
    cookies = getattr(request, "cookies", None)
    if cookies is None:
        return None
    value = cookies.get(name) if hasattr(cookies, "get") else getattr(cookies, name, None)
    return None if value is None else str(value)
