"""What makes the first answer token come soon (issue 23): a prompt whose fixed start is identical for every
question (so the model's KV cache keeps it), and nothing between the packed passages and the model call."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

from llama_index.core.base.llms.types import ChatMessage, ChatResponse

from appliance.rag import RagEngine, Source, answer_prompt
from appliance.settings import EmbeddedLLMSettings, RetrievalSettings
from tests.unit.test_rag_logic import ScriptedLLM, ScriptedRetriever


def _source(n: int, text: str) -> Source:
    return Source(number=n, path=f"/d/{n}.txt", file_name=f"{n}.txt", page=None, page_name=None, section=[],
                  score=1.0, dense_score=0.9, keyword_score=None, text=text)


def _rendered(messages: Sequence[ChatMessage]) -> str:
    """ChatML, as the embedded model's template renders the messages."""
    return "".join(f"<|im_start|>{m.role.value}\n{m.content}<|im_end|>\n" for m in messages)


def test_two_questions_share_the_prompt_up_to_their_passages() -> None:
    system = EmbeddedLLMSettings().system_prompt
    one = _rendered(answer_prompt(system, [_source(1, "20,000 bottles of water")], "How many bottles?", "number"))
    two = _rendered(answer_prompt(system, [_source(1, "rustup manages Rust"), _source(2, "cargo builds")],
                                  "Which tool manages Rust?", "number"))
    fixed = f"<|im_start|>system\n{system}<|im_end|>\n<|im_start|>user\nContext:\n[1] "
    assert one.startswith(fixed)
    assert two.startswith(fixed)


def test_the_same_passages_leave_only_the_question_to_read() -> None:
    passages = [_source(1, "rustup manages Rust"), _source(2, "cargo builds")]
    one = _rendered(answer_prompt("Be brief.", passages, "Which tool manages Rust?"))
    two = _rendered(answer_prompt("Be brief.", passages, "How is the code built?"))
    common = one[: next(i for i, (a, b) in enumerate(zip(one, two, strict=False)) if a != b)]
    assert common.endswith("Question: ")


class _RecordingLLM(ScriptedLLM):
    def __init__(self, reply: str, calls: list[str]) -> None:
        super().__init__(reply)
        self.calls = calls

    def stream_chat(self, messages: Sequence[ChatMessage]) -> Iterator[ChatResponse]:
        self.calls.append("model")
        return super().stream_chat(messages)


def test_the_model_starts_before_the_whole_document_is_looked_up() -> None:
    calls: list[str] = []
    llm = _RecordingLLM("answer [1]", calls)
    retriever = ScriptedRetriever([("part 1 of the manual", 0.9)])
    whole = [_source(1, f"part {i} of the manual") for i in range(3)]
    whole = [Source(**{**vars(s), "doc_id": "0", "chunk_index": i}) for i, s in enumerate(whole)]

    def chunks(doc_id: str, limit: int, groups: Any) -> list[Source]:
        calls.append("document")
        return whole[:limit]

    rag = RagEngine(lambda g, n, s: retriever, lambda: llm, lambda: (lambda t: len(t.split())),  # type: ignore[arg-type, return-value]
                    RetrievalSettings(min_similarity=0.3), EmbeddedLLMSettings(context_budget_tokens=None),
                    document_chunks=chunks)
    answer = rag.ask("what is in the manual?")
    assert calls == ["model", "document"]
    assert answer.whole_document == "/d/0.txt"  # still offered, once the answer is written
