"""Group parsed Elements into chunks measured in tokens of the embedding model.

A chunk never crosses a page or a heading boundary, so its citation (page, section) is exact.
Tables stay whole when they fit; larger ones are cut between rows, each piece repeating the
header row. Text longer than the budget is split by llama-index's SentenceSplitter.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from itertools import groupby

from ingest.parse import Element

TokenCount = Callable[[str], int]


@dataclass(frozen=True)
class Chunk:
    text: str
    index: int
    page: int | None
    page_name: str | None
    section: tuple[str, ...]
    kinds: tuple[str, ...]


class Chunker:
    def __init__(self, count_tokens: TokenCount, tokenize: Callable[[str], Sequence[object]],
                 chunk_tokens: int, overlap_tokens: int) -> None:
        from llama_index.core.node_parser import SentenceSplitter

        self._count = count_tokens
        self._budget = chunk_tokens
        self._splitter = SentenceSplitter(
            chunk_size=chunk_tokens,
            chunk_overlap=min(overlap_tokens, chunk_tokens // 4),
            tokenizer=tokenize,
            paragraph_separator="\n\n",
        )

    def chunk(self, elements: Iterable[Element]) -> list[Chunk]:
        pieces: list[tuple[str, Element]] = []  # (text, element it came from)
        for el in elements:
            pieces.extend((text, el) for text in self._element_pieces(el))
        chunks: list[Chunk] = []
        for _key, group_iter in groupby(pieces, key=lambda p: (p[1].page, p[1].page_name, p[1].section)):
            group = list(group_iter)
            buf: list[tuple[str, Element]] = []
            used = 0
            for text, el in group:
                n = self._count(text)
                # A table piece is its own chunk, so it is never cut or mixed.
                if buf and (used + n > self._budget or el.kind == "Table" or buf[-1][1].kind == "Table"):
                    chunks.append(self._make(buf, len(chunks)))
                    buf, used = [], 0
                buf.append((text, el))
                used += n + 1
            if buf:
                chunks.append(self._make(buf, len(chunks)))
        return chunks

    def _make(self, buf: list[tuple[str, Element]], index: int) -> Chunk:
        first = buf[0][1]
        kinds = tuple(dict.fromkeys(el.kind for _, el in buf))
        return Chunk(
            text="\n".join(text for text, _ in buf),
            index=index,
            page=first.page,
            page_name=first.page_name,
            section=first.section,
            kinds=kinds,
        )

    def _element_pieces(self, el: Element) -> list[str]:
        if el.kind == "Table":
            return self._table_pieces(el)
        if self._count(el.text) <= self._budget:
            return [el.text]
        return [t for t in self._splitter.split_text(el.text) if t.strip()]

    def _table_pieces(self, el: Element) -> list[str]:
        rows = table_rows(el.table_html) if el.table_html else []
        if not rows:
            if self._count(el.text) <= self._budget:
                return [el.text]
            return [t for t in self._splitter.split_text(el.text) if t.strip()]
        lines = ["| " + " | ".join(cells) + " |" for cells in rows]
        whole = "\n".join(lines)
        if self._count(whole) <= self._budget:
            return [whole]
        header, body = lines[0], lines[1:]
        header_tokens = self._count(header)
        if not body or header_tokens > self._budget // 2:
            # One row (a page laid out in a table cell, common in HTML mail) or a header too large to
            # repeat: its text is split like prose. Before, a single long row made no chunk at all.
            return [t for t in self._splitter.split_text(whole) if t.strip()]
        pieces: list[str] = []
        cur: list[str] = []
        used = header_tokens
        for line in body:
            n = self._count(line) + 1
            if cur and used + n > self._budget:
                pieces.append("\n".join([header, *cur]))
                cur, used = [], header_tokens
            if header_tokens + n > self._budget:  # one huge row: split its text
                pieces.extend(header + "\n" + t for t in self._splitter.split_text(line))
                continue
            cur.append(line)
            used += n
        if cur:
            pieces.append("\n".join([header, *cur]))
        return pieces


def table_rows(html: str) -> list[list[str]]:
    """Rows of cell texts from unstructured's text_as_html."""
    try:
        from lxml import html as lxml_html

        root = lxml_html.fromstring(html)
    except Exception:  # malformed HTML: fall back to the plain text
        return []
    rows = []
    for tr in root.iter("tr"):
        cells = [" ".join(td.text_content().split()) for td in tr if td.tag in ("td", "th")]
        if any(cells):
            rows.append(cells)
    return rows
