"""Retrieve, pack the context to the model's token budget, answer with numbered citations."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.llms import LLM

    from appliance.settings import EmbeddedLLMSettings, RetrievalSettings

NOT_FOUND = "The documents don't contain an answer to this question."
TOO_LONG = "The question is too long for the model's context window; please shorten it."
NO_DOCUMENTS = "There are no documents to search yet. Ingest some with `appliance ingest PATH`."
PROMPT_OVERHEAD_TOKENS = 48  # chat template tokens around the system and user messages
_CITATION = re.compile(r"\[(\d{1,2})\]")


@dataclass
class Source:
    number: int
    path: str
    file_name: str
    page: int | None
    page_name: str | None
    section: list[str]
    score: float
    dense_score: float | None
    keyword_score: float | None
    text: str
    doc_id: str = ""

    @property
    def location(self) -> str:
        if self.page is None:
            return self.file_name
        label = "sheet" if self.page_name else "page"
        return f"{self.file_name}, {label} {self.page_name or self.page}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "n": self.number, "path": self.path, "page": self.page, "page_name": self.page_name,
            "section": self.section, "score": round(self.score, 4),
            "dense_score": None if self.dense_score is None else round(self.dense_score, 4),
            "keyword_score": None if self.keyword_score is None else round(self.keyword_score, 4),
            "text": self.text,
        }


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    grounded: bool  # False: nothing relevant was retrieved, the text says so
    cited: list[int] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "grounded": self.grounded,
            "cited": self.cited,
            "sources": [s.to_dict() for s in self.sources],
        }


class RagEngine:
    def __init__(self, retriever_factory: Callable[[list[str] | None, int | None], BaseRetriever],
                 llm: Callable[[], LLM],
                 count_tokens: Callable[[], Callable[[str], int]], settings: RetrievalSettings,
                 llm_settings: EmbeddedLLMSettings) -> None:
        # The LLM is resolved lazily: retrieval (search, eval) never loads the chat model.
        self._retriever_factory = retriever_factory
        self._llm = llm
        self._count_tokens = count_tokens
        self._settings = settings
        self._system_prompt = llm_settings.system_prompt
        self._context_budget = llm_settings.context_budget_tokens

    def retrieve(self, question: str, groups: list[str] | None = None, limit: int | None = None) -> list[Source]:
        """Candidates from the store, best first (`limit` of them; default retrieval.candidates)."""
        nodes = self._retriever_factory(groups, limit).retrieve(question)
        sources = []
        for i, nws in enumerate(nodes, start=1):
            meta = nws.node.metadata
            sources.append(Source(
                number=i, path=str(meta.get("path", "")), file_name=str(meta.get("file_name", "")),
                page=meta.get("page"), page_name=meta.get("page_name"), section=list(meta.get("section") or []),
                score=float(nws.score or 0.0), dense_score=meta.get("dense_score"),
                keyword_score=meta.get("keyword_score"), text=nws.node.get_content(),
                doc_id=str(meta.get("doc_id", "")),
            ))
        return sources

    def search(self, query: str, groups: list[str] | None = None, limit: int | None = None) -> list[Source]:
        """The ranked candidates `ask` answers from; `eval` measures exactly this."""
        return self.retrieve(query, groups, limit)

    def relevant(self, sources: Sequence[Source]) -> list[Source]:
        """Sources similar enough to the question. Fused RRF scores are not calibrated, so the dense
        similarity decides. Only when nothing clears it do keyword (BM25) matches get a bar half as
        high: that finds exact identifiers (part numbers, error codes) that embeddings miss, without
        letting common words drag weak passages in next to good ones."""
        floor = self._settings.min_similarity
        strong = [s for s in sources if s.dense_score is not None and s.dense_score >= floor]
        if strong:
            return strong
        return [s for s in sources
                if s.keyword_score is not None and s.dense_score is not None and s.dense_score >= floor / 2]

    def stream(self, question: str, history: Sequence[tuple[str, str]] = (),
               groups: list[str] | None = None) -> Iterator[str | Answer]:
        """Yield the answer's text as it is generated, then the final Answer."""
        question = " ".join(question.split())
        if not question:
            yield Answer(question, "Please ask a question.", [], grounded=False)
            return
        query = question
        if history and len(question.split()) < 5:  # a short follow-up: carry the previous question
            query = f"{history[-1][0]} {question}"
        retrieved = self.search(query, groups)
        if not retrieved:
            yield NO_DOCUMENTS
            yield Answer(question, NO_DOCUMENTS, [], grounded=False)
            return
        relevant = self.relevant(retrieved)
        if not relevant:
            yield NOT_FOUND
            closest = [replace(s, number=i) for i, s in enumerate(retrieved[:3], start=1)]
            yield Answer(question, NOT_FOUND, closest, grounded=False)
            return
        packed = self._pack(question, relevant)
        if not packed:  # the question alone fills the model's context
            yield TOO_LONG
            yield Answer(question, TOO_LONG, relevant[:3], grounded=False)
            return
        from llama_index.core.llms import ChatMessage, MessageRole

        context = "\n\n".join(f"[{s.number}] {s.text}" for s in packed)
        messages = [
            ChatMessage(role=MessageRole.SYSTEM, content=self._system_prompt),
            ChatMessage(role=MessageRole.USER, content=f"Context:\n{context}\n\nQuestion: {question}"),
        ]
        text = ""
        for chunk in self._llm().stream_chat(messages):
            delta = chunk.delta or ""
            text += delta
            if delta:
                yield delta
        cited = sorted({int(n) for n in _CITATION.findall(text) if 1 <= int(n) <= len(packed)})
        yield Answer(question, text.strip(), packed, grounded=True, cited=cited)

    def ask(self, question: str, groups: list[str] | None = None) -> Answer:
        final: Answer | None = None
        for event in self.stream(question, groups=groups):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    def _pack(self, question: str, sources: list[Source]) -> list[Source]:
        """Best sources first, as many as fit the model's context minus the answer's reserve."""
        llm = self._llm()
        count = self._count_tokens()
        meta = llm.metadata
        budget = (meta.context_window - meta.num_output - PROMPT_OVERHEAD_TOKENS
                  - count(self._system_prompt) - count(question))
        if self._context_budget is not None:
            budget = min(budget, self._context_budget)
        packed: list[Source] = []
        for source in sources[: self._settings.top_k]:
            header = f"[{len(packed) + 1}] "
            need = count(header + source.text) + 2
            if need > budget:
                if budget > 48:  # cut the passage to what fits rather than drop it
                    keep = int(len(source.text) * (budget - 8) / need)
                    packed.append(replace(source, number=len(packed) + 1, text=source.text[:keep]))
                break
            packed.append(replace(source, number=len(packed) + 1))
            budget -= need
        return packed

