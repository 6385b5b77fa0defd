"""Running headers and footers of paged documents: the lines printed at the top or bottom of every page
(a running title, "Page 3 of 40", a confidentiality line, a form number and date).

Embedded with every chunk they cost tokens and pull unrelated chunks of one document together. A line
is running when, with its digits folded ("Page 3" and "Page 4" are one line), it is short, sits among
the first or last EDGE_LINES lines of a page, and does so on at least half the pages of a document of
MIN_PAGES pages or more, or on half its odd or half its even pages (books alternate their running heads:
the Internal Revenue Manual's footers in ../shared/corpus are each on 49% of its 400 pages). The first
page that shows a running line keeps it, as a document's first page is often the only place that names
it; every later copy is dropped and handed back by page, for the chunk's payload (its citation).

Tables are not looked at: a table's rows are its own elements, and a table cut into pieces repeats its
header row in each piece on purpose (ingest.chunk). A header row of a table the table finder missed,
repeated at the top of half the pages, is dropped like any running line (still in the payload).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import TypeVar

EDGE_LINES = 6  # the IRS manual's footer is 4 lines, and pdfium sometimes reads it before the body
MAX_CHARS = 100  # longer lines are text, not page furniture
MIN_PAGES = 3  # two pages that share lines are as likely a duplicated page (fake-memo-with-duplicate-page.pdf)
MIN_SHARE = 0.5

_DIGITS = re.compile(r"\d+(?:[.,:/-]\d+)*")  # 12, 2.3.59.8, 12-12-2022: one number each
_ROMAN = re.compile(r"^[ivxlcdm]+$")  # a page numbered in roman numerals (a preface's "iv")

Piece = TypeVar("Piece")


def line_key(line: str) -> str:
    """What two copies of a running line share: case and spacing folded, every number written `#`."""
    folded = " ".join(line.casefold().split())
    return "#" if _ROMAN.match(folded) else _DIGITS.sub("#", folded)


def _edge(lines: list[str]) -> list[int]:
    """Positions of the lines that may be page furniture: the first and last EDGE_LINES."""
    n = len(lines)
    return sorted({*range(min(EDGE_LINES, n)), *range(max(0, n - EDGE_LINES), n)})


def running_keys(pages: Sequence[list[str]]) -> set[str]:
    """The keys of the running lines of a document, given each page's lines (stripped, none empty)."""
    with_text = [i for i, lines in enumerate(pages) if lines]
    if len(with_text) < MIN_PAGES:
        return set()
    seen: dict[str, set[int]] = {}
    for i in with_text:
        lines = pages[i]
        for pos in _edge(lines):
            if len(lines[pos]) <= MAX_CHARS:
                seen.setdefault(line_key(lines[pos]), set()).add(i)
    odd = [i for i in with_text if i % 2 == 0]  # page 1, 3, 5 ...
    even = [i for i in with_text if i % 2 == 1]
    keys = set()
    for key, where in seen.items():
        if len(where) < MIN_PAGES:
            continue
        if len(where) >= MIN_SHARE * len(with_text) or (len(with_text) >= 2 * MIN_PAGES and any(
                len(side) >= MIN_PAGES and len(where & set(side)) >= MIN_SHARE * len(side) for side in (odd, even))):
            keys.add(key)
    return keys


def drop_running_lines(pages: Sequence[Sequence[Piece | str]]) -> tuple[list[list[Piece | str]], dict[int, list[str]]]:
    """Each page's pieces with the running lines dropped from its text pieces (str; other pieces, tables,
    pass untouched), and the lines dropped, by page index. A text piece left empty is left out."""
    split = [[(p, _lines(p)) if isinstance(p, str) else (p, None) for p in page] for page in pages]
    page_lines = [[line for _, lines in page if lines is not None for line in lines] for page in split]
    keys = running_keys(page_lines)
    if not keys:
        return [list(page) for page in pages], {}
    out: list[list[Piece | str]] = []
    dropped: dict[int, list[str]] = {}
    kept_once: set[str] = set()
    for index, page in enumerate(split):
        lines = page_lines[index]
        edge = set(_edge(lines))
        drop: set[int] = set()
        here: set[str] = set()  # a page prints its running line once: a second "#" line is content
        for pos in sorted(edge, key=lambda p: min(p, len(lines) - 1 - p)):  # from the page's edges inwards
            key = line_key(lines[pos])
            if key in keys and key not in here and len(lines[pos]) <= MAX_CHARS:
                here.add(key)
                if key in kept_once:
                    drop.add(pos)
                    dropped.setdefault(index, []).append(lines[pos])
                kept_once.add(key)
        pieces: list[Piece | str] = []
        at = 0
        for piece, piece_lines in page:
            if piece_lines is None:
                pieces.append(piece)
                continue
            if not drop.intersection(range(at, at + len(piece_lines))):
                pieces.append(piece)
                at += len(piece_lines)
                continue
            kept = []
            for raw in str(piece).split("\n"):  # blank lines stay: they separate paragraphs
                if raw.strip():
                    at += 1
                    if at - 1 in drop:
                        continue
                kept.append(raw)
            if any(line.strip() for line in kept):
                pieces.append("\n".join(kept))
        out.append(pieces)
    return out, dropped


def _lines(text: str) -> list[str]:
    return [s for line in text.split("\n") if (s := line.strip())]
