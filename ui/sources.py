"""The sources side panel: a cited passage highlighted in its surrounding text, the page it is on
(rendered on the server for PDFs) and a link to the original file, for readers of the document.

Everything shown is escaped: document text never becomes markup, and the only URLs on the panel
are this server's own routes."""

from __future__ import annotations

import html
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from appliance.usecases import readable_chunks
from ingest.metadata import name_title

if TYPE_CHECKING:
    from appliance.access.auth import Principal
    from appliance.rag import Answer
    from appliance.services import Services

CONTEXT_CHUNKS = 2  # chunks shown before and after the cited one


def answer_sources(answer: Answer) -> list[dict[str, Any]]:
    """What a conversation keeps of an answer's sources (Source.to_dict: enough to show them again)."""
    return [s.to_dict() for s in answer.sources]


def location(src: dict[str, Any]) -> str:
    if src.get("page") is None:
        return str(src.get("file_name", ""))
    label = "sheet" if src.get("page_name") else "page"
    return f"{src.get('file_name', '')}, {label} {src.get('page_name') or src.get('page')}"


def choices(sources: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(f"[{s['n']}] {location(s)}", str(s["n"])) for s in sources]


def _squash(text: str) -> str:
    return " ".join(text.split())


def context_html(services: Services, principal: Principal, src: dict[str, Any]) -> str:
    """The cited passage with the chunks around it on the same page, the passage marked; the chunks
    come from the store filtered by the reader's groups, so nothing unreadable is ever shown."""
    cited = _squash(str(src.get("text", "")))
    doc_id = str(src.get("doc_id") or "")
    chunks = readable_chunks(services, doc_id, principal.reads) if doc_id else []
    texts = [(h.payload.get("page"), _squash(str(h.payload.get("text", "")))) for h in chunks]
    raw = [str(h.payload.get("text", "")) for h in chunks]  # as written: a table's rows on their lines
    index = src.get("chunk_index")
    # The cited chunk, and its neighbours merged into the passage; a short chunk (a heading, "Page 1")
    # found inside the passage elsewhere in the document is not one of them. The model may have been
    # given the chunk cut short (its context budget): the cited text then begins the chunk's.
    cited_at = {i for i, h in enumerate(chunks)
                if index is not None and h.payload.get("chunk_index") == index
                and (texts[i][1] in cited or (cited and texts[i][1].startswith(cited[:200])))}
    inside = [i for i, (_, t) in enumerate(texts) if len(t) >= 40 and t in cited]
    anchor = min(cited_at) if cited_at else (inside[0] if inside else None)
    marked = sorted(cited_at | {i for i in inside if anchor is not None and abs(i - anchor) <= 10})
    if not marked:  # re-ingested since, or no longer readable: the passage as it was shown
        return f"<div class='passage'><mark id=cited-passage>{html.escape(cited)}</mark></div>"
    lo, hi = max(0, marked[0] - CONTEXT_CHUNKS), min(len(texts), marked[-1] + CONTEXT_CHUNKS + 1)
    page = src.get("page")
    parts = []
    for i in range(lo, hi):
        chunk_page = texts[i][0]
        if page is not None and chunk_page != page and i not in marked:
            continue  # the context stays on the cited page
        body = body_html(raw[i])
        first = i == marked[0]
        parts.append(f"<div class='chunk'><mark{' id=cited-passage' if first else ''}>{body}</mark></div>"
                     if i in marked else f"<div class='chunk'>{body}</div>")
    return "<div class='passage'>" + "".join(parts) + "</div>"


def body_html(text: str) -> str:
    """A chunk's text for the panel, escaped: runs of `| a | b |` lines (the chunker writes spreadsheet,
    CSV, HTML and PDF tables so) as an HTML table, the first row its header; other lines as one
    paragraph, as before."""
    out: list[str] = []
    prose: list[str] = []
    rows: list[list[str]] = []

    def flush() -> None:
        if prose:
            out.append(html.escape(_squash(" ".join(prose))))
            prose.clear()
        if rows:
            head, *body = rows
            cells = "".join(f"<th>{html.escape(c)}</th>" for c in head)
            lines = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>" for r in body)
            out.append(f"<table class='passage-table'><thead><tr>{cells}</tr></thead><tbody>{lines}</tbody></table>")
            rows.clear()

    for line in text.splitlines():
        row = line.strip()
        if len(row) > 1 and row.startswith("|") and row.endswith("|"):
            if prose:
                flush()
            rows.append([c.strip() for c in row[1:-1].split(" | ")])
        elif row:
            if rows:
                flush()
            prose.append(row)
    flush()
    return "".join(out)


def match_words(services: Services, principal: Principal, similarity: float) -> str:
    """How well a passage matched the question, in words a reader understands; administrators, who
    set the thresholds, see the number on hover."""
    retrieval = services.settings.retrieval
    word = ("strong match" if similarity >= retrieval.strong_similarity
            else "partial match" if similarity >= retrieval.min_similarity else "weak match")
    if principal.admin:
        return f"<span class='match' title='similarity {similarity:.2f}'>{word}</span>"
    return f"<span class='match'>{word}</span>"


def panel_html(services: Services, principal: Principal, src: dict[str, Any] | None) -> str:
    if not src:
        return ""
    doc_id = quote(str(src.get("doc_id") or ""), safe="")
    name = html.escape(str(src.get("file_name", "")))
    meta = [html.escape(location(src).removeprefix(str(src.get("file_name", ""))).lstrip(", "))]
    if src.get("section"):
        meta.append(html.escape(" › ".join(src["section"])))
    if src.get("date"):
        meta.append(html.escape(str(src["date"])))
    if src.get("similarity") is not None:
        meta.append(match_words(services, principal, float(src["similarity"])))
    title = str(src.get("title") or "")
    titled = f"<br><i class='source-title'>{html.escape(title)}</i>" if title and title != name_title(
        Path(str(src.get("file_name", "")))) else ""
    head = (f"<div class='source-head'><b>[{int(src['n'])}] {name}</b>{titled}<br><small>"
            f"{' · '.join(m for m in meta if m)}</small><br>"
            f"<a href='/v1/documents/{doc_id}/file' download id='source-download'>Download the original</a></div>")
    # The page right under the passage (whose box is kept short for it), not below a long context.
    return head + context_html(services, principal, src) + page_html(src, doc_id, name)


def page_html(src: dict[str, Any], doc_id: str, name: str) -> str:
    """A PDF source's page, rendered on the server with the passage's lines marked, and a link that
    opens it full size (readable on a phone, zoomable)."""
    page, chunk = src.get("page"), src.get("chunk_index")
    if not (str(src.get("path", "")).lower().endswith(".pdf") and isinstance(page, int)):
        return ""
    mark = f"&passage={chunk}" if isinstance(chunk, int) else ""
    url = f"/v1/documents/{doc_id}/pages/{page}.png?"
    return (f"<figure class='source-page'><a href='{url}width=2000{mark}' target='_blank' rel='noopener' "
            f"id='source-page-full' title='Open the page full size'>"
            f"<img id='source-page' alt='page {page} of {name}, the passage marked' src='{url}width=900{mark}'>"
            f"</a><figcaption>Page {page}, the passage marked · "
            f"<a href='{url}width=2000{mark}' target='_blank' rel='noopener'>open full size</a></figcaption></figure>")
