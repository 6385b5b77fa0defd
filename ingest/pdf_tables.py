"""Tables on the text layer of PDF pages, found from pdfium's own geometry.

Most pages have no table, so each page is first checked cheaply: pdfium's text runs (one rectangle per
run of characters, no per-character call) are grouped into lines, and only a page with two lines cut by a
wide gap has its paths read for rules; it is read character by character only if it also has a figure
after such a gap on two lines or a rule across such lines, or three lines of text with two figures each
(rows written as one text run). On DA-619p.pdf (a 619-page book, no table) 7 pages pass, and finding
tables adds 0.8 ms to the 2.3 ms a page's text takes; pdfplumber, measured side by side, takes 203 ms a
page and finds 6 of the 15 key rows we find on real tables (docs/benchmarks.md: python -m benchmarks.pdf_tables).

On a page that passes, the characters (pdfium's loose boxes) are grouped into lines, each line is cut into
segments at wide gaps and at vertical rules, and runs of lines with two or more segments form blocks. A
block's columns are the gutters no segment crosses; its rows are its lines, joined where a rule groups
several lines into one row, where a label wraps onto the next line, or where a line only continues the
cells above it. A block is kept as a table only with evidence: a column of figures, or rules between its
rows. Unruled text in columns is far more often a two-column layout than a table, and rules beside text
are as often the sides of a box, so neither counts alone. Horizontal rules of about the same width bound
an area that is read first, on its own, so that two ruled tables side by side are not read as one.
Scanned pages (no text layer) have no characters, hence no tables here. The page's characters, lines and
rules are read in ingest/pdf_geometry.py; this module turns them into tables.
"""

from __future__ import annotations

import re
import statistics
from bisect import bisect_left, bisect_right
from contextlib import suppress
from dataclasses import dataclass
from html import escape
from itertools import pairwise
from pathlib import Path
from typing import Any

from ingest.pdf_geometry import BBox, Char, Rules, page_chars, page_rules, page_text, ruled_areas, run_lines

COL_GAP_EM = 0.8  # a gap this many line heights wide separates two cells
ROW_GAP_EM = 1.6  # a vertical gap wider than this ends a table, unless a rule lies in it
MAX_CHARS = 20000  # a page with more characters (a dump of figures in tiny type) is not analysed
MIN_ROWS = 2

_QUANTITY = re.compile(r"[(\-−–+]?\s*[$€£¥₹]?\s*[(\-−–]?\s*\d[\d,.\s]*(?:[eE][-+−]?\d+)?\s*%?\s*\)?")
_YEAR = re.compile(r"(?:19|20)\d\d")
_NUMBERING = re.compile(r"\(\d{1,2}\)|\d{1,2}\.")  # "(1)", "2.": paragraph numbers, not figures
_MARKER = re.compile(r"[•●○◦▪■□➢►\-–*·]|\(?[0-9a-zA-Z]{1,2}[.)]")
_BRACKET_SPACE = re.compile(r"(?<=\()\s+|\s+(?=[)%])")
_FIGURE_TOKEN = re.compile(r"(?<![\w.,:/-])[(\-−–$€£¥₹]?\d[\d,.\-/]*%?\)?(?![\w.]*\w)")  # not "...6", "2:7"
_TWO_DIGITS = re.compile(r"\d\D+\d")  # a quick test before _FIGURE_TOKEN
_FIGURE_START = frozenset("0123456789($€£¥₹-−–+.")
_DASHES = frozenset({"—", "–", "-", "−", "‒"})
_CURRENCY = frozenset({"$", "€", "£", "¥", "₹", "US$"})
_CLOSERS = frozenset({")", "%", ")%", "%)"})


@dataclass(frozen=True)
class PageTable:
    """A table found on a page: its cells row by row, and where it lies."""

    rows: list[list[str]]
    bbox: BBox
    header: bool = False  # the first row holds column titles

    def html(self) -> str:
        """The table as HTML, its first row in <th> cells when it is a header."""
        head, body = (self.rows[:1], self.rows[1:]) if self.header else ([], self.rows)
        parts = ["<table>"]
        parts += ["<thead><tr>" + "".join(f"<th>{escape(c)}</th>" for c in r) + "</tr></thead>" for r in head]
        parts += ["<tbody>", *("<tr>" + "".join(f"<td>{escape(c)}</td>" for c in r) + "</tr>" for r in body)]
        return "".join([*parts, "</tbody></table>"])

    def text(self) -> str:
        """The table as text: one line per row, cells separated by " | "."""
        return "\n".join(" | ".join(row) for row in self.rows)


# -- public entry points ---------------------------------------------------------------------------------


def find_tables(page: Any, textpage: Any) -> list[PageTable]:
    """The tables on an open pypdfium2 page, top to bottom; none (never an exception) on a page that
    cannot be read."""
    try:
        return _find_tables(page, textpage)
    except Exception:  # a broken page must not lose the page's text
        return []


def might_have_tables(page: Any, textpage: Any) -> bool:
    """Whether the cheap check lets the page through to be read character by character."""
    try:
        return _precheck(page, textpage.raw) is not None
    except Exception:
        return False


def page_tables(pdf: str | Path | Any, page_index: int) -> list[PageTable]:
    """The tables on one page of a PDF (a path or an open pypdfium2 PdfDocument); none if it cannot be read."""
    try:
        import pypdfium2 as pdfium

        doc = pdfium.PdfDocument(str(pdf)) if isinstance(pdf, str | Path) else pdf
        try:
            page = doc[page_index]
            textpage = page.get_textpage()
            tables = find_tables(page, textpage)
            textpage.close()
            page.close()
            return tables
        finally:
            if doc is not pdf:
                doc.close()
    except Exception:
        return []


def split_page(textpage: Any, tables: list[PageTable]) -> list[str | PageTable]:
    """The page's text in pdfium's reading order with the tables' characters taken out, each table placed
    where its first character was: text pieces (lines separated by "\\n") and tables; the whole text, as
    without tables, should the page fail to be read again."""
    if tables:
        with suppress(Exception):
            return [x for x in _split(textpage, tables) if not isinstance(x, str) or x.strip()]
    return [_tidy_text(textpage.get_text_range() or "")]


def _split(textpage: Any, tables: list[PageTable]) -> list[str | PageTable]:
    import pypdfium2.raw as pdfium_c

    raw = textpage.raw
    out: list[str | PageTable] = []
    buf: list[str] = []
    rect = pdfium_c.FS_RECTF()
    boxes = [(t.bbox[0] - 1, t.bbox[1] - 1, t.bbox[2] + 1, t.bbox[3] + 1) for t in tables]
    for i in range(pdfium_c.FPDFText_CountChars(raw)):
        code = pdfium_c.FPDFText_GetUnicode(raw, i)
        ch = chr(code) if 0 < code < 0x110000 else ""
        if not ch.strip() or not pdfium_c.FPDFText_GetLooseCharBox(raw, i, rect):
            buf.append(ch)
            continue
        x, y = (rect.left + rect.right) / 2, (rect.bottom + rect.top) / 2
        inside = next((tables[k] for k, b in enumerate(boxes) if b[0] <= x <= b[2] and b[1] <= y <= b[3]), None)
        if inside is None:
            buf.append(ch)
        elif inside not in out:
            out += [_tidy_text("".join(buf)), inside]
            buf = []
    return [*out, _tidy_text("".join(buf))]


def text_outside(textpage: Any, tables: list[PageTable]) -> str:
    """The page's text without the characters inside the tables, so that no figure is indexed twice."""
    return "\n\n".join(item for item in split_page(textpage, tables) if isinstance(item, str))


def _tidy_text(text: str) -> str:
    """pdfium's line breaks as "\\n", and the blank lines left where a table was as one paragraph break."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return re.sub(r"\n(?:[ \t]*\n)+", "\n\n", text).strip("\n")


# -- the cheap check -------------------------------------------------------------------------------------


def _precheck(page: Any, raw: Any) -> Rules | None:
    """The page's rules when it may hold a table, as a kept table needs: two lines of text runs cut by a
    wide gap or a vertical rule, with a figure after the gap on two lines or a rule across such lines; or,
    for rows written as one text run each (their cells placed inside the run, no gap between runs), three
    lines of the page's text with two figures each."""
    import pypdfium2.raw as pdfium_c

    count = pdfium_c.FPDFText_CountChars(raw)
    if count <= 0 or count > MAX_CHARS:
        return None
    lines = run_lines(raw)
    rules = None
    if sum(bool(_cuts(line, 0.5, None)) for line in lines) >= MIN_ROWS:  # most pages skip their paths
        rules = page_rules(page)
        if _cut_with_evidence(lines, rules, raw):
            return rules
    text_lines = page_text(raw, count).splitlines()
    if sum(len(_FIGURE_TOKEN.findall(line)) >= 2 for line in text_lines if _TWO_DIGITS.search(line)) >= 3:
        return rules or page_rules(page)
    return None


def _cut_with_evidence(lines: list[tuple[float, float, list[BBox]]], rules: Rules, raw: Any) -> bool:
    split: list[tuple[float, float, float, list[tuple[float, float]]]] = []  # (middle, height, width, gaps)
    figures = 0
    for line in lines:
        if cuts := _cuts(line, COL_GAP_EM, rules):
            width = max(r[2] for r in line[2]) - line[2][0][0]
            split.append((line[0], line[1], width, [(start, r[0]) for start, r in cuts]))
            figures += any(_starts_figure(raw, r) for _, r in cuts)

    def across(y: float, x0: float, x1: float, above: bool) -> bool:  # a rule across the cells of a line near it
        return any(0 < (m - y if above else y - m) <= 5 * h
                   and (x1 - x0 >= 0.6 * w or any(x0 < a and b < x1 for a, b in gaps)) for m, h, w, gaps in split)

    return len(split) >= MIN_ROWS and (figures >= MIN_ROWS or any(
        across(y, x0, x1, True) and across(y, x0, x1, False) for y, x0, x1 in rules.horizontal))


def _cuts(line: tuple[float, float, list[BBox]], factor: float, rules: Rules | None) -> list[tuple[float, BBox]]:
    """The runs of a line that start after a gap of `factor` line heights, or after a vertical rule, each
    with where its gap starts."""
    middle, height, runs = line
    out, right = [], runs[0][2]
    for r in runs[1:]:
        if r[0] - right >= factor * height or (rules and _wall(rules, right, r[0], middle)):
            out.append((right, r))
        right = max(right, r[2])
    return out


def _wall(rules: Rules, x0: float, x1: float, y: float) -> bool:
    """A vertical rule stands between x0 and x1 at height y."""
    walls = rules.vertical[bisect_left(rules.lefts, x0 - 1): bisect_right(rules.lefts, x1 + 1)]
    return any(y0 <= y <= y1 for _, y0, y1 in walls)


def _starts_figure(raw: Any, run: BBox) -> bool:
    import pypdfium2.raw as pdfium_c

    index = pdfium_c.FPDFText_GetCharIndexAtPos(raw, run[0] + 0.1, (run[1] + run[3]) / 2, 1.0, 1.0)
    return index >= 0 and chr(pdfium_c.FPDFText_GetUnicode(raw, index) or 32) in _FIGURE_START


# -- characters, lines, blocks ---------------------------------------------------------------------------


@dataclass(slots=True)
class _Seg:
    x0: float
    x1: float
    text: str
    chars: list[Char]


@dataclass(slots=True)
class _Line:
    y0: float
    y1: float
    cy: float
    em: float
    segs: list[_Seg]


Found = list[tuple[PageTable, list[Char]]]  # tables, each with the characters it took


def _find_tables(page: Any, textpage: Any) -> list[PageTable]:
    rules = _precheck(page, textpage.raw)
    if rules is None:
        return []
    left, bottom, right, top = rules.page
    chars = [c for c in page_chars(textpage.raw) if left <= (c.x0 + c.x1) / 2 <= right and bottom <= c.cy <= top]
    tables: list[PageTable] = []
    for area in [*ruled_areas(rules), None]:  # ruled areas (inner ones first), then the whole page
        inside = [c for c in chars if area is None or (area[0] <= (c.x0 + c.x1) / 2 <= area[2]
                                                       and area[1] <= c.cy <= area[3])]
        if area is not None and len(inside) > 0.9 * len(chars):
            continue  # (nearly) the whole page: read once, below
        found = _find(inside, rules, depth=0)
        tables += [t for t, _ in found]
        used = {id(c) for _, taken in found for c in taken}
        chars = [c for c in chars if id(c) not in used]
    return sorted(tables, key=lambda t: (-t.bbox[3], t.bbox[0]))


def _lines(chars: list[Char], rules: Rules) -> list[_Line]:
    """Characters grouped into lines (top to bottom), each line cut into segments at wide gaps and rules."""
    out: list[_Line] = []
    ordered = sorted(chars, key=lambda c: -c.cy)
    i = 0
    while i < len(ordered):
        band = ordered[i]  # the line's tallest character so far: a superscript may come first
        j = i + 1
        while j < len(ordered) and (band.y0 <= ordered[j].cy <= band.y1 or ordered[j].y0 <= band.cy <= ordered[j].y1):
            band = ordered[j] if ordered[j].y1 - ordered[j].y0 > band.y1 - band.y0 else band
            j += 1
        group = sorted(ordered[i:j], key=lambda c: c.x0)
        i = j
        em = statistics.median_low(c.y1 - c.y0 for c in group)
        y0, y1 = min(c.y0 for c in group), max(c.y1 for c in group)
        walls = sorted(x for x, r0, r1 in rules.vertical if r0 <= (y0 + y1) / 2 <= r1)
        segs: list[_Seg] = []
        cur, text, right = [group[0]], [group[0].text], group[0].x1
        for c in group[1:]:
            gap = c.x0 - right
            wall = gap > 0 and bool(walls) and bisect_left(walls, right - 1) < bisect_right(walls, c.x0 + 1)
            if gap >= COL_GAP_EM * em or wall:
                segs.append(_Seg(cur[0].x0, right, _tidy("".join(text)), cur))
                cur, text = [], []
            elif (c.space_before or gap > 0.2 * em) and text[-1] != " ":
                text.append(" ")
            cur.append(c)
            text.append(c.text)
            right = max(right, c.x1) if len(cur) > 1 else c.x1
        segs.append(_Seg(cur[0].x0, right, _tidy("".join(text)), cur))
        out.append(_Line(y0, y1, (y0 + y1) / 2, em, segs))
    return out


def _tidy(text: str) -> str:
    """No space inside brackets: "( 1,234 )" is "(1,234)"."""
    return _BRACKET_SPACE.sub("", text.strip())


def _find(chars: list[Char], rules: Rules, depth: int) -> Found:
    return [] if len(chars) < 4 else [
        found for block in _blocks(_lines(chars, rules), rules) for found in _resolve(block, rules, depth)]


def _blocks(lines: list[_Line], rules: Rules) -> list[list[_Line]]:
    """Runs of close lines from a line of two or more segments to the last such line (and the lines that
    continue its cells), with at least MIN_ROWS lines of several segments."""
    blocks: list[list[_Line]] = []
    i = 0
    while i < len(lines):
        if len(lines[i].segs) < 2:
            i += 1
            continue
        block, last = [lines[i]], 0
        x0, x1 = lines[i].segs[0].x0, lines[i].segs[-1].x1
        for line in lines[i + 1:]:
            gap, em = block[-1].y0 - line.y1, max(block[-1].em, line.em)
            if gap > ROW_GAP_EM * em and not (gap <= 2.5 * em and _rule_between(rules, block[-1], line, x0, x1)):
                break
            block.append(line)
            if len(line.segs) >= 2:
                last = len(block) - 1
                x0, x1 = min(x0, line.segs[0].x0), max(x1, line.segs[-1].x1)
        block, tail = block[:last + 1], block[last + 1:]
        gutters = _gutters(block)
        for line in tail:  # a last row's cell wrapped onto more lines, right of the first column
            if not gutters or line.segs[0].x0 < gutters[0][1] or _rule_between(rules, block[-1], line, x0, x1):
                break
            block.append(line)
        if sum(len(line.segs) >= 2 for line in block) >= MIN_ROWS:
            blocks.append(block)
        i += len(block)
    return blocks


def _gutters(block: list[_Line]) -> list[tuple[float, float]]:
    """The x-intervals that (almost) no segment of a multi-segment line crosses: between the columns. When
    most such lines hold figures, those lines alone decide: a title spanning two columns crosses their gutter."""
    split = [line for line in block if len(line.segs) >= 2]
    figured = [line for line in split if any(_is_figure(s.text) and not _YEAR.fullmatch(s.text) for s in line.segs)]
    split = figured if len(figured) >= 3 and 2 * len(figured) >= len(split) else split
    if not split:
        return []
    tolerance, em = len(split) // 12, statistics.median(line.em for line in split)
    events = sorted(e for line in split for s in line.segs for e in ((s.x0, 1), (s.x1, -1)))
    gutters: list[tuple[float, float]] = []
    depth, start, lo, hi = 0, None, events[0][0], events[-1][0]
    for x, step in events:
        depth += step
        if depth <= tolerance and start is None and lo < x < hi:
            start = x
        elif depth > tolerance and start is not None:
            if x - start >= 0.3 * em:
                gutters.append((start, x))
            start = None
    return gutters


def _resolve(block: list[_Line], rules: Rules, depth: int) -> Found:
    """The tables in one block: cut at lines running across its columns, or else its two sides apart."""
    block = _without_running_lines(block, rules)
    gutters = _gutters(block)
    if not gutters:
        return []
    # A line running from the first column across the next (a heading, a page header, a caption) is no
    # row: the block is cut there and each part read on its own.
    g0, g1 = gutters[0]
    cuts = [k for k, line in enumerate(block) if any(s.x0 < g0 and s.x1 > g1 + 1 for s in line.segs)]
    if cuts:
        parts = [block[a + 1:b] for a, b in zip([-1, *cuts], [*cuts, len(block)], strict=True)]
        return [found for part in parts if sum(len(line.segs) > 1 for line in part) >= MIN_ROWS
                for found in _resolve(part, rules, depth)]
    trimmed = block[:]  # lines at the end that cross other columns (a caption, a note) are no rows
    while trimmed and not _fits(trimmed[-1], gutters):
        trimmed.pop()
    if len(trimmed) < len(block) and sum(len(line.segs) > 1 for line in trimmed) >= MIN_ROWS:
        block, gutters = trimmed, _gutters(trimmed)
    taken = [c for line in block for s in line.segs for c in s.chars]
    table = _table(block, gutters, rules) if gutters else None
    if table is not None:
        return [(table, taken)]
    if depth >= 1 or not gutters:
        return []
    # Columns of running text (a two-column page) may hold a table: each side is read on its own.
    widest = max(gutters, key=lambda g: g[1] - g[0])
    cut = (widest[0] + widest[1]) / 2
    return (_find([c for c in taken if c.x1 <= cut], rules, depth + 1)
            + _find([c for c in taken if c.x0 >= cut], rules, depth + 1))


def _without_running_lines(block: list[_Line], rules: Rules) -> list[_Line]:
    """The block without a page header (or footer) at the page's edge that a rule alone sets apart."""
    if len(block) <= 2:
        return block
    x0, x1 = min(s.x0 for line in block for s in line.segs), max(s.x1 for line in block for s in line.segs)
    ruled = [_rule_between(rules, a, b, x0, x1) for a, b in pairwise(block)]
    margin = 0.08 * (rules.page[3] - rules.page[1])
    head = block[0].cy > rules.page[3] - margin and ruled[0] and not any(ruled[1:-1])
    foot = block[-1].cy < rules.page[1] + margin and ruled[-1] and not any(ruled[1:-1])
    return block[int(head): len(block) - int(foot)]


def _fits(line: _Line, gutters: list[tuple[float, float]]) -> bool:
    """No segment of the line reaches far into a gutter."""
    return not any(min(s.x1, g1) - max(s.x0, g0) > max(1.0, 0.3 * (g1 - g0)) for s in line.segs for g0, g1 in gutters)


def _rule_between(rules: Rules, upper: _Line, lower: _Line, x0: float, x1: float) -> bool:
    """A horizontal rule lies between two lines, over at least 60% of [x0, x1]."""
    between = rules.horizontal[bisect_right(rules.heights, lower.cy): bisect_left(rules.heights, upper.cy)]
    return any(min(r1, x1) - max(r0, x0) >= 0.6 * max(x1 - x0, 1.0) for _, r0, r1 in between)


# -- from a block to a table -----------------------------------------------------------------------------


def _table(block: list[_Line], gutters: list[tuple[float, float]], rules: Rules) -> PageTable | None:
    x0, x1 = min(s.x0 for line in block for s in line.segs), max(s.x1 for line in block for s in line.segs)
    edges = [x0 - 1, *((a + b) / 2 for a, b in gutters), x1 + 1]
    raw: list[list[str]] = []
    for line in block:
        row = [""] * (len(edges) - 1)
        for s in line.segs:  # into the column it overlaps most
            k = max(range(len(row)), key=lambda k: (min(s.x1, edges[k + 1]) - max(s.x0, edges[k]), -k))
            row[k] = _tidy(f"{row[k]} {s.text}")
        raw.append(row)
    ruled_after = [_rule_between(rules, a, b, x0, x1) for a, b in pairwise(block)]
    # Evidence from rules: one between lines of cells near the top (under a header) with rows below it, or
    # two at least (a single one further down is as often a page footer's), or a grid.
    between = [k for k, (r, a, b) in enumerate(zip(ruled_after, block, block[1:], strict=False))
               if r and len(a.segs) > 1 and len(b.segs) > 1]
    height = block[0].cy - block[-1].cy
    grid = bool(between) and all(any(g0 - 1 <= x <= g1 + 1 and min(y1, block[0].cy) - max(y0, block[-1].cy)
                                     >= 0.8 * height for x, y0, y1 in rules.vertical) for g0, g1 in gutters)
    rows_below = sum(len(line.segs) > 1 for line in block[between[0] + 1:]) if between else 0
    ruled = grid or len(between) >= 2 or (bool(between) and between[0] < 3 and rows_below >= 2)
    rows = _merge_symbol_columns(_join_rows(raw, ruled_after))
    if len(rows[0]) < 2 or sum(sum(map(bool, r)) >= 2 for r in rows) < max(MIN_ROWS, len(rows) / 2):
        return None
    filled = [c for r in rows for c in r if c]
    numeric = any(sum(_is_figure(r[k]) and not _NUMBERING.fullmatch(r[k]) for r in rows) >= 2
                  and sum(_is_figure(r[k]) or r[k] in _DASHES for r in rows) >= 0.6 * sum(bool(r[k]) for r in rows)
                  for k in range(1, len(rows[0])))
    too_long = sum(map(len, filled)) / len(filled) > (80 if ruled else 40)
    if not (ruled or numeric) or too_long or _prose(rows) or all(_MARKER.fullmatch(r[0]) for r in rows if r[0]):
        return None  # no evidence, or running text, or a bulleted or numbered list
    taken = [c for line in block for s in line.segs for c in s.chars]
    bbox = (min(c.x0 for c in taken), min(c.y0 for c in taken), max(c.x1 for c in taken), max(c.y1 for c in taken))
    rows, header = _header(rows, any(ruled_after))
    return PageTable(rows=rows, bbox=bbox, header=header)


def _is_quantity(text: str) -> bool:
    return bool(_QUANTITY.fullmatch(text))


def _is_figure(text: str) -> bool:
    """An amount, or a code made mostly of digits ("51-60", "23b", "2.3.59")."""
    return _is_quantity(text) or (text[:1].isdigit() and 2 * sum(ch.isdigit() for ch in text) >= len(text))


def _is_header_like(row: list[str]) -> bool:
    """Column titles: a cell right of the first, and no amount but years."""
    return any(row[1:]) and not any(_is_quantity(c) and not _YEAR.fullmatch(c.strip()) for c in row if c)


def _prose(rows: list[list[str]]) -> bool:
    """Columns of running text: many cells go on, in lower case, from an unfinished line above them."""
    goes_on = words = 0
    for above, row in pairwise(rows):
        for k, c in enumerate(row):
            if " " in c and c[:1].isalpha():
                words += 1
                goes_on += c[:1].islower() and bool(above[k]) and not above[k].endswith((".", ":", "!", "?"))
    return goes_on >= 3 and goes_on >= 0.25 * words


def _join_rows(raw: list[list[str]], ruled_after: list[bool]) -> list[list[str]]:
    """Lines to rows. A band between two rules is one row of cells over several lines when rules part the
    rows (three bands or more) or its first column has one entry, unless a column holds two figures in it
    (sub-rows); so is a header band of text above the only rule. Otherwise a label ending in ","
    or ";" (or followed by a lower-case line) joins the next line, and text under the filled cells of the
    row above, in lower case or after a "," or "-", continues them."""
    bands: list[list[list[str]]] = [[raw[0]]]
    for row, ruled in zip(raw[1:], ruled_after, strict=True):
        if ruled:
            bands.append([])
        bands[-1].append(row)
    out: list[list[str]] = []
    for n, band in enumerate(bands):
        textual = not any(_is_quantity(c) and not _YEAR.fullmatch(c) for r in band for c in r if c)
        header_band = n == 0 and len(bands) > 1 and textual and len(band) <= 3
        stacked = any(sum(_is_quantity(r[k]) for r in band) > 1 for k in range(len(band[0])))  # sub-rows
        one_row = (len(bands) > 2 or sum(bool(r[0]) for r in band) <= 1) and not stacked
        if len(band) > 1 and len(bands) > 1 and (one_row or header_band):
            out.append(_join_cells(band))
            continue
        pending: list[str] | None = None
        start = len(out)
        for k, line in enumerate(band):
            row = _join_cells([pending, line]) if pending is not None else line
            pending = None
            follows_lower = k + 1 < len(band) and band[k + 1][0][:1].islower()
            if row[0] and not any(row[1:]) and (row[0].endswith((",", ";")) or follows_lower):
                pending = row
            elif len(out) > start and not row[0] and all(
                    not c or (out[-1][j] and (c[:1].islower() or out[-1][j].endswith((",", ";", "-", "/", "&"))))
                    for j, c in enumerate(row)):
                out[-1] = _join_cells([out[-1], row])
            else:
                out.append(row)
        out += [pending] if pending is not None else []
    return out


def _join_cells(rows: list[list[str]]) -> list[str]:
    return [" ".join(r[k] for r in rows if r[k]) for k in range(len(rows[0]))]


def _merge_symbol_columns(rows: list[list[str]]) -> list[list[str]]:
    """Empty columns dropped; a column of currency signs joins the figures on its right, one of ")" or
    "%" the figures on its left."""
    k = 0
    while k < len(rows[0]):
        column = {r[k] for r in rows if r[k]}
        if not column:
            rows = [[*r[:k], *r[k + 1:]] for r in rows]
        elif column <= _CURRENCY and k + 1 < len(rows[0]):
            rows = [[*r[:k], f"{r[k]} {r[k + 1]}".strip(), *r[k + 2:]] for r in rows]
        elif column <= _CLOSERS and k > 0:
            rows = [[*r[:k - 1], f"{r[k - 1]}{r[k]}", *r[k + 1:]] for r in rows]
        else:
            k += 1
    return rows


def _header(rows: list[list[str]], ruled: bool) -> tuple[list[list[str]], bool]:
    """Whether the first row holds column titles; two such lines before the figures are joined into one."""
    if ruled or not _is_header_like(rows[0]):  # under rules, a header over several lines is joined already
        return rows, _is_header_like(rows[0])
    if len(rows) > 2 and _is_header_like(rows[1]) and not _is_header_like(rows[2]):
        return [_join_cells(rows[:2]), *rows[2:]], True
    return rows, True
