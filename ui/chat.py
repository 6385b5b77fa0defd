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


def build_chat_ui(services: Services) -> gr.Blocks:
    import gradio as gr

    from appliance.rag import Answer

    settings = services.settings

    def respond(message: str, chat: list[dict[str, Any]], qa: list[tuple[str, str]]) -> Iterator[tuple[Any, ...]]:
        message = (message or "").strip()
        if not message:
            yield chat, gr.update(), qa, ""
            return
        chat = [*chat, {"role": "user", "content": message}, {"role": "assistant", "content": ""}]
        yield chat, "_Searching the documents…_", qa, ""
        text = ""
        try:
            for event in services.rag.stream(message, history=qa):
                if isinstance(event, Answer):
                    chat[-1] = {"role": "assistant", "content": inert(event.text) + citation_footer(event)}
                    # The searched query (a follow-up with its subject), so the next follow-up keeps it.
                    qa = [*qa, (event.query or message, event.text)][-10:]
                    yield chat, render_sources(event), qa, ""
                else:
                    text += event
                    chat[-1] = {"role": "assistant", "content": inert(text)}
                    yield chat, gr.update(), qa, ""
        except Exception as exc:  # show the failure in the chat; never lose the question
            chat[-1] = {"role": "assistant", "content": f"⚠️ Could not answer: {inert(str(exc))}"}
            yield chat, gr.update(), qa, message

    with gr.Blocks(title=settings.ui.title, analytics_enabled=False) as blocks:
        gr.Markdown(f"## {html.escape(settings.ui.title)}\nAnswers come only from your organisation's documents, "
                    "with numbered sources. Nothing leaves this server.")
        qa_state = gr.State([])
        with gr.Row(equal_height=False):
            with gr.Column(scale=3):
                chatbot = gr.Chatbot(label="Chat", height=520, elem_id="chat",
                                     placeholder="Ask a question about the ingested documents.")
                with gr.Row():
                    box = gr.Textbox(placeholder="Ask a question…", show_label=False, scale=5, autofocus=True,
                                     elem_id="question", lines=1, max_lines=6, submit_btn=True)
                clear = gr.Button("New conversation", variant="secondary", size="sm")
            with gr.Column(scale=2):
                sources = gr.Markdown(EMPTY_SOURCES, elem_id="sources")
        # As many answers at once as the model serves (Gradio's default is one); the rest wait in a bounded queue.
        box.submit(respond, [box, chatbot, qa_state], [chatbot, sources, qa_state, box],
                   concurrency_limit=settings.llm.max_parallel)
        clear.click(lambda: ([], EMPTY_SOURCES, [], ""), None, [chatbot, sources, qa_state, box])
    blocks.queue(max_size=max(1, settings.server.max_queued))
    return cast("gr.Blocks", blocks)
