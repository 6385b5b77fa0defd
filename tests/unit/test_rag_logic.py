"""Packing, thresholds and citation checks of the RAG engine, with test doubles for retriever and model.

The real retriever and model are exercised in tests/e2e; here only the engine's own logic is under test.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse, LLMMetadata
from llama_index.core.schema import NodeWithScore, TextNode

from appliance.rag import NOT_FOUND, Answer, RagEngine, Source, merge_neighbours
from appliance.settings import EmbeddedLLMSettings, RetrievalSettings


class ScriptedRetriever:
    def __init__(self, hits: list[tuple[str, float]]) -> None:
        self.hits = hits
        self.groups_seen: list[list[str] | None] = []

    def retrieve(self, question: str) -> list[NodeWithScore]:
        return [
            NodeWithScore(node=TextNode(text=text, metadata={"path": f"/d/{i}.txt", "file_name": f"{i}.txt",
                                                             "page": i, "dense_score": dense, "doc_id": str(i)}),
                          score=1.0 / (i + 1))
            for i, (text, dense) in enumerate(self.hits)
        ]


class ScriptedLLM:
    """Replies with a fixed text, in word-sized deltas; counts one token per word."""

    def __init__(self, reply: str, context_window: int = 400, num_output: int = 50) -> None:
        self.reply = reply
        self.prompts: list[Sequence[ChatMessage]] = []
        self.metadata = LLMMetadata(context_window=context_window, num_output=num_output)

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[ChatResponse]:
        self.prompts.append(messages)
        for word in self.reply.split(" "):
            yield ChatResponse(message=ChatMessage(role="assistant", content=word), delta=word + " ")


def engine(hits: list[tuple[str, float]], llm: ScriptedLLM, budget: int | None = None, top_k: int = 4,
           labels: str = "full") -> Any:
    retriever = ScriptedRetriever(hits)
    return RagEngine(
        retriever_factory=lambda groups, limit, scope: retriever.groups_seen.append(groups) or retriever,  # type: ignore[func-returns-value]
        llm=lambda: llm,  # type: ignore[arg-type, return-value]
        count_tokens=lambda: (lambda text: len(text.split())),
        settings=RetrievalSettings(top_k=top_k, min_similarity=0.3),
        llm_settings=EmbeddedLLMSettings(context_budget_tokens=budget, passage_labels=labels),
    ), retriever


def test_below_threshold_answers_not_found_and_never_calls_the_model() -> None:
    llm = ScriptedLLM("should not be said")
    rag, _ = engine([("unrelated passage", 0.1), ("another", 0.2)], llm)
    answer = rag.ask("anything?")
    assert answer.text == NOT_FOUND
    assert not answer.grounded
    assert [s.text for s in answer.sources] == ["unrelated passage", "another"]
    assert llm.prompts == []


def test_packing_keeps_the_best_first_within_the_budget() -> None:
    passages = [(" ".join([f"w{i}"] * 30), 0.9 - i * 0.1) for i in range(4)]
    llm = ScriptedLLM("fine [1]")
    rag, _ = engine(passages, llm, budget=80)
    answer = rag.ask("question here")
    # 30 words + a 4-word label ("[1] 0.txt — page 0") + 2 per passage: two fit whole, nothing beyond
    assert [s.number for s in answer.sources] == [1, 2]
    assert answer.sources[0].text.startswith("w0")
    prompt = llm.prompts[0][-1].content or ""
    assert "[1] 0.txt — page 0\nw0" in prompt
    assert "w3" not in prompt


def test_bare_number_labels_for_a_small_model() -> None:
    llm = ScriptedLLM("fine [1]")
    rag, _ = engine([(" ".join(["w0"] * 30), 0.9)], llm, labels="number")
    rag.ask("question here")
    prompt = llm.prompts[0][-1].content or ""
    assert "[1] w0 w0" in prompt
    assert "page" not in prompt


def test_a_passage_longer_than_the_budget_is_cut_not_dropped() -> None:
    llm = ScriptedLLM("ok")
    rag, _ = engine([(" ".join(["long"] * 500), 0.8)], llm, budget=100)
    answer = rag.ask("q")
    assert len(answer.sources) == 1
    assert 0 < len(answer.sources[0].text.split()) < 100


def test_citations_outside_the_given_sources_are_not_reported() -> None:
    llm = ScriptedLLM("see [1] and [7]")
    rag, _ = engine([("a relevant passage", 0.8)], llm)
    answer = rag.ask("q")
    assert answer.cited == [1]
    assert "[7]" not in answer.text  # an invented citation is not shown as if it were a source
    assert "[1]" in answer.text


def test_stream_yields_deltas_then_answer_and_passes_groups_to_retrieval() -> None:
    llm = ScriptedLLM("twenty thousand bottles")
    rag, retriever = engine([("20,000 bottles of water", 0.7)], llm)
    events = list(rag.stream("how many bottles?", groups=["hr"]))
    assert [e for e in events if isinstance(e, str)] == ["twenty ", "thousand ", "bottles "]
    final = events[-1]
    assert isinstance(final, Answer)
    assert final.text == "twenty thousand bottles"
    assert retriever.groups_seen == [["hr"]]


def test_short_follow_up_carries_the_previous_question() -> None:
    llm = ScriptedLLM("ok")
    seen: list[str] = []
    retriever = ScriptedRetriever([("passage", 0.9)])
    original = retriever.retrieve
    retriever.retrieve = lambda q: seen.append(q) or original(q)  # type: ignore[method-assign, func-returns-value]
    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(), EmbeddedLLMSettings())
    list(rag.stream("and in 2024?", history=[("What was the revenue in 2023?", "...")]))
    assert seen == ["What was the revenue in 2023? and in 2024?"]


def test_a_keyword_match_lowers_the_similarity_bar_by_half() -> None:
    llm = ScriptedLLM("ZX-4471 means power loss [1]")
    retriever = ScriptedRetriever([])
    nodes = [
        NodeWithScore(node=TextNode(text="Error ZX-4471: badge reader lost power", metadata={
            "path": "/d/a.txt", "file_name": "a.txt", "dense_score": 0.2, "keyword_score": 3.1}), score=0.5),
        NodeWithScore(node=TextNode(text="unrelated, no keyword", metadata={
            "path": "/d/b.txt", "file_name": "b.txt", "dense_score": 0.2, "keyword_score": None}), score=0.4),
    ]
    retriever.retrieve = lambda q: nodes  # type: ignore[method-assign]
    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(min_similarity=0.3), EmbeddedLLMSettings())
    answer = rag.ask("ZX-4471")
    assert answer.grounded
    assert [s.file_name for s in answer.sources] == ["a.txt"]
    # The same keyword match without the identifier in the question is not enough.
    assert not rag.ask("what does the badge reader do").grounded
    # Found by BM25 alone (outside the dense candidates, so no dense score): still rescued.
    nodes[0].node.metadata["dense_score"] = None
    assert [s.file_name for s in rag.ask("ZX-4471").sources] == ["a.txt"]


def test_identifiers_are_codes_not_words_or_short_numbers() -> None:
    from appliance.rag import identifiers

    assert identifiers("What does error ZX-4471 mean, and E12?") == {"zx-4471", "e12"}
    assert identifiers("Order 1234567 (PO-2024-118).") == {"1234567", "po-2024-118"}
    assert identifiers("How many days of leave in 2023?") == set()


def test_a_question_that_fills_the_context_is_refused_not_sent() -> None:
    from appliance.rag import TOO_LONG

    llm = ScriptedLLM("never", context_window=200, num_output=50)
    rag, _ = engine([("a relevant passage", 0.9)], llm)
    answer = rag.ask("word " * 150)
    assert answer.text == TOO_LONG
    assert not answer.grounded
    assert llm.prompts == []


def test_weak_keyword_matches_do_not_join_strong_passages() -> None:
    llm = ScriptedLLM("ok")
    retriever = ScriptedRetriever([])
    nodes = [
        NodeWithScore(node=TextNode(text="family day: face painting", metadata={
            "file_name": "a.eml", "dense_score": 0.6, "keyword_score": 9.0}), score=0.5),
        NodeWithScore(node=TextNode(text="a common word: day", metadata={
            "file_name": "b.txt", "dense_score": 0.15, "keyword_score": 4.0}), score=0.4),
    ]
    retriever.retrieve = lambda q: nodes  # type: ignore[method-assign]
    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(min_similarity=0.25), EmbeddedLLMSettings())
    assert [s.file_name for s in rag.ask("what happens on family day?").sources] == ["a.eml"]


class ScriptedReranker:
    def __init__(self, scores: list[float] | None) -> None:
        self.scores = scores
        self.seen: list[str] = []

    def close(self) -> None:
        pass

    def score(self, query: str, texts: list[str]) -> list[float]:
        from appliance.backends.common import BackendUnavailable

        self.seen = texts
        if self.scores is None:
            raise BackendUnavailable("rerank endpoint down")
        return self.scores[: len(texts)]


def _reranked(scores: list[float] | None, top_n: int = 2) -> Any:
    retriever = ScriptedRetriever([("first", 0.9), ("second", 0.8), ("third", 0.7)])
    return RagEngine(lambda g, n, s: retriever, lambda: ScriptedLLM("x"), lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                     RetrievalSettings(), EmbeddedLLMSettings(), reranker=ScriptedReranker(scores), rerank_top_n=top_n)


def test_the_reranker_reorders_the_head_and_leaves_the_tail() -> None:
    rag = _reranked([0.1, 0.9])
    got = rag.search("q")
    assert [s.text for s in got] == ["second", "first", "third"]
    assert [s.number for s in got] == [1, 2, 3]
    assert got[0].rerank_score == 0.9
    assert got[2].rerank_score is None


def test_a_failing_reranker_keeps_the_fused_order_unless_strict() -> None:
    import pytest

    from appliance.backends.common import BackendUnavailable

    rag = _reranked(None)
    assert [s.text for s in rag.search("q")] == ["first", "second", "third"]
    with pytest.raises(BackendUnavailable):
        rag.search("q", strict=True)


def _chunk(doc: str, index: int, text: str, page: int | None = 1, section: tuple[str, ...] = ()) -> Source:
    return Source(number=0, path=f"/d/{doc}", file_name=doc, page=page, page_name=None, section=list(section),
                  score=0.5, dense_score=0.5, keyword_score=None, text=text, doc_id=doc, chunk_index=index)


def test_neighbouring_chunks_merge_in_reading_order_without_the_overlap() -> None:
    ranked = [
        _chunk("a", 3, "the pump must be primed. Then open valve B slowly."),
        _chunk("b", 0, "unrelated"),
        _chunk("a", 2, "Close valve A. Before starting, the pump must be primed."),
        _chunk("a", 7, "far away in the same document"),
        _chunk("a", 4, "next page", page=2),
    ]
    merged = merge_neighbours(ranked)
    assert [m.number for m in merged] == [1, 2, 3, 4]
    assert merged[0].text == "Close valve A. Before starting, the pump must be primed. Then open valve B slowly."
    assert merged[0].chunks == 2
    assert merged[0].chunk_index == 2
    assert [m.text for m in merged[1:]] == ["unrelated", "far away in the same document", "next page"]


def test_chunks_under_different_headings_stay_apart() -> None:
    merged = merge_neighbours([_chunk("a", 1, "x", section=("Intro",)), _chunk("a", 2, "y", section=("Setup",))])
    assert len(merged) == 2


def test_a_document_that_fits_is_offered_whole_and_used_when_asked() -> None:
    whole = [_chunk("0", i, f"part {i} of the manual") for i in range(3)]
    llm = ScriptedLLM("answer [1]", context_window=400)
    retriever = ScriptedRetriever([("part 1 of the manual", 0.9)])
    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(min_similarity=0.3), EmbeddedLLMSettings(context_budget_tokens=None),
                    document_chunks=lambda doc_id, limit, groups: whole[:limit] if doc_id == "0" else [])
    first = rag.ask("what is in the manual?")
    assert first.whole_document == "/d/0.txt"
    assert len(first.sources) == 1
    full = rag.ask("what is in the manual?", whole_document=True)
    assert full.whole_document is None
    assert [s.text for s in full.sources] == ["part 0 of the manual\npart 1 of the manual\npart 2 of the manual"]
    small = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                      RetrievalSettings(min_similarity=0.3), EmbeddedLLMSettings(context_budget_tokens=64),
                      document_chunks=lambda doc_id, limit, groups: (whole * 10)[:limit])
    assert small.ask("what is in the manual?").whole_document is None  # too long for the budget


class CondensingLLM(ScriptedLLM):
    def chat(self, messages: Sequence[ChatMessage]) -> ChatResponse:
        self.prompts.append(messages)
        return ChatResponse(message=ChatMessage(role="assistant", content=self.reply))


def test_llm_condensing_rewrites_a_follow_up_and_falls_back_when_the_reply_is_useless() -> None:
    history = [("What was the revenue of ACME in 2023?", "12 million [1]")]
    settings = RetrievalSettings(condense="llm")

    def rag(reply: str) -> Any:
        llm = CondensingLLM(reply)
        return RagEngine(lambda g, n, s: None, lambda: llm, lambda: len, settings, EmbeddedLLMSettings()), llm  # type: ignore[arg-type, return-value]

    good, llm = rag('Standalone question: "What was the revenue of ACME in 2022?"')
    assert good.condense("and the year before?", history) == "What was the revenue of ACME in 2022?"
    assert "ACME in 2023" in (llm.prompts[0][-1].content or "")
    empty, _ = rag("   ")
    appended = "What was the revenue of ACME in 2023? and the year before?"
    assert empty.condense("and the year before?", history) == appended
    rambling, _ = rag("word " * 200)
    assert rambling.condense("and 2021?", history).endswith("and 2021?")
    assert good.condense("first question", []) == "first question"


def test_a_merged_passage_too_long_for_the_budget_falls_back_to_its_best_chunk() -> None:
    llm = ScriptedLLM("ok")
    hits = [_chunk("a", 5, "best " * 40), _chunk("a", 4, "before " * 40)]
    retriever = ScriptedRetriever([])
    from llama_index.core.schema import NodeWithScore, TextNode

    retriever.retrieve = lambda q: [  # type: ignore[method-assign]
        NodeWithScore(node=TextNode(text=h.text, metadata={"path": h.path, "file_name": h.file_name, "page": 1,
                                                           "doc_id": "a", "chunk_index": h.chunk_index,
                                                           "dense_score": 0.9}), score=0.5) for h in hits]
    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(min_similarity=0.3), EmbeddedLLMSettings(context_budget_tokens=64))
    answer = rag.ask("q")
    assert answer.sources[0].text.startswith("best")
    assert "before" not in answer.sources[0].text


def test_a_question_longer_than_the_context_never_asks_the_store_for_a_negative_count() -> None:
    """Issue 17: a long question left a negative budget, and the whole-document offer asked Qdrant for
    a negative number of chunks (OverflowError, a 500). Qdrant refuses a negative limit; so does this double."""
    def chunks(doc_id: str, limit: int, groups: Any) -> list[Source]:
        if limit < 0:
            raise OverflowError("can't convert negative int to unsigned")
        return [_chunk("0", 0, "part of the manual")]

    retriever = ScriptedRetriever([("part of the manual", 0.9)])
    llm = ScriptedLLM("answer [1]", context_window=400)
    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(min_similarity=0.3, max_question_chars=100_000), EmbeddedLLMSettings(),
                    document_chunks=chunks)
    answer = rag.ask("manual " * 2000)
    assert not answer.grounded
    assert "too long" in answer.text


def test_questions_over_the_bound_are_refused_and_lone_surrogates_cleaned() -> None:
    import pytest

    from appliance.rag import QuestionTooLong, checked_question

    with pytest.raises(QuestionTooLong, match="max_question_chars"):
        checked_question("x" * 4001, 4000)
    assert checked_question("  what\ud800 is   it? ", 4000) == "what\ufffd is it?"
