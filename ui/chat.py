"""The Gradio chat page: streamed answers with numbered citations that open in a sources panel, each
user's saved conversations, regenerate and stop, and thumbs up/down on answers.

Per-user state lives in the session's components (the Chatbot value and gr.State values), never
on a shared object, so two browsers never see each other's conversation or selection. Every
handler resolves the user from the request again: a component's value is never trusted for who.
"""

from __future__ import annotations

import html
import logging
import time
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, cast

from ui.answer_text import STOPPED, answer_markdown, inert, stopped_markdown
from ui.page import theme
from ui.scope_picker import scope_choices, scope_of, values_of, welcome
from ui.sources import answer_sources, choices, panel_html

if TYPE_CHECKING:
    import gradio as gr

    from appliance.access.auth import Principal
    from appliance.rag import Answer
    from appliance.services import Services

__all__ = ["build_chat_ui", "theme"]
log = logging.getLogger("appliance.ui")
NO_SOURCE = "<em>Click a citation such as [1] in an answer to see the passage, its page and the file.</em>"
SEND, STOP = "Send", "Stop"  # the question box's button, by turns
# Delete asks first, in the browser; its answer rides in a hidden box (a State's value never reaches
# the page's scripts). Only a convenience: a client that skips it deletes only its own conversation.
CONFIRM_DELETE = """(conv, ok) => [conv, (!document.querySelector('#conversations input:checked')
  || window.confirm('Delete this conversation and its answers? This cannot be undone.')) ? 'yes' : 'no']"""
# Run in the browser as a question is sent: the box is emptied at once (a server's reply would come
# after the first words of the next question), and the question goes on to take_question.
# The question leaves the box as it is sent. Gradio reads the box a moment after Enter: a key typed
# in between belongs to the next question, so the box keeps whatever follows the text that was
# there when Enter went down (recorded by ui/page.py), and only that text is sent.
EMPTY_THE_BOX = """(message) => {
  const box = document.querySelector('#question textarea');
  if (!box) return [message];
  const fresh = box.dataset.sent !== undefined && Date.now() - Number(box.dataset.sentAt || 0) < 5000;
  const sent = fresh ? box.dataset.sent : (message || '');
  delete box.dataset.sent;
  delete box.dataset.sentAt;
  if (sent.trim()) {
    const now = box.value;
    box.value = now.startsWith(sent) ? now.slice(sent.length) : (now === message ? '' : now);
    box.dispatchEvent(new Event('input', {bubbles: true}));
  }
  return [sent];
}"""


def caller(request: Any) -> Principal:
    """Who sent this event: the principal our guard resolved for this very request (a queued event
    carries the request that queued it; appliance/api/security.py). A component's value is never
    trusted for who."""
    scope = getattr(getattr(request, "request", None), "scope", None) or {}
    principal = scope.get("state", {}).get("principal")
    if principal is None:
        raise PermissionError("your session has ended: reload the page and sign in again")
    return cast("Principal", principal)


def signed_in_bar(principal: Principal, csrf: str | None) -> str:
    if principal.kind != "user":
        return ""
    role = " (administrator)" if principal.admin else ""
    token = html.escape(csrf or "", quote=True)
    form = ("<form method='post' action='/logout' style='display:inline'>"
            f"<input type='hidden' name='csrf' value='{token}'>"
            "<button type='submit' id='sign-out'>Sign out</button></form>")
    return f"<div id='who'>Signed in as <b>{html.escape(principal.name)}</b>{role} · {form}</div>"


def conversation_choices(services: Services, owner: str, text: str = "", now: float | None = None,
                         ) -> list[tuple[str, str]]:
    """The owner's conversations, newest first, each labelled with its date group (Today, This week,
    Older) and time; `text` keeps those whose name holds it (any case)."""
    now = time.time() if now is None else now
    today = time.mktime((*time.localtime(now)[:3], 0, 0, 0, 0, 0, -1))

    def when(t: float) -> str:
        if t >= today:
            return "Today " + time.strftime("%H:%M", time.localtime(t))
        if t >= today - 6 * 86400:
            return "This week " + time.strftime("%a %H:%M", time.localtime(t))
        return "Older " + time.strftime("%d %b %Y", time.localtime(t))

    wanted = " ".join(text.split()).lower()
    return [(f"{when(c.updated_at)} · {c.title}", c.id) for c in services.conversations.list(owner)
            if wanted in c.title.lower()]


def build_chat_ui(services: Services) -> gr.Blocks:
    import gradio as gr

    from appliance.access.auth import SESSION_COOKIE as COOKIE
    from appliance.access.limits import RateLimited
    from appliance.answer_gate import Busy, StillWaiting
    from appliance.backends.scope import InvalidScope
    from appliance.rag import UNGROUNDED_REPLIES, Answer, QuestionTooLong, Source, checked_question
    from appliance.stores.conversations import Turn
    from appliance.usecases import answer as answer_question
    from ui.admin import build_admin_tabs
    from ui.library import build_library_tab

    settings = services.settings

    def answer(message: str, chat: list[dict[str, Any]], qa: list[Any], conv: str, turns: dict[str, Any],
               picked: list[str] | None, request: gr.Request) -> Iterator[tuple[Any, ...]]:
        """Outputs: chatbot, box, qa, conv, turns, source_pick, source_view, conv_list."""
        keep = gr.update()
        message = (message or "").strip()
        if not message:
            yield chat, keep, qa, conv, turns, keep, keep, keep
            return
        try:
            checked_question(message, settings.retrieval.max_question_chars)
        except QuestionTooLong as exc:  # the question stays in the box, to be shortened
            chat = [*chat, {"role": "assistant", "content": f"⚠ {inert(str(exc))}"}]
            yield chat, message, qa, conv, turns, keep, keep, keep
            return
        chat = [*chat, {"role": "user", "content": inert(message)}, {"role": "assistant", "content": ""}]
        index = len(chat) - 1
        try:
            principal = caller(request)
            scope = scope_of(picked)
            services.limits.question(principal)
        except (PermissionError, RateLimited, InvalidScope) as exc:
            chat[-1] = {"role": "assistant", "content": f"⚠ {inert(str(exc))}"}
            yield chat, message, qa, conv, turns, keep, keep, keep
            return
        chat[-1] = {"role": "assistant", "content": "_Searching the documents…_"}
        # From here the box is left alone (`keep`): it was emptied when the question was sent, and
        # what the reader types while the answer is written is theirs.
        yield chat, keep, qa, conv, turns, keep, keep, keep
        text = ""
        finished = False

        def gated() -> Iterator[str | Answer | None]:
            """The answer's events; None each half second it waits for the model, so that Stop (which
            closes this generator between two of its events) lands while it waits too."""
            while True:
                try:
                    yield from answer_question(services, principal, message, [(q, a) for q, a in qa], "ui",
                                               patience=0.5, scope=scope)
                    return
                except StillWaiting:
                    yield None

        try:
            for event in gated():
                if event is None:
                    chat[-1] = {"role": "assistant", "content": "_Waiting for the model: other answers are being "
                                                                "written…_"}
                    yield chat, keep, qa, conv, turns, keep, keep, keep
                elif isinstance(event, Answer):
                    finished = True
                    chat[-1] = {"role": "assistant", "content": answer_markdown(event, index)}
                    # The searched query (a follow-up with its subject), so the next follow-up keeps it.
                    qa = [*qa, [event.query or message, event.text]][-10:]
                    conv, n = save_turn(principal.name, conv, event, scope.to_dict() if scope else {})
                    sources = answer_sources(event)
                    turns = {**turns, str(index): {"question": event.question, "answer": event.text, "turn": n,
                                                   "grounded": event.grounded, "sources": sources}}
                    first = str(event.cited[0]) if event.cited else (str(sources[0]["n"]) if sources else None)
                    view = panel_html(services, principal, _by_number(sources, first)) if first else NO_SOURCE
                    yield (chat, keep, qa, conv, turns,
                           gr.update(choices=choices(sources), value=first, label=f"Sources of answer {n + 1}"),
                           view, gr.update(choices=conversation_choices(services, principal.name), value=conv))
                else:
                    text += event
                    chat[-1] = {"role": "assistant", "content": inert(text)}
                    yield chat, keep, qa, conv, turns, keep, keep, keep
        except GeneratorExit:  # Stop: the words written so far are kept in the conversation, marked stopped
            if not finished:
                save_stopped(principal.name, conv, message, text, scope.to_dict() if scope else {})
            raise
        except Busy as exc:  # every place of the shared queue is taken: say so, keep the question
            chat[-1] = {"role": "assistant", "content": f"⚠ {inert(str(exc))}. Your question is kept in the box."}
            yield chat, message, qa, conv, turns, keep, keep, keep
        except Exception:  # show the failure in the chat, never lose the question; details (hosts, paths) go to the log
            ref = uuid.uuid4().hex[:12]
            log.exception("answer failed (reference %s)", ref)
            chat[-1] = {"role": "assistant", "content": f"⚠ Could not answer (reference {ref}; the administrator "
                                                        "finds the details in the server log). Your question is kept "
                                                        "in the box: try again."}
            yield chat, message, qa, conv, turns, keep, keep, keep

    def save_stopped(owner: str, conv: str, question: str, text: str, scope: dict[str, Any]) -> None:
        store = services.conversations
        if not conv or store.get(owner, conv) is None:
            conv = store.create(owner, question, scope)
        store.add_turn(owner, conv, Turn(question, f"{text.rstrip()}\n\n{STOPPED}".lstrip(), []))

    def stopped_turn(owner: str, conv: str, question: str) -> tuple[str, int, Turn] | None:
        """The stopped answer to `question` saved last in the conversation (the owner's latest when the
        page has no id yet: a stopped first answer created it), waited for a moment: the stopped
        answer's generator saves it as it is closed, which may come after the page's next step."""
        store = services.conversations
        for _ in range(30):
            cid = conv or next((c.id for c in store.list(owner)), "")
            got = store.get(owner, cid) if cid else None
            if got and got.turns and got.turns[-1].question == question and got.turns[-1].answer.endswith(STOPPED):
                return cid, len(got.turns) - 1, got.turns[-1]
            time.sleep(0.1)
        return None

    def mark_stopped(chat: list[dict[str, Any]], turns: dict[str, Any], conv: str,
                     request: gr.Request) -> tuple[Any, ...]:
        """After an answer or its cancellation: a stopped answer is shown as stopped, and known to the
        page as a saved turn (so Retry replaces it, as it replaces a finished one)."""
        keep = gr.update()
        last = len(chat) - 1
        if last < 1 or chat[last].get("role") != "assistant" or str(last) in turns \
                or message_text(chat[last].get("content", "")).startswith("⚠"):
            return keep, keep, keep, keep
        owner = caller(request).name
        question = html.unescape(message_text(chat[last - 1].get("content", "")))
        found = stopped_turn(owner, conv, question)
        if found is None:
            return keep, keep, keep, keep
        cid, n, turn = found
        chat = [*chat[:last], {"role": "assistant", "content": stopped_markdown(turn.answer)}]
        turns = {**turns, str(last): {"question": question, "answer": turn.answer, "turn": n, "grounded": False,
                                      "sources": []}}
        return chat, turns, cid, gr.update(choices=conversation_choices(services, owner), value=cid)

    def take_question(message: str) -> tuple[Any, str]:
        """Enter or Send: the question leaves the box (to `sent_state`) and Send becomes Stop."""
        if not (message or "").strip():
            return gr.update(), ""
        return answering(), message

    def save_turn(owner: str, conv: str, answer: Answer, scope: dict[str, Any]) -> tuple[str, int]:
        """The turn saved, and the scope it was asked in kept with the conversation (a reopened one asks there)."""
        store = services.conversations
        if not conv or store.get(owner, conv) is None:
            conv = store.create(owner, answer.question, scope)
        else:
            store.set_scope(owner, conv, scope)
        store.add_turn(owner, conv, Turn(answer.question, answer.text, answer_sources(answer)))
        got = store.get(owner, conv)
        return conv, (len(got.turns) - 1 if got else 0)

    def regenerate(chat: list[dict[str, Any]], qa: list[Any], conv: str, turns: dict[str, Any],
                   picked: list[str] | None, request: gr.Request) -> Iterator[tuple[Any, ...]]:
        """The last question answered again: its answer is replaced, in the page and in the saved conversation."""
        users = [i for i, m in enumerate(chat) if m.get("role") == "user"]
        if not users:
            yield chat, gr.update(), qa, conv, turns, gr.update(), gr.update(), gr.update()
            return
        last = users[-1]
        message = html.unescape(message_text(chat[last].get("content", "")))
        old = turns.get(str(last + 1))
        if old is None:  # stopped by this very Retry: its saved words may not be known to the page yet
            found = stopped_turn(caller(request).name, conv, message)
            if found is not None:
                conv, n, turn = found
                old = {"turn": n, "answer": turn.answer}
                qa = [*qa, [message, turn.answer]]  # dropped with it below
                turns = {**turns, str(last + 1): old}
        if old is not None:  # that answer was saved: forget it
            qa = qa[:-1]
            turns = {k: v for k, v in turns.items() if k != str(last + 1)}
            if conv:
                services.conversations.drop_turn(caller(request).name, conv, int(old["turn"]))
        yield from answer(message, chat[:last], qa, conv, turns, picked, request)

    def open_source(target: str, turns: dict[str, Any], request: gr.Request) -> tuple[Any, ...]:
        """A citation link was clicked: target is "message-n:clicktime"."""
        try:
            message, n = target.split(":", 1)[0].split("-", 1)
        except ValueError:
            return gr.update(), gr.update(), gr.update()
        turn = turns.get(message)
        if turn is None:
            return gr.update(), gr.update(), gr.update()
        sources = turn["sources"]
        return (gr.update(choices=choices(sources), value=n, label=f"Sources of answer {turn['turn'] + 1}"),
                panel_html(services, caller(request), _by_number(sources, n)), message)

    def pick_source(n: str | None, shown: str, turns: dict[str, Any], request: gr.Request) -> str:
        turn = turns.get(shown) or (turns[max(turns, key=int)] if turns else None)
        if turn is None or n is None:
            return NO_SOURCE
        return panel_html(services, caller(request), _by_number(turn["sources"], n))

    def rate(turns: dict[str, Any], conv: str, data: gr.LikeData, request: gr.Request) -> tuple[Any, ...]:
        index = data.index[0] if isinstance(data.index, (list, tuple)) else data.index
        turn = turns.get(str(index))
        if turn is None:
            return gr.update(visible=False), "Only answers from the documents can be rated.", None
        if data.liked in ("", None):  # the same thumb clicked again: the rating is taken back
            record_feedback(caller(request), turn, conv, "withdrawn", "")
            return gr.update(visible=False), f"Rating of answer {turn['turn'] + 1} withdrawn.", None
        liked = data.liked if isinstance(data.liked, bool) else data.liked == "Like"
        rating = "up" if liked else "down"
        record_feedback(caller(request), turn, conv, rating, "")
        return (gr.update(visible=True), f"Thank you: answer {turn['turn'] + 1} rated "
                f"{'helpful' if liked else 'not helpful'}. A comment helps the administrators more:",
                {"message": str(index), "rating": rating})

    def comment_on(comment: str, pending: dict[str, Any] | None, turns: dict[str, Any], conv: str,
                   request: gr.Request) -> tuple[Any, ...]:
        turn = turns.get(pending["message"]) if pending else None
        if turn is None or pending is None:
            return gr.update(visible=False), "", None, ""
        record_feedback(caller(request), turn, conv, pending["rating"], comment)
        return gr.update(visible=False), "Thank you: your comment is saved.", None, ""

    def record_feedback(principal: Principal, turn: dict[str, Any], conv: str, rating: str, comment: str) -> None:
        sources = [{k: s.get(k) for k in ("n", "path", "page", "doc_id")} for s in turn["sources"]]
        services.feedback.record(principal.name, rating, turn["question"], turn["answer"], sources,  # type: ignore[arg-type]
                                 comment=comment, conversation=conv, turn=turn["turn"])
        services.audit.record("feedback", principal.name, rating=rating, conversation=conv or None,
                              turn=turn["turn"], comment=bool(comment))

    def load_conversation(cid: str | None, request: gr.Request) -> tuple[Any, ...]:
        """Outputs: chatbot, qa, conv, turns, source_pick, source_view, title_box, scope_pick."""
        conv = services.conversations.get(caller(request).name, cid) if cid else None
        if conv is None:
            return [], [], "", {}, gr.update(choices=[], value=None, label="Sources"), NO_SOURCE, "", []
        chat: list[dict[str, Any]] = []
        turns: dict[str, Any] = {}
        for n, t in enumerate(conv.turns):
            chat.append({"role": "user", "content": inert(t.question)})
            index = len(chat)
            for i, s in enumerate(t.sources, start=1):
                s.setdefault("n", i)  # saved before sources were numbered
            grounded = bool(t.sources) and t.answer not in UNGROUNDED_REPLIES
            shown = Answer(t.question, t.answer, [Source.from_dict(s) for s in t.sources], grounded=grounded)
            chat.append({"role": "assistant", "content": stopped_markdown(t.answer) if t.answer.endswith(STOPPED)
                         else answer_markdown(shown, index)})
            turns[str(index)] = {"question": t.question, "answer": t.answer, "turn": n, "grounded": grounded,
                                 "sources": t.sources}
        qa = [[t.question, t.answer] for t in conv.turns][-10:]
        # The reader's ratings of these answers, shown again (their latest, as the export counts them).
        rated = {row.get("turn"): row["rating"] for row in services.feedback.entries()
                 if row["user"] == caller(request).name and row.get("conversation") == conv.id}
        ratings = [{"up": "Like", "down": "Dislike"}.get(rated.get(n, "")) for n in range(len(conv.turns))]
        return (gr.update(value=chat, feedback_value=ratings), qa, conv.id, turns,
                gr.update(choices=[], value=None, label="Sources"), NO_SOURCE, conv.title,
                values_of(conv.scope))

    def new_conversation() -> tuple[Any, ...]:
        return ([], [], "", {}, gr.update(choices=[], value=None, label="Sources"), NO_SOURCE, "", [],
                gr.update(value=None))

    def rename(title: str, conv: str, request: gr.Request) -> tuple[Any, ...]:
        owner = caller(request).name
        if not conv:
            return gr.update(), "Ask a question first: a conversation is saved with its first answer."
        if not (title or "").strip():
            return gr.update(), "Type the new name first."
        services.conversations.rename(owner, conv, title)
        return gr.update(choices=conversation_choices(services, owner), value=conv), "Renamed."

    def search_conversations(text: str, conv: str, request: gr.Request) -> Any:
        found = conversation_choices(services, caller(request).name, text or "")
        return gr.update(choices=found, value=conv if any(c == conv for _, c in found) else None)

    def delete(conv: str, confirmed: str, request: gr.Request) -> tuple[Any, ...]:
        """After the page's confirmation (CONFIRM_DELETE); a cancelled one, or no conversation yet, changes nothing."""
        owner = caller(request).name
        if not conv or confirmed != "yes":
            return (*(gr.update(),) * (len(new_conversation()) - 1), gr.update(),
                    "Kept." if conv else "Nothing to delete yet.")
        services.conversations.delete(owner, conv)
        return (*new_conversation()[:-1], gr.update(choices=conversation_choices(services, owner), value=None),
                "Deleted.")

    def on_load(request: gr.Request) -> tuple[Any, ...]:
        """Outputs: who bar, what only administrators see, conversation list, scope picker, chat (its welcome)."""
        try:
            principal = caller(request)
        except PermissionError:
            return (gr.update(value=""), *(gr.update(visible=False),) * len(admin_only), gr.update(active=False),
                    gr.update(choices=[]), gr.update(choices=[]), gr.update())
        session = services.users.session(_cookie(request, COOKIE)) if principal.kind == "user" else None
        admin = gr.update(visible=principal.admin)
        return (gr.update(value=signed_in_bar(principal, session.csrf if session else None)),
                *(admin,) * len(admin_only), gr.update(active=principal.admin),
                gr.update(choices=conversation_choices(services, principal.name), value=None),
                gr.update(choices=scope_choices(services, principal), value=[]),
                gr.update(placeholder=welcome(services, principal)))

    # Gradio passes gr.Request (and gr.LikeData) to parameters annotated with them, found with
    # typing.get_type_hints; this module's annotations are strings (gradio is imported lazily), so
    # give the handlers the real types.
    for handler in (answer, regenerate, open_source, pick_source, load_conversation, rename, delete, on_load,
                    comment_on, search_conversations, mark_stopped):
        handler.__annotations__ = {"request": gr.Request}
    rate.__annotations__ = {"data": gr.LikeData, "request": gr.Request}

    # Uploads wait in Gradio's cache (in the data directory, owner-only), shared by content between
    # sessions: Gradio deletes them an hour after they came, checking every 10 minutes.
    with gr.Blocks(title=settings.ui.title, analytics_enabled=False, delete_cache=(600, 3600)) as blocks:
        with gr.Row(elem_id="header-row"):
            gr.Markdown(f"## {html.escape(settings.ui.title)}\nAnswers come only from your organisation's "
                        "documents, with numbered sources. Nothing leaves this server.")
            who_bar = gr.HTML("", elem_id="who-bar")
        qa_state = gr.State([])  # (searched query, answer) pairs: the follow-up context
        conv_state = gr.State("")  # this browser tab's conversation id (stored per user)
        turns_state = gr.State({})  # chat message index -> question, answer, sources, turn number
        scope_state = gr.State([])  # the picker's values (ui/scope_picker.py)
        shown_state = gr.State("")  # the message whose sources the panel lists
        pending_state = gr.State(None)  # the rating a comment would complete
        with gr.Tabs():
            with gr.Tab("Chat", id="chat-tab"), gr.Row(equal_height=False):
                with gr.Column(scale=1, min_width=220, elem_id="conversations-column"):
                    new_btn = gr.Button("New conversation", variant="secondary", size="sm", elem_id="new-conv")
                    # Above the list, which scrolls on its own: never below the fold of a long history.
                    with gr.Accordion("Rename or delete this conversation", open=False):
                        title_box = gr.Textbox(label="Name", elem_id="conv-title", max_length=120)
                        with gr.Row():
                            rename_btn = gr.Button("Rename", size="sm", elem_id="conv-rename")
                            delete_btn = gr.Button("Delete", size="sm", variant="stop", elem_id="conv-delete")
                        conv_status = gr.Markdown("")
                        confirm_box = gr.Textbox(visible="hidden", elem_id="confirm-delete")
                    conv_search = gr.Textbox(placeholder="Search conversations", show_label=False, max_length=120,
                                             elem_id="conv-search")
                    conv_list = gr.Radio([], label="Your conversations", elem_id="conversations")
                with gr.Column(scale=4, min_width=320):
                    # On a phone the conversations are a drawer this button opens (ui/page.py CSS and JS).
                    gr.Button("Conversations", size="sm", elem_id="drawer-toggle")
                    chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chat", buttons=["copy", "copy_all"],
                                         feedback_options=("Like", "Dislike"),
                                         placeholder="Ask a question about the ingested documents.")
                    # What to ask about: folders, documents, types; chips once chosen; `#` in the box opens it.
                    scope_pick = gr.Dropdown([], value=[], multiselect=True, filterable=True, label="Ask about",
                                             info="Everything you may read, unless you choose folders, documents "
                                                  "or types (type # in the question box)", elem_id="scope-pick")
                    box = gr.Textbox(placeholder="Ask a question… (Enter sends, Shift+Enter: new line, Esc stops)",
                                     show_label=False, autofocus=True, elem_id="question", lines=1, max_lines=6,
                                     submit_btn=SEND, stop_btn=False)
                    feedback_note = gr.Markdown("", elem_id="feedback-note")
                    with gr.Row(visible=False, elem_id="comment-row") as comment_row:
                        comment_box = gr.Textbox(show_label=False, placeholder="What was wrong, or right?",
                                                 scale=4, elem_id="feedback-comment", max_length=2000)
                        comment_btn = gr.Button("Send comment", size="sm", scale=1, elem_id="feedback-send")
                with gr.Column(scale=3, min_width=300, elem_id="sources-column"):
                    source_pick = gr.Radio([], label="Sources", elem_id="source-pick")
                    source_view = gr.HTML(NO_SOURCE, elem_id="source-view")
                    cite_target = gr.Textbox(visible="hidden", elem_id="cite-target")
                    # The question just sent (the box is emptied as it is sent). A hidden box, not a
                    # State: the `respond` API takes the question as its first input, as before.
                    sent_state = gr.Textbox(visible="hidden", elem_id="sent-question")
            library_tab = build_library_tab(services, caller)
            admin_tabs = build_admin_tabs(services, caller)

        outputs = [chatbot, box, qa_state, conv_state, turns_state, source_pick, source_view, conv_list]
        # The box is emptied when a question is sent, never while its answer streams, and its Send
        # button becomes Stop until the answer ends (Esc clicks it too: page.JS). These steps only
        # change the box: no limit on how many run at once. (queue=False, as Gradio's ChatInterface
        # has it, sends nothing from a page mounted as ours is.)
        # No progress overlays: the chat shows its own ("Searching the documents…"), and Gradio's would
        # dim the sources panel and the conversation list for the whole answer.
        sent = box.submit(take_question, box, [box, sent_state], concurrency_limit=None, js=EMPTY_THE_BOX,
                          show_progress="hidden")
        # As many answers at once as the model serves (Gradio's default is one); the rest wait in a bounded queue.
        # The picker's value rides in a State: the `respond` API keeps its inputs (a question, the chat).
        scope_pick.change(lambda picked: list(picked or []), scope_pick, scope_state, show_progress="hidden")
        asked = sent.then(answer, [sent_state, chatbot, qa_state, conv_state, turns_state, scope_state], outputs,
                          api_name="respond", concurrency_limit=settings.llm.max_parallel, concurrency_id="answers",
                          show_progress="hidden")
        # Regenerate (the answer's own Retry button) during an answer stops that answer first: one
        # question never gets two saved answers.
        again = chatbot.retry(answering, None, box, cancels=[asked], concurrency_limit=None, show_progress="hidden") \
            .then(regenerate, [chatbot, qa_state, conv_state, turns_state, scope_state], outputs,
                  concurrency_limit=settings.llm.max_parallel, concurrency_id="answers", show_progress="hidden")
        for event in (asked, again):
            # After the answer, or its cancellation: Send again, and the panel follows the last answer.
            event.then(ready, None, box, concurrency_limit=None, show_progress="hidden")
            event.then(mark_stopped, [chatbot, turns_state, conv_state], [chatbot, turns_state, conv_state, conv_list],
                       concurrency_limit=None, show_progress="hidden")
            event.then(lambda turns: str(max(map(int, turns))) if turns else "", turns_state, shown_state)
        box.stop(None, None, None, cancels=[asked, again])
        cite_target.change(open_source, [cite_target, turns_state], [source_pick, source_view, shown_state])
        source_pick.select(pick_source, [source_pick, shown_state, turns_state], source_view)
        chatbot.like(rate, [turns_state, conv_state], [comment_row, feedback_note, pending_state])
        comment_inputs = [comment_box, pending_state, turns_state, conv_state]
        comment_outputs = [comment_row, feedback_note, pending_state, comment_box]
        comment_btn.click(comment_on, comment_inputs, comment_outputs)
        comment_box.submit(comment_on, comment_inputs, comment_outputs)
        conv_outputs = [chatbot, qa_state, conv_state, turns_state, source_pick, source_view, title_box, scope_pick]
        conv_list.select(load_conversation, conv_list, conv_outputs)
        conv_search.change(search_conversations, [conv_search, conv_state], conv_list, show_progress="hidden")
        new_btn.click(new_conversation, None, [*conv_outputs, conv_list])
        chatbot.clear(new_conversation, None, [*conv_outputs, conv_list])  # its bin icon: a new conversation
        rename_btn.click(rename, [title_box, conv_state], [conv_list, conv_status])
        delete_btn.click(delete, [conv_state, confirm_box], [*conv_outputs, conv_list, conv_status], js=CONFIRM_DELETE)
        admin_only = [*library_tab.admin_controls, *admin_tabs.tabs]
        # No progress overlay: it would dim the header and the chat until the page's data is in.
        blocks.load(on_load, None, [who_bar, *admin_only, admin_tabs.timer, conv_list, scope_pick, chatbot],
                    show_progress="hidden") \
            .then(admin_tabs.refresh, None, admin_tabs.refreshed).then(library_tab.refresh, library_tab.inputs,
                                                                       library_tab.outputs)
    # api_open=False: Gradio's /run and /api routes would run an answer beside the queue, past its limits.
    blocks.queue(max_size=max(1, settings.server.max_queued), api_open=False)
    return cast("gr.Blocks", blocks)


def answering() -> Any:
    """The question box while an answer is written: Stop in place of Send, the text left as it is."""
    import gradio as gr

    return gr.update(submit_btn=False, stop_btn=STOP)


def ready() -> Any:
    import gradio as gr

    return gr.update(submit_btn=SEND, stop_btn=False)


def message_text(content: Any) -> str:
    """A chat message's text: Gradio hands messages back as a string or as a list of typed parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return str(content or "")


def _by_number(sources: list[dict[str, Any]], n: str | None) -> dict[str, Any] | None:
    return next((s for s in sources if str(s.get("n")) == str(n)), None)


def _cookie(request: Any, name: str) -> str | None:
    cookies = getattr(request, "cookies", None)
    if cookies is None:
        return None
    value = cookies.get(name) if hasattr(cookies, "get") else getattr(cookies, name, None)
    return None if value is None else str(value)
