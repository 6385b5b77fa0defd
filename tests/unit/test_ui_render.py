"""What the chat page renders from untrusted text (documents, model output), and the library's table."""

from __future__ import annotations

import pytest

from appliance.rag import NOT_FOUND, Answer, Source
from ingest.manifest import FileRecord
from ui.answer_text import UNGROUNDED, UNSUPPORTED_NOTE, WEAK_NOTE, answer_markdown, inert, link_citations
from ui.chat import message_text
from ui.library import document_rows
from ui.sources import choices, location


def _source(text: str, name: str = "memo.pdf", number: int = 1) -> Source:
    return Source(number=number, path=f"/share/{name}", file_name=name, page=2, page_name=None, section=["Intro"],
                  score=0.5, dense_score=0.61, keyword_score=None, text=text, doc_id="d1", chunk_index=3)


def test_model_output_is_made_inert() -> None:
    assert inert("![t](http://h/x) <img src=y>") == "!&#91;t](http://h/x) &lt;img src=y&gt;"


def test_citations_link_only_to_sources_the_answer_has() -> None:
    out = link_citations(inert("Leave is 25 days [1], see [7] <b>"), 4, {1, 2})
    assert "[[1]](#cite-4-1)" in out
    assert "[7]" in out
    assert "#cite-4-7" not in out
    assert "<b>" not in out


def test_grounded_answer_lists_its_sources_as_links() -> None:
    answer = Answer("q", "It is 25 days [2].", [_source("t"), _source("u", "hr.docx", 2)], grounded=True, cited=[2])
    out = answer_markdown(answer, 1)
    assert '[[2]](#cite-1-2 "hr.docx, page 2: u")' in out
    assert '[[1]](#cite-1-1 "memo.pdf, page 2: t") memo.pdf, page 2' in out
    assert UNGROUNDED not in out


def test_answer_from_no_document_says_so() -> None:
    out = answer_markdown(Answer("q", NOT_FOUND, [_source("closest")], grounded=False), 1)
    assert out.startswith(UNGROUNDED)
    assert "closest passages" in out
    assert "#cite-" not in out


def test_a_weak_match_and_unsupported_figures_are_said_on_the_answer() -> None:
    text = "In 2012 sales were $12 million [1] and <b>12</b> stores opened [2]."
    answer = Answer("q", text, [_source("t"), _source("u", "hr.docx", 2)], grounded=True, cited=[1, 2],
                    weak=True, unsupported=["$12 million", "12"])
    out = answer_markdown(answer, 3)
    assert out.startswith(WEAK_NOTE)
    assert UNSUPPORTED_NOTE in out
    assert "2012" in out
    assert "<u class='unsupported'" not in out.split("2012")[0]
    assert out.count("<u class='unsupported'") == 2  # $12 million, and the stores' 12
    assert "&lt;b&gt;<u class='unsupported'" in out  # the model's markup stays inert
    assert "[[1]](#cite-3-1 " in out
    assert "[[2]](#cite-3-2 " in out
    strong = answer_markdown(Answer("q", "25 days [1].", [_source("t")], grounded=True, cited=[1]), 3)
    assert WEAK_NOTE not in strong
    assert UNSUPPORTED_NOTE not in strong


def test_source_names_are_escaped_in_the_panel_choices() -> None:
    record = _source("passage", name="<b>x</b>.pdf").to_dict()
    assert (record["text"], record["doc_id"], record["chunk_index"]) == ("passage", "d1", 3)
    assert location(record) == "<b>x</b>.pdf, page 2"  # a Radio label is text, never HTML
    assert choices([record]) == [("[1] <b>x</b>.pdf, page 2", "1")]


def test_library_rows_filter_by_name_and_status() -> None:
    records = [FileRecord("/s/a/Policy.pdf", 1, 1, "x", "ok", pages=3, chunk_ids=["1", "2"], ingested_at=200.0),
               FileRecord("/s/b/broken.docx", 1, 1, "y", "failed", error="corrupt: not a zip file", ingested_at=100.0),
               FileRecord("/s/b/notes.md", 1, 1, "z", "ok", notes=["2 pages skipped"], ingested_at=300.0)]
    rows, paths = document_rows(records)
    assert paths == ["/s/b/notes.md", "/s/a/Policy.pdf", "/s/b/broken.docx"]  # newest first
    assert rows[1][:6] == ["Policy.pdf", "pdf", 3, 2, rows[1][4], "ok"]
    assert rows[0][6] == "2 pages skipped"
    assert [r[7] for r in rows] == ["b", "a", "b"]  # folders relative to the share, not server paths
    assert document_rows(records, "POLICY")[1] == ["/s/a/Policy.pdf"]
    records[0].meta = {"title": "Travel and expenses policy"}
    titled, _ = document_rows(records, "expenses")
    assert titled[0][0] == "Travel and expenses policy · Policy.pdf"  # its own title, then the file
    failed, _ = document_rows(records, status="failed")
    assert [(r[0], r[6]) for r in failed] == [("broken.docx", "corrupt: not a zip file")]


def test_message_text_reads_both_shapes_gradio_hands_back() -> None:
    assert message_text("How many?") == "How many?"
    parts = [{"type": "text", "text": "How "}, {"type": "file", "file": {}}, {"type": "text", "text": "many?"}]
    assert message_text(parts) == "How many?"


def test_a_forged_scope_is_refused_and_narrows_only() -> None:
    from appliance.backends.scope import InvalidScope
    from ui.scope_picker import scope_of, values_of

    assert scope_of([]) is None
    scope = scope_of(["folder:/srv/share/hr", "doc:0123456789abcdef", "type:PDF"])
    assert scope is not None
    assert values_of(scope.to_dict()) == ["folder:/srv/share/hr", "doc:0123456789abcdef", "type:pdf"]
    for forged in (["path:/etc/passwd"], ["doc:../../etc"], ["folder:relative/dir"], ["type:"]):
        with pytest.raises(InvalidScope):
            scope_of(forged)


def test_conversations_are_grouped_by_date_and_searched_by_name() -> None:
    import time
    from types import SimpleNamespace

    from appliance.stores.conversations import Conversation
    from ui.chat import conversation_choices

    now = time.mktime((2026, 12, 9, 15, 0, 0, 0, 0, -1))  # a Wednesday afternoon
    kept = [Conversation("c1", "Water delivery", now - 3600, now - 3600),
            Conversation("c2", "Leave policy", now - 3 * 86400, now - 3 * 86400),
            Conversation("c3", "Old water bill", now - 40 * 86400, now - 40 * 86400)]
    services = SimpleNamespace(conversations=SimpleNamespace(list=lambda owner: kept))
    labels = [label for label, _ in conversation_choices(services, "alice", now=now)]  # type: ignore[arg-type]
    assert labels[0].startswith("Today 14:00 · Water delivery")
    assert labels[1].startswith("This week ")
    assert labels[2] == "Older 30 Oct 2026 · Old water bill"
    assert [cid for _, cid in conversation_choices(services, "alice", "WATER", now=now)] == ["c1", "c3"]  # type: ignore[arg-type]


def test_table_passages_render_as_escaped_tables() -> None:
    from ui.sources import body_html

    out = body_html("Q3 sales by region\n| Region | Sales |\n| North <b> | 1,200 |\n| South | 900 |\nTotal follows.")
    assert out.startswith("Q3 sales by region<table class='passage-table'><thead><tr><th>Region</th><th>Sales</th>")
    assert "<td>North &lt;b&gt;</td><td>1,200</td>" in out  # cells escaped
    assert out.endswith("</tbody></table>Total follows.")
    assert body_html("plain  text\nover lines") == "plain text over lines"
    assert body_html("|") == "|"  # not a table row


def test_a_citation_previews_its_passage_on_hover_and_the_preview_stays_inert() -> None:
    hostile = 'Leave is "25 days") <img src=x> \\ [2](http://evil.example) ' + "long " * 100
    out = answer_markdown(Answer("q", "It is 25 days [1].", [_source(hostile)], grounded=True, cited=[1]), 2)
    link = out.split("[[1]](", 1)[1].split(")", 1)[0]
    assert link.startswith('#cite-2-1 "memo.pdf, page 2: Leave is &quot;25 days&quot;&#41; &lt;img src=x&gt;')
    assert link.endswith('…"')  # cut short
    assert "<img" not in out
    assert "(http://evil.example)" not in out  # no second link can open inside the title
