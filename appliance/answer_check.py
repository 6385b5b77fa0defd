"""Figures of an answer checked against the passages it was given.

After generation every number, date, identifier and quoted phrase of the answer is looked for in
passages: a sentence that cites `[n]` is checked against the passages it cites (a figure found only
in another passage is a wrong citation, and flagged); a sentence that cites nothing is checked against
every passage the model was given (small models often leave the markers out, and the figure is then
still one the sources hold or do not). What is not found is returned as written, for the answer's
`unsupported` list; the answer text is never changed.

Both sides are normalised the same way: 1,234.5 / 1234.5 / 1 234,5 / 1.234,5 are one value; "$1.2
billion", 1.2bn and 1,200 million are 1.2e9; a figure rounded to fewer digits than the passage's
(1.23 billion for 1,234,567,890) is supported, one with a changed digit is not. Dates are compared by
their parts (30 June 2023, June 30, 2023, 2023-06-30, 30/06/2023, 06/30/23, Jun 2023), so a date that
says less than the passage's (June 2023 for 30 June 2023) is supported. A passage is read with its
label (title, page, section, date), as the model read it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from appliance.rag import Source

_MONTHS = {name: i for i, names in enumerate(
    [("january", "jan"), ("february", "feb"), ("march", "mar"), ("april", "apr"), ("may",), ("june", "jun"),
     ("july", "jul"), ("august", "aug"), ("september", "sep", "sept"), ("october", "oct"),
     ("november", "nov"), ("december", "dec")], start=1) for name in names}
# Capitalised or upper-case only: "may" and "march" are words too.
_MONTH_NAMES = [v for n in sorted(_MONTHS, key=len, reverse=True) for v in (n.capitalize(), n.upper())]
_MONTH = r"(?P<{}>" + "|".join(_MONTH_NAMES) + r")\.?"
_DAY = r"(?P<{}>\d{{1,2}})(?:st|nd|rd|th)?"
_YEAR = r"(?P<{}>\d{{4}})"
# Each pattern names its parts; a `y2` part is a two-digit year.
_DATES = [re.compile(p) for p in (
    r"(?<!\d)" + _YEAR.format("y") + r"[-/.]" + r"(?P<m>\d{1,2})[-/.](?P<d>\d{1,2})(?!\d)",
    r"(?<!\d)(?P<a>\d{1,2})[/.-](?P<b>\d{1,2})[/.-](?:" + _YEAR.format("y") + r"|(?P<y2>\d{2}))(?![\d/.-]\d)",
    r"\b" + _DAY.format("d") + r"(?:\s+of)?\s+" + _MONTH.format("m") + r"(?:,?\s+" + _YEAR.format("y") + r")?\b",
    r"\b" + _MONTH.format("m") + r"\s+" + _DAY.format("d") + r"\b(?:,?\s+" + _YEAR.format("y") + r"\b)?",
    r"\b" + _MONTH.format("m") + r",?\s+" + _YEAR.format("y") + r"\b",
)]
_SCALES = {"thousand": 1e3, "k": 1e3, "million": 1e6, "mn": 1e6, "mm": 1e6, "m": 1e6, "billion": 1e9,
           "bn": 1e9, "b": 1e9, "trillion": 1e12, "tn": 1e12}
# A number: digits grouped by commas (1,234.5), by (thin) no-break spaces (1 234,5) or by dots with a
# decimal comma (1.234,5; 1.234.567), then an optional scale. A one-letter scale (k, m, b) counts only
# written against the number (1.2bn, $5m).
_NUMBER = re.compile(
    r"(?<![\w.,])(?P<num>\d{1,3}(?:\.\d{3})+,\d+|\d{1,3}(?:\.\d{3}){2,}(?![.,]?\d)|\d{1,3}(?:,\d{3})+(?:\.\d+)?"
    r"|\d{1,3}(?:[\u00a0\u202f\u2009]\d{3})+(?:[.,]\d+)?|\d+(?:\.\d+)?)"
    r"(?:(?P<word>\s?(?:thousand|million|billion|trillion|bn|mn|mm|tn)\b)|(?P<letter>[kKmMbB])(?![A-Za-z]))?")
# A word of letters then digits: part numbers, codes, ticket ids (ZX-4471, E1234, PO-2024-118, COVID-19, Q2).
_IDENTIFIER = re.compile(r"(?<!\w)[A-Za-z]+[-_/]?\d\w*(?:-\w+)*")
_QUOTED = re.compile(r"\"([^\"\n]{3,200})\"|\u201c([^\u201d\n]{3,200})\u201d|\u2018([^\u2019\n]{3,200})\u2019")
_CITE = re.compile(r"\[(\d{1,3})\]")
# A sentence ends at . ! ? followed by space (not inside 1.5), with any citation markers after it.
_SENTENCE_END = re.compile(r"[.!?]+(?:\s*\[\d{1,3}\])*(?=\s|$)|\n+")
_FENCED = re.compile(r"```.*?(?:```|$)", re.DOTALL)
_LIST_MARKER = re.compile(r"^\s*(?:\d{1,2}[.)]|[-*\u2022])\s+", re.MULTILINE)

Date = tuple[int | None, int | None, int | None]  # (year, month, day): what the text says of each


@dataclass(frozen=True)
class Figure:
    raw: float  # as written, before the scale
    decimals: int  # digits written after the decimal point
    scale: float = 1.0  # 1e9 for "billion", "bn", "b"

    @property
    def value(self) -> float:
        return self.raw * self.scale

    def near(self, value: float, scale: float = 1.0) -> bool:
        """`value` (at `scale`) written to this figure's digits: 1.2 billion is near 1,234,567,890."""
        mine = self.raw * scale
        return abs(value - mine) <= 0.5 * 10.0 ** -self.decimals * scale + 1e-9 * max(1.0, abs(mine))


@dataclass
class Facts:
    """What a passage (or a set of them) states, normalised for comparison."""

    figures: list[Figure]
    dates: list[Date]
    identifiers: set[str]
    words: str  # lower-case words between single spaces, for quoted phrases (passages apart by a newline)

    def supports_figure(self, claim: Figure) -> bool:
        for f in self.figures:
            if claim.near(f.value, claim.scale) or claim.near(f.raw, claim.scale):
                return True  # the raw digits too: "5m" (metres) in the passage, "5 m" in the answer
            if claim.scale != 1.0 and f.scale == 1.0 and claim.near(f.raw):
                return True  # a table "in billions" holds 1.2; the answer says $1.2 billion
        return False

    def supports_date(self, options: list[Date]) -> bool:
        return any(all(c is None or c == p for c, p in zip(claim, passage, strict=True))
                   for claim in options for passage in self.dates)


def facts(text: str) -> Facts:
    """The figures, dates, identifiers and words of a passage."""
    dates = [d for _span, options in _find_dates(text) for d in options]
    return Facts(figures=[f for _span, f in _find_figures(text)], dates=dates,
                 identifiers={k for m in _IDENTIFIER.finditer(text) for k in _identifier_keys(m.group(0))},
                 words=_words(text))


def passage_facts(source: Source) -> Facts:
    """A passage as the model read it: its label (title, page, section, date), then its text."""
    label = source.label().split(" ", 1)[1] if " " in source.label() else ""
    return facts(f"{label}\n{source.text}")


def unsupported_claims(text: str, sources: Sequence[Source]) -> list[str]:
    """The answer's figures, dates, identifiers and quoted phrases that its passages do not state, as
    written in the answer, in order, each once. A sentence is checked against the passages it cites,
    an uncited one against all of `sources` (numbered as the model saw them)."""
    if not sources:
        return []
    by_number = {s.number: passage_facts(s) for s in sources}
    everything = _merge(by_number.values())
    found: list[str] = []
    for sentence in _sentences(_prose(text)):
        cited = [by_number[n] for n in (int(m) for m in _CITE.findall(sentence)) if n in by_number]
        against = _merge(cited) if cited else everything
        for claim in _unsupported_in(sentence, against):
            if claim not in found:
                found.append(claim)
    return found


def claims(text: str) -> list[str]:
    """Every figure, date, identifier and quoted phrase the check looks at, as written, each once."""
    nothing = Facts(figures=[], dates=[], identifiers=set(), words="")
    return list(dict.fromkeys(c for sentence in _sentences(_prose(text)) for c in _unsupported_in(sentence, nothing)))


def _prose(text: str) -> str:
    """The text whose claims are checked: list numbers ("1. ") and fenced code blocks blanked out. A code
    block's string literals and loop counts are no statements about the documents (measured: they were
    all a small model's flags on an invented code sample)."""
    text = _FENCED.sub(lambda m: " " * len(m.group(0)), text)
    return _LIST_MARKER.sub(lambda m: " " * len(m.group(0)), text)


def _unsupported_in(sentence: str, against: Facts) -> Iterable[str]:
    sentence = _CITE.sub(lambda m: " " * len(m.group(0)), sentence)
    spans: list[tuple[int, int]] = []
    for match in _QUOTED.finditer(sentence):
        phrase = next(g for g in match.groups() if g is not None)
        spans.append(match.span())
        # An ellipsis marks words left out: each part must be there.
        parts = [_words(p) for p in re.split(r"\.\.\.|\u2026", phrase)]
        if any(p.strip() and p not in against.words for p in parts):
            yield match.group(0)
    for span, options in _find_dates(sentence, spans):
        spans.append(span)
        if not against.supports_date(options):
            yield sentence[span[0]:span[1]].strip()
    for match in _IDENTIFIER.finditer(sentence):
        if _outside(match.span(), spans):
            spans.append(match.span())
            if _identifier_key(match.group(0)) not in against.identifiers:
                yield match.group(0)
    for span, figure in _find_figures(sentence, spans):
        if not against.supports_figure(figure):
            yield sentence[span[0]:span[1]].strip()


def _sentences(text: str) -> list[str]:
    out, start = [], 0
    for m in _SENTENCE_END.finditer(text):
        out.append(text[start:m.end()])
        start = m.end()
    out.append(text[start:])
    return [s for s in out if s.strip()]


def _find_dates(text: str, taken: list[tuple[int, int]] | None = None) -> list[tuple[tuple[int, int], list[Date]]]:
    """Dates with their spans, longest reading first; a numeric a/b/y date gives both readings."""
    taken = list(taken or [])
    out: list[tuple[tuple[int, int], list[Date]]] = []
    for pattern in _DATES:
        for m in pattern.finditer(text):
            if not _outside(m.span(), taken):
                continue
            parts = m.groupdict()
            year = int(parts["y"]) if parts.get("y") else None
            if parts.get("y2"):
                two = int(parts["y2"])
                year = 2000 + two if two < 70 else 1900 + two
            if parts.get("a"):
                a, b = int(parts["a"]), int(parts["b"])
                options: list[Date] = [d for d in ((year, b, a), (year, a, b)) if _valid(d)]
            else:
                month = parts["m"]
                m_no = _MONTHS[month.lower().rstrip(".")] if month and not month.isdigit() else int(month)
                options = [d for d in [(year, m_no, int(parts["d"]) if parts.get("d") else None)] if _valid(d)]
            if options:
                taken.append(m.span())
                out.append((m.span(), options))
    return sorted(out)


def _valid(date: Date) -> bool:
    _year, month, day = date
    return month is not None and 1 <= month <= 12 and (day is None or 1 <= day <= 31)


def _find_figures(text: str, taken: list[tuple[int, int]] | None = None) -> list[tuple[tuple[int, int], Figure]]:
    out = []
    for m in _NUMBER.finditer(text):
        if taken and not _outside(m.span(), taken):
            continue
        raw, decimals = _parse(m.group("num"))
        scale_word = (m.group("word") or m.group("letter") or "").strip().lower()
        out.append((m.span(), Figure(raw, decimals, _SCALES.get(scale_word, 1.0))))
    return out


def _parse(number: str) -> tuple[float, int]:
    """A written number's value and how many decimals it shows (as _NUMBER found it)."""
    spaced = re.search(r"[\u00a0\u202f\u2009]", number) is not None
    if re.fullmatch(r"\d{1,3}(?:\.\d{3})+,\d+", number) or (spaced and "," in number):
        whole, frac = number.rsplit(",", 1)  # 1.234,5 and 1 234,5: a decimal comma
    elif re.fullmatch(r"\d{1,3}(?:\.\d{3}){2,}", number):
        whole, frac = number, ""  # 1.234.567: dots group thousands
    elif "." in number:
        whole, frac = number.rsplit(".", 1)
    else:
        whole, frac = number, ""
    whole = re.sub(r"\D", "", whole)
    return float(f"{whole}.{frac}" if frac else whole), len(frac)


def _identifier_key(word: str) -> str:
    return re.sub(r"[-_/]", "", word).lower()


def _identifier_keys(word: str) -> set[str]:
    """A passage's identifier and its hyphen-joined runs: COVID-19-related also holds COVID-19."""
    parts = word.split("-")
    return {_identifier_key("".join(parts[i:j])) for i in range(len(parts)) for j in range(i + 1, len(parts) + 1)}


def _words(text: str) -> str:
    """Lower-case words between single spaces, and a space at each end (so a phrase matches whole words)."""
    return " " + " ".join(re.findall(r"\w+", text.replace("\u2019", "'").lower())) + " "


def _outside(span: tuple[int, int], taken: list[tuple[int, int]]) -> bool:
    return all(span[1] <= a or span[0] >= b for a, b in taken)


def _merge(parts: Iterable[Facts]) -> Facts:
    items = list(parts)
    return Facts(figures=[f for p in items for f in p.figures], dates=[d for p in items for d in p.dates],
                 identifiers={i for p in items for i in p.identifiers}, words="\n".join(p.words for p in items))
