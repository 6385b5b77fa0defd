"""The answer band (retrieval.min_similarity, retrieval.strong_similarity) and the figure check as the
engine applies them: below the band the documents "don't contain an answer", in it the answer is given
with match `weak`, above it `strong`; every answer carries the figures its passages don't state."""

from __future__ import annotations

from typing import Any

import pytest
from llama_index.core.schema import NodeWithScore, TextNode

from appliance.rag import NOT_FOUND, Answer, RagEngine
from appliance.settings import EmbeddedLLMSettings, RetrievalSettings
from tests.fakes import ScriptedLLM

MEMO = "The memo says 20,000 bottles of water were delivered on 3 March 2024."


class OnePassage:
    def __init__(self, dense: float) -> None:
        self.dense = dense

    def retrieve(self, question: str) -> list[NodeWithScore]:
        meta = {"path": "/d/memo.txt", "file_name": "memo.txt", "dense_score": self.dense, "doc_id": "m"}
        return [NodeWithScore(node=TextNode(text=MEMO, metadata=meta), score=1.0)]


def engine(dense: float, reply: str, **retrieval: Any) -> RagEngine:
    llm = ScriptedLLM()
    llm.enqueue(reply)
    settings = RetrievalSettings(**{"min_similarity": 0.35, "strong_similarity": 0.45, **retrieval})
    return RagEngine(lambda groups, limit, scope: OnePassage(dense), lambda: llm,  # type: ignore[arg-type, return-value]
                     lambda: llm.count_tokens, settings, EmbeddedLLMSettings())


@pytest.mark.parametrize(("dense", "grounded", "match"), [
    (0.30, False, "none"), (0.35, True, "weak"), (0.38, True, "weak"), (0.45, True, "strong"), (0.9, True, "strong"),
])
def test_the_best_similarity_decides_refused_weak_or_strong(dense: float, grounded: bool, match: str) -> None:
    answer = engine(dense, "20,000 bottles [1].").ask("How many bottles?")
    assert (answer.grounded, answer.match) == (grounded, match)
    assert answer.to_dict()["match"] == match
    assert answer.to_dict()["grounded"] is grounded  # still a bool for the clients that read it
    if not grounded:
        assert answer.text == NOT_FOUND


def test_a_band_of_no_width_answers_strong_or_not_at_all() -> None:
    answer = engine(0.36, "20,000 bottles [1].", strong_similarity=0.35).ask("How many bottles?")
    assert answer.match == "strong"
    assert engine(0.36, "ok", min_similarity=0.5, strong_similarity=0.45).ask("q").match == "none"


def test_the_answer_carries_the_figures_its_passages_do_not_state_and_keeps_its_text() -> None:
    reply = "The memo says 21,000 bottles were delivered on 3 March 2024 [1]."
    answer = engine(0.7, reply).ask("How many bottles?")
    assert answer.text == reply
    assert answer.unsupported == ["21,000"]
    assert answer.to_dict()["unsupported"] == ["21,000"]
    good = engine(0.7, "20,000 bottles arrived on March 3, 2024 [1].").ask("How many bottles?")
    assert good.unsupported == []


def test_a_refused_answer_has_nothing_to_check() -> None:
    answer = engine(0.1, "never said").ask("How many bottles?")
    assert answer.unsupported == []
    assert answer.match == "none"


def test_the_stream_ends_with_the_checked_answer() -> None:
    events = list(engine(0.4, "About 25,000 bottles.").stream("How many bottles?"))
    final = events[-1]
    assert isinstance(final, Answer)
    assert "".join(e for e in events if isinstance(e, str)).strip() == final.text
    assert (final.match, final.unsupported) == ("weak", ["25,000"])
