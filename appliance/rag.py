"""Retrieve, rerank, pack the context to the model's token budget, answer with checked citations."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Literal

from appliance.answer_check import unsupported_claims
from appliance.backends.common import BackendUnavailable
from ingest.metadata import DocumentMeta

if TYPE_CHECKING:
    from llama_index.core.base.base_retriever import BaseRetriever
    from llama_index.core.llms import LLM, ChatMessage

    from appliance.backends.rerank import Reranker
    from appliance.backends.scope import Scope
    from appliance.settings import ChatModelSettings, RetrievalSettings

log = logging.getLogger(__name__)

NOT_FOUND = "The documents don't contain an answer to this question."
TOO_LONG = "The question is too long for the model's context window; please shorten it."
NO_DOCUMENTS = "There are no documents to search yet. Ingest some with `appliance ingest PATH`."
NOTHING_IN_SCOPE = ("Nothing was found in the chosen scope (its folders, documents, file types and dates, among "
                    "the documents you may read); widen it, or ask without one.")
# The only answers given from no passage.
UNGROUNDED_REPLIES = frozenset({NOT_FOUND, TOO_LONG, NO_DOCUMENTS, NOTHING_IN_SCOPE})
PROMPT_OVERHEAD_TOKENS = 48  # chat template tokens around the system and user messages
_CITATION = re.compile(r"\[(\d{1,3})\]")
CONDENSE_PROMPT = ("Rewrite the last question so that it can be understood without the conversation. "
                   "Reply with the rewritten question only.")


_SURROGATE = re.compile(r"[\ud800-\udfff]")


class QuestionTooLong(ValueError):
    """A question over retrieval.max_question_chars: refused before it is searched, logged or stored."""


def clean_text(text: str) -> str:
    """Client text as UTF-8 can carry it: a lone surrogate (valid JSON, invalid Unicode) becomes U+FFFD,
    so it cannot fail the tokenizer, the audit line or SQLite halfway through an answer."""
    return _SURROGATE.sub("\ufffd", text)


def checked_question(question: str, max_chars: int) -> str:
    """The question every channel passes on: whitespace collapsed, text cleaned, and its length bounded."""
    question = " ".join(clean_text(question).split())
    if len(question) > max_chars:
        raise QuestionTooLong(f"the question has {len(question):,} characters; at most {max_chars:,} are accepted "
                              "(retrieval.max_question_chars): shorten it, or ask about one part at a time")
    return question


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
    chunk_index: int | None = None
    rerank_score: float | None = None
    chunks: int = 1  # neighbouring chunks merged into this passage
    best_part: Source | None = field(default=None, repr=False)  # of a merged passage: its best-ranked chunk
    title: str = ""  # the document's (ingest.metadata): its properties', first heading's or file name
    date: str = ""  # the document's date, YYYY-MM-DD: sent, else modified, else created

    def label(self) -> str:
        """How the model is told where a passage comes from, before its text: `[n] title — page 12 —
        section — date`, so a long-context model can tell this quarter's report from last year's."""
        parts = [self.title or self.file_name]
        if self.page is not None:
            parts.append(f"sheet {self.page_name}" if self.page_name else f"page {self.page}")
        if self.section and self.section[-1] != parts[0]:
            parts.append(self.section[-1][:80])
        if self.date:
            parts.append(self.date)
        return f"[{self.number}] " + " — ".join(parts)

    def passage(self, labels: str = "full") -> str:
        """The passage as the model reads it: its full label, then its text; or `[n] text`."""
        return f"{self.label()}\n{self.text}" if labels == "full" else f"[{self.number}] {self.text}"

    @property
    def location(self) -> str:
        if self.page is None:
            return self.file_name
        label = "sheet" if self.page_name else "page"
        return f"{self.file_name}, {label} {self.page_name or self.page}"

    def to_dict(self) -> dict[str, Any]:
        """A source's one record, wherever it goes: `ask --json`, the API's sources, a saved conversation
        (which shows it again after a reload), the page's sources panel."""
        def rounded(x: float | None) -> float | None:
            return None if x is None else round(x, 4)

        return {
            "n": self.number, "doc_id": self.doc_id, "path": self.path, "file_name": self.file_name,
            "page": self.page, "page_name": self.page_name, "section": list(self.section),
            "chunk_index": self.chunk_index, "title": self.title, "date": self.date,
            "score": round(self.score, 4), "similarity": rounded(self.dense_score),
            "keyword_score": rounded(self.keyword_score), "rerank_score": rounded(self.rerank_score),
            "text": self.text,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Source:
        """A source again from its record (a saved conversation's, older ones included)."""
        return cls(number=int(d.get("n") or 0), path=str(d.get("path", "")), file_name=str(d.get("file_name", "")),
                   page=d.get("page"), page_name=d.get("page_name"), section=list(d.get("section") or []),
                   score=float(d.get("score") or 0.0), dense_score=d.get("similarity"),
                   keyword_score=d.get("keyword_score"), text=str(d.get("text", "")), doc_id=str(d.get("doc_id", "")),
                   chunk_index=d.get("chunk_index"), rerank_score=d.get("rerank_score"),
                   title=str(d.get("title") or ""), date=str(d.get("date") or ""))


@dataclass
class Answer:
    question: str
    text: str
    sources: list[Source]
    grounded: bool  # False: nothing relevant was retrieved, the text says so
    cited: list[int] = field(default_factory=list)
    query: str = ""  # what was searched: the question, or its standalone rewrite in a conversation
    whole_document: str | None = None  # a document that fits the context whole: ask again with it
    weak: bool = False  # answered, but no passage reaches retrieval.strong_similarity
    unsupported: list[str] = field(default_factory=list)  # figures its passages don't state (answer_check.py)

    @property
    def match(self) -> Literal["strong", "weak", "none"]:
        """How well the best passage matched: `none` when nothing relevant was found (not grounded)."""
        return "none" if not self.grounded else "weak" if self.weak else "strong"

    def to_dict(self) -> dict[str, Any]:
        return {
            "answer": self.text,
            "grounded": self.grounded,
            "match": self.match,
            "unsupported": self.unsupported,
            "cited": self.cited,
            "query": self.query,
            "whole_document": self.whole_document,
            "sources": [s.to_dict() for s in self.sources],
        }


class RagEngine:
    def __init__(self, retriever_factory: Callable[[list[str] | None, int | None, Scope | None], BaseRetriever],
                 llm: Callable[[], LLM], count_tokens: Callable[[], Callable[[str], int]],
                 settings: RetrievalSettings, llm_settings: ChatModelSettings,
                 reranker: Reranker | None = None, rerank_top_n: int = 30,
                 document_chunks: Callable[[str, int, list[str] | None], list[Source]] | None = None) -> None:
        # The LLM is resolved lazily: retrieval (search, eval) never loads the chat model.
        self._retriever_factory = retriever_factory
        self._llm = llm
        self._count_tokens = count_tokens
        self._settings = settings
        self._system_prompt = llm_settings.system_prompt
        self._context_budget = llm_settings.context_budget_tokens
        self._labels = llm_settings.passage_labels
        self._reranker = reranker
        self._rerank_top_n = rerank_top_n
        self._document_chunks = document_chunks

    def retrieve(self, question: str, groups: list[str] | None = None, limit: int | None = None,
                 scope: Scope | None = None) -> list[Source]:
        """Candidates from the store, best first (`limit` of them; default retrieval.candidates), within the
        scope: it is part of the store query, so `limit` fills from inside it."""
        nodes = self._retriever_factory(groups, limit, scope).retrieve(question)
        return [_source(i, nws.node.metadata, nws.node.get_content(), float(nws.score or 0.0))
                for i, nws in enumerate(nodes, start=1)]

    def search(self, query: str, groups: list[str] | None = None, limit: int | None = None,
               strict: bool = False, scope: Scope | None = None) -> list[Source]:
        """The ranked candidates `ask` answers from; `eval` measures exactly this.

        With a reranker, its scores reorder the best `top_n`; if it fails, the fused order is kept
        and a warning logged (strict: the error is raised, as `eval` wants)."""
        sources = self.retrieve(query, groups, limit, scope)
        if self._reranker is None or not sources:
            return sources
        head, tail = sources[: self._rerank_top_n], sources[self._rerank_top_n :]
        try:
            scores = self._reranker.score(query, [s.text for s in head])
            if len(scores) != len(head):
                raise BackendUnavailable(f"the reranker gave {len(scores)} scores for {len(head)} passages")
        except BackendUnavailable as exc:
            if strict:
                raise
            log.warning("reranker failed, answering from the fused ranking: %s", exc)
            return sources
        ranked = sorted(zip(scores, head, strict=True), key=lambda pair: -pair[0])
        head = [replace(s, rerank_score=score) for score, s in ranked]
        return [replace(s, number=i) for i, s in enumerate(head + tail, start=1)]

    def relevant(self, sources: Sequence[Source], question: str = "") -> list[Source]:
        """Sources similar enough to the question. Fused scores are not calibrated, so the dense
        similarity decides, against a threshold calibrated on the eval sets. Only when nothing clears
        it do passages holding an identifier of the question (part number, error code) that BM25
        found get a bar half as high: embeddings miss those."""
        return relevant_sources(sources, self._settings.min_similarity, question)

    def condense(self, question: str, history: Sequence[tuple[str, str]]) -> str:
        """A follow-up question as a standalone search query.

        `llm`: the chat model rewrites it from the conversation (what larger models do well);
        `append`: a short follow-up carries the previous question (no model call). A rewrite that
        comes back empty or rambling falls back to `append`."""
        mode = self._settings.condense
        if not history or mode == "off":
            return question
        appended = f"{history[-1][0]} {question}" if len(question.split()) < 5 else question
        if mode == "append":
            return appended
        from llama_index.core.llms import ChatMessage, MessageRole

        turns = "\n".join(f"Q: {q}\nA: {a[:300]}" for q, a in history[-3:])
        messages = [
            ChatMessage(role=MessageRole.SYSTEM, content=CONDENSE_PROMPT),
            ChatMessage(role=MessageRole.USER, content=f"{turns}\nLast question: {question}"),
        ]
        reply = self._llm().chat(messages).message.content or ""
        rewritten = re.sub(r"^(rewritten|standalone)?\s*question:\s*", "", " ".join(reply.split()), flags=re.I)
        rewritten = rewritten.strip('"')
        if not rewritten or len(rewritten) > 3 * len(appended) + 40:
            return appended
        return rewritten

    def stream(self, question: str, history: Sequence[tuple[str, str]] = (),
               groups: list[str] | None = None, whole_document: bool = False,
               max_tokens: int | None = None, scope: Scope | None = None) -> Iterator[str | Answer]:
        """Yield the answer's text as it is generated, then the final Answer.

        whole_document: answer from the whole of the best-matching document, when it fits.
        max_tokens: a shorter answer than the model's max_answer_tokens (never a longer one).
        scope: search only there (appliance.backends.scope); when nothing is there, NOTHING_IN_SCOPE is the
        answer: the search is never widened."""
        question = checked_question(question, self._settings.max_question_chars)
        history = [(clean_text(q)[: self._settings.max_question_chars], clean_text(a)) for q, a in history]
        if not question:
            yield Answer(question, "Please ask a question.", [], grounded=False)
            return
        query = self.condense(question, history)
        retrieved = self.search(query, groups, scope=scope)
        if not retrieved:
            empty = NOTHING_IN_SCOPE if scope else NO_DOCUMENTS
            yield empty
            yield Answer(question, empty, [], grounded=False, query=query)
            return
        relevant = self.relevant(retrieved, query)
        if not relevant:
            yield NOT_FOUND
            closest = [replace(s, number=i) for i, s in enumerate(retrieved[:3], start=1)]
            yield Answer(question, NOT_FOUND, closest, grounded=False, query=query)
            return
        budget = self._budget(question)
        # Asked for the whole document: it is fetched now. Otherwise whether it fits (and is offered) is
        # looked up after the answer, so the model starts the moment the passages are packed.
        offer = self._whole_document(relevant[0], budget, groups) if whole_document else None
        if offer is not None:
            packed = self._pack(offer, budget)
        else:
            packed = self._pack(merge_neighbours(relevant[: self._settings.top_k]), budget)
        if not packed:  # the question alone fills the model's context
            yield TOO_LONG
            yield Answer(question, TOO_LONG, relevant[:3], grounded=False, query=query)
            return
        messages = answer_prompt(self._system_prompt, packed, question, self._labels)
        text = ""
        limit = {"max_tokens": min(max_tokens, self._llm().metadata.num_output)} if max_tokens else {}
        for chunk in self._llm().stream_chat(messages, **limit):
            delta = chunk.delta or ""
            text += delta
            if delta:
                yield delta
        text, cited = check_citations(text, len(packed))
        text = text.strip()
        fits = not whole_document and self._whole_document(relevant[0], budget, groups) is not None
        offered = relevant[0].path if fits else None
        yield Answer(question, text, packed, grounded=True, cited=cited, query=query, whole_document=offered,
                     weak=weak_match(relevant, self._settings.strong_similarity),
                     unsupported=unsupported_claims(text, packed))

    def ask(self, question: str, groups: list[str] | None = None, whole_document: bool = False,
            scope: Scope | None = None) -> Answer:
        final: Answer | None = None
        for event in self.stream(question, groups=groups, whole_document=whole_document, scope=scope):
            if isinstance(event, Answer):
                final = event
        assert final is not None
        return final

    def _budget(self, question: str) -> int:
        """Tokens left for passages: the context window minus the answer's reserve, the prompt and the
        question, all counted with the chat model's own tokenizer."""
        meta = self._llm().metadata
        count = self._count_tokens()
        budget = (meta.context_window - meta.num_output - PROMPT_OVERHEAD_TOKENS
                  - count(self._system_prompt) - count(question))
        if self._context_budget is not None:
            budget = min(budget, self._context_budget)
        return budget

    def _whole_document(self, best: Source, budget: int, groups: list[str] | None) -> list[Source] | None:
        """The best source's whole document, as passages in reading order, if it fits the budget."""
        if self._document_chunks is None or not best.doc_id:
            return None
        most = budget // 8 + 1  # no chunk is shorter than a few tokens: more than this cannot fit
        if most < 2:
            return None
        chunks = self._document_chunks(best.doc_id, most + 1, groups)  # the reader's chunks only
        if len(chunks) <= 1 or len(chunks) > most:
            return None  # one chunk: the passage already is the whole document; too many: too long
        count = self._count_tokens()
        passages = merge_neighbours(chunks)
        if sum(count(p.passage(self._labels)) + 2 for p in passages) > budget:  # as _pack counts them
            return None
        return passages

    def _pack(self, sources: list[Source], budget: int) -> list[Source]:
        """Best sources first, as many as fit the budget; the last one is cut rather than dropped."""
        count = self._count_tokens()
        packed: list[Source] = []
        for source in sources:
            need = count(replace(source, number=len(packed) + 1).passage(self._labels)) + 2
            if need > budget and source.best_part is not None:
                # A merged passage that does not fit: its best chunk, not the start of the merge.
                source = replace(source.best_part, number=source.number)
                need = count(replace(source, number=len(packed) + 1).passage(self._labels)) + 2
            if need > budget:
                if budget > 48:  # cut the passage to what fits rather than drop it
                    keep = int(len(source.text) * (budget - 8) / need)
                    packed.append(replace(source, number=len(packed) + 1, text=source.text[:keep]))
                break
            packed.append(replace(source, number=len(packed) + 1))
            budget -= need
        return packed


def answer_prompt(system_prompt: str, packed: Sequence[Source], question: str,
                  labels: str = "full") -> list[ChatMessage]:
    """The chat messages of an answer. What every question shares comes first and byte-identical (the
    system prompt, then "Context:"), and what changes least next (the passages, then the question), so a
    model server that keeps the last prompt's KV cache (vLLM's prefix caching, llama.cpp's server) reads only
    the rest. The embedded backend reads every prompt whole, for answers that do not depend on the question
    before (LlamaCppLLM)."""
    from llama_index.core.llms import ChatMessage, MessageRole

    context = "\n\n".join(s.passage(labels) for s in packed)
    return [
        ChatMessage(role=MessageRole.SYSTEM, content=system_prompt),
        ChatMessage(role=MessageRole.USER, content=f"Context:\n{context}\n\nQuestion: {question}"),
    ]


def identifiers(text: str) -> set[str]:
    """Identifier-like words of a question: part numbers, error codes, ticket ids (a digit, and a letter
    or five characters), e.g. ZX-4471, E1234, PO-2024-118, 1234567."""
    return {w for w in _words(text)
            if len(w) >= 3 and any(c.isdigit() for c in w) and (any(c.isalpha() for c in w) or len(w) >= 5)}


def _words(text: str) -> set[str]:
    return {w.strip(".,;:!?()[]{}\"'").lower() for w in text.split()}


def relevant_sources(sources: Sequence[Source], floor: float, question: str = "") -> list[Source]:
    """RagEngine.relevant's rule at a given threshold (the grounding benchmark sweeps it)."""
    strong = [s for s in sources if s.dense_score is not None and s.dense_score >= floor]
    if strong:
        return strong
    wanted = identifiers(question)
    if not wanted:
        return []
    # Embeddings blur codes like ZX-4471; a passage that BM25 found and that holds the very identifier
    # asked about is relevant at half the bar, or with no dense score at all (found by BM25 alone).
    # Common words never qualify (measured: they let most off-topic questions through).
    return [s for s in sources
            if s.keyword_score is not None and (s.dense_score is None or s.dense_score >= floor / 2)
            and wanted & _words(s.text)]


def weak_match(relevant: Sequence[Source], strong: float) -> bool:
    """No relevant passage reaches `strong` (retrieval.strong_similarity): the answer is given, marked
    weak. A passage let in by an identifier of the question (below min_similarity) is weak too."""
    return not any(s.dense_score is not None and s.dense_score >= strong for s in relevant)


def _source(number: int, meta: dict[str, Any], text: str, score: float) -> Source:
    index = meta.get("chunk_index")
    return Source(
        number=number, path=str(meta.get("path", "")), file_name=str(meta.get("file_name", "")),
        page=meta.get("page"), page_name=meta.get("page_name"), section=list(meta.get("section") or []),
        score=score, dense_score=meta.get("dense_score"), keyword_score=meta.get("keyword_score"), text=text,
        doc_id=str(meta.get("doc_id", "")), chunk_index=int(index) if index is not None else None,
        title=str(meta.get("title") or ""), date=DocumentMeta.from_payload(meta).date,
    )


def source_from_payload(payload: dict[str, Any]) -> Source:
    meta = dict(payload)
    return _source(0, meta, str(meta.pop("text", "")), 0.0)


def _join(first: str, second: str) -> str:
    """Concatenate neighbouring chunks, dropping the overlap the chunker repeated between them."""
    for size in range(min(len(first), len(second), 600), 15, -1):
        if first.endswith(second[:size]):
            return first + second[size:]
    return f"{first}\n{second}"


def merge_neighbours(sources: Sequence[Source]) -> list[Source]:
    """Merge chunks that follow each other in one document, on one page and under one heading (so the
    citation stays exact) into one passage, placed where its best chunk ranked; numbers follow."""
    groups: list[list[Source]] = []
    for source in sources:
        home = None
        if source.chunk_index is not None and source.doc_id:
            for group in groups:
                g0 = group[0]
                if (g0.doc_id == source.doc_id and g0.page == source.page and g0.page_name == source.page_name
                        and g0.section == source.section
                        and any(abs((g.chunk_index or 0) - source.chunk_index) == 1 for g in group)):
                    home = group
                    break
        if home is None:
            groups.append([source])
        else:
            home.append(source)
    merged = []
    for number, group in enumerate(groups, start=1):
        ordered = sorted(group, key=lambda s: s.chunk_index or 0)
        text = ordered[0].text
        for nxt in ordered[1:]:
            text = _join(text, nxt.text)
        merged.append(replace(group[0], number=number, text=text, chunk_index=ordered[0].chunk_index,
                              chunks=len(group), best_part=group[0] if len(group) > 1 else None))
    return merged


def check_citations(text: str, given: int) -> tuple[str, list[int]]:
    """Keep only citations of passages the model was given; markers it invented are removed."""
    cited = sorted({int(n) for n in _CITATION.findall(text) if 1 <= int(n) <= given})
    cleaned = _CITATION.sub(lambda m: m.group(0) if 1 <= int(m.group(1)) <= given else "", text)
    return cleaned, cited
