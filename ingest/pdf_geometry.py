"""A PDF page's characters, lines, rules and boxes, read through pypdfium2's raw API for ingest/pdf_tables.py.

The text comes in three grains, each as cheap as its use allows: the page's text in one call, pdfium's text
runs (one tight rectangle per run, no per-character call) grouped into lines for the cheap check, and the
characters with pdfium's loose boxes for a page that passes it. Rules are the page's thin drawn paths and the
straight edges of its drawn boxes (cell shading), found inside form objects too; horizontal rules of about
the same width bound the areas that are read first, on their own. Coordinates are PDF points, y upwards.
"""

from __future__ import annotations

import ctypes
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

BBox = tuple[float, float, float, float]  # left, bottom, right, top, in PDF points (pypdfium2's coordinates)
Rule = tuple[float, float, float]  # (y, x0, x1) for a horizontal rule, (x, y0, y1) for a vertical one

RULE_MAX_THICKNESS = 2.5  # points: a drawn path thinner than this is a rule
RULE_MIN_LENGTH = 6.0
MAX_PATH_SEGMENTS = 5000  # a chart with more path segments than this is not read for rules


# -- rules: drawn paths ----------------------------------------------------------------------------------


@dataclass(slots=True)
class Rules:
    """The page's rules, each direction sorted, and the page's box."""

    horizontal: list[Rule] = field(default_factory=list)
    vertical: list[Rule] = field(default_factory=list)
    page: BBox = (0.0, 0.0, 0.0, 0.0)
    heights: list[float] = field(default_factory=list)  # of the horizontal rules, which are sorted by height
    lefts: list[float] = field(default_factory=list)  # of the vertical rules, sorted likewise


def page_rules(page: Any) -> Rules:
    """Horizontal and vertical rules: thin paths, and the straight edges of drawn boxes (cell shading)."""
    import pypdfium2.raw as pdfium_c

    found = Rules(page=page.get_bbox())
    budget = [MAX_PATH_SEGMENTS]
    left, bottom, right, top, width = (ctypes.c_float() for _ in range(5))
    fill, stroke = ctypes.c_int(), ctypes.c_int()
    matrix = pdfium_c.FS_MATRIX()

    def add(x0: float, y0: float, x1: float, y1: float) -> None:
        if abs(y1 - y0) <= RULE_MAX_THICKNESS and abs(x1 - x0) >= RULE_MIN_LENGTH:
            found.horizontal.append(((y0 + y1) / 2, min(x0, x1), max(x0, x1)))
        elif abs(x1 - x0) <= RULE_MAX_THICKNESS and abs(y1 - y0) >= RULE_MIN_LENGTH:
            found.vertical.append(((x0 + x1) / 2, min(y0, y1), max(y0, y1)))

    def own_matrix(obj: Any, outer: tuple[float, ...]) -> tuple[float, ...] | None:
        if not pdfium_c.FPDFPageObj_GetMatrix(obj, matrix):
            return None
        return _compose((matrix.a, matrix.b, matrix.c, matrix.d, matrix.e, matrix.f), outer)

    def walk(objects: Iterator[Any], outer: tuple[float, ...]) -> None:
        for obj in objects:
            kind = pdfium_c.FPDFPageObj_GetType(obj)
            if kind == pdfium_c.FPDF_PAGEOBJ_FORM and (inner := own_matrix(obj, outer)):
                n = pdfium_c.FPDFFormObj_CountObjects(obj)
                walk((pdfium_c.FPDFFormObj_GetObject(obj, k) for k in range(max(n, 0))), inner)
            if kind != pdfium_c.FPDF_PAGEOBJ_PATH or budget[0] <= 0:
                continue
            if not pdfium_c.FPDFPath_GetDrawMode(obj, fill, stroke) or not (fill.value or stroke.value):
                continue  # a clipping path: nothing is drawn
            if not pdfium_c.FPDFPageObj_GetBounds(obj, left, bottom, right, top):
                continue
            (x0, y0), (x1, y1) = _apply(outer, left.value, bottom.value), _apply(outer, right.value, top.value)
            if min(abs(x1 - x0), abs(y1 - y0)) <= RULE_MAX_THICKNESS:
                add(x0, y0, x1, y1)
                budget[0] -= 1
            elif own := own_matrix(obj, outer):
                pen = 0.0
                if stroke.value and pdfium_c.FPDFPageObj_GetStrokeWidth(obj, width):
                    pen = width.value * abs(own[0] * own[3] - own[1] * own[2]) ** 0.5
                _path_edges(obj, own, pen, add, budget)

    n = pdfium_c.FPDFPage_CountObjects(page.raw)
    walk((pdfium_c.FPDFPage_GetObject(page.raw, k) for k in range(max(n, 0))), (1.0, 0.0, 0.0, 1.0, 0.0, 0.0))
    found.horizontal, found.vertical = sorted(_merged(found.horizontal)), sorted(_merged(found.vertical))
    found.heights, found.lefts = [r[0] for r in found.horizontal], [r[0] for r in found.vertical]
    return found


def _path_edges(obj: Any, m: tuple[float, ...], pen: float, add: Callable[..., None], budget: list[int]) -> None:
    """The straight, axis-aligned edges of a path (the sides of a box, a grid drawn as one path), as wide
    as the pen: some generators draw a vertical rule as a dot-long stroke of a pen as wide as the rule is
    long."""
    import pypdfium2.raw as pdfium_c

    n = pdfium_c.FPDFPath_CountSegments(obj)
    if n <= 0 or n > budget[0]:
        budget[0] = 0 if n > budget[0] else budget[0]
        return
    budget[0] -= n
    x, y = ctypes.c_float(), ctypes.c_float()
    start = prev = (0.0, 0.0)
    for k in range(n):
        seg = pdfium_c.FPDFPath_GetPathSegment(obj, k)
        if not seg or not pdfium_c.FPDFPathSegment_GetPoint(seg, x, y):
            continue
        point = _apply(m, x.value, y.value)
        kind = pdfium_c.FPDFPathSegment_GetType(seg)
        ends = [(prev, point)] if kind == pdfium_c.FPDF_SEGMENT_LINETO else []
        start = point if kind == pdfium_c.FPDF_SEGMENT_MOVETO else start
        ends += [(point, start)] if pdfium_c.FPDFPathSegment_GetClose(seg) else []
        for a, b in ends:
            if abs(a[1] - b[1]) <= 0.5:
                add(a[0], a[1] - pen / 2, b[0], b[1] + pen / 2)
            elif abs(a[0] - b[0]) <= 0.5:
                add(a[0] - pen / 2, a[1], b[0] + pen / 2, b[1])
        prev = point


def _compose(inner: tuple[float, ...], outer: tuple[float, ...]) -> tuple[float, ...]:
    a, b, c, d, e, f = inner
    p, q, r, s, t, u = outer
    return (a * p + b * r, a * q + b * s, c * p + d * r, c * q + d * s, e * p + f * r + t, e * q + f * s + u)


def _apply(m: tuple[float, ...], x: float, y: float) -> tuple[float, float]:
    return (m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5])


def _merged(pieces: list[Rule]) -> list[Rule]:
    """Collinear pieces that (nearly) touch joined into one rule: a shaded row is drawn cell by cell."""
    out: list[list[float]] = []
    for at, lo, hi in sorted(pieces, key=lambda r: (round(r[0]), r[1])):
        if out and abs(out[-1][0] - at) <= 1 and lo <= out[-1][2] + 5:
            out[-1][2] = max(out[-1][2], hi)
        else:
            out.append([at, lo, hi])
    return [(a, lo, hi) for a, lo, hi in out]


def ruled_areas(rules: Rules) -> list[BBox]:
    """Boxes bounded by two or more horizontal rules of about the same extent, smallest first."""
    groups: list[list[Rule]] = []
    for rule in sorted(rules.horizontal, key=lambda r: -r[0]):
        group = next((g for g in groups if min(g[-1][2], rule[2]) - max(g[-1][1], rule[1])
                      >= 0.7 * (max(g[-1][2], rule[2]) - min(g[-1][1], rule[1]))), None)
        if group is None:
            groups.append([rule])
        else:
            group.append(rule)
    groups = [g for g in groups if len(g) >= 2 and g[0][0] - g[-1][0] > 2]
    # Rules at the same heights on both sides of a gap are one table whose shading skips a spacer column.
    a = 0
    while a < len(groups):
        for b in range(a + 1, len(groups)):
            small, big = sorted((groups[a], groups[b]), key=len)
            if sum(any(abs(r[0] - q[0]) <= 1.5 for q in big) for r in small) >= 0.8 * len(small):
                groups[a] = sorted(groups[a] + groups.pop(b), key=lambda r: -r[0])
                break
        else:
            a += 1
    # Padded: the straight part of a box's edge stops short of its rounded corners.
    boxes = [(min(r[1] for r in g) - 10, g[-1][0] - 1, max(r[2] for r in g) + 10, g[0][0] + 1) for g in groups]
    return sorted(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))


# -- text: characters and runs ---------------------------------------------------------------------------


@dataclass(slots=True)
class Char:
    """A character and its loose box."""

    x0: float
    y0: float
    x1: float
    y1: float
    cy: float
    text: str
    space_before: bool  # pdfium put a space (its own or a generated one) before it


def page_chars(raw: Any) -> list[Char]:
    """The page's characters that have a box, in text order; a space marks the next one's space_before."""
    import pypdfium2.raw as pdfium_c

    text = page_text(raw, pdfium_c.FPDFText_CountChars(raw))
    rect = pdfium_c.FS_RECTF()
    get_box = pdfium_c.FPDFText_GetLooseCharBox
    out: list[Char] = []
    space = True
    for i, ch in enumerate(text):
        if ch in "\x02\ufffe\0":  # pdfium's marks of a word hyphenated at a line's end; nothing
            continue
        if not ch.strip():
            space = True
        elif get_box(raw, i, rect) and rect.right > rect.left and rect.top - rect.bottom > 0.5:
            out.append(Char(rect.left, rect.bottom, rect.right, rect.top, (rect.bottom + rect.top) / 2, ch, space))
            space = False
    return out


def page_text(raw: Any, count: int) -> str:
    """The page's text, one character per character index (beyond the BMP: one call per character)."""
    import pypdfium2.raw as pdfium_c

    buffer = (ctypes.c_ushort * (count + 1))()
    written = pdfium_c.FPDFText_GetText(raw, 0, count, buffer)
    text = bytes(buffer)[: max(written - 1, 0) * 2].decode("utf-16-le", errors="replace")
    if len(text) == count:
        return text
    return "".join(chr(c) if 0 < (c := pdfium_c.FPDFText_GetUnicode(raw, i)) < 0x110000 else "\0"
                   for i in range(count))


def run_lines(raw: Any) -> list[tuple[float, float, list[BBox]]]:
    """pdfium's text runs (tight boxes), grouped into lines: (middle, tallest run's height, runs left to
    right)."""
    import pypdfium2.raw as pdfium_c

    left, top, right, bottom = ctypes.c_double(), ctypes.c_double(), ctypes.c_double(), ctypes.c_double()
    runs = []
    for k in range(pdfium_c.FPDFText_CountRects(raw, 0, -1)):
        # Thin runs are kept: an em dash is a run a fraction of a point high, and a gap would open without it.
        if pdfium_c.FPDFText_GetRect(raw, k, left, top, right, bottom) and right.value > left.value:
            runs.append((left.value, bottom.value, right.value, top.value))
    runs.sort(key=lambda r: -(r[1] + r[3]))
    lines = []
    i = 0
    while i < len(runs):
        line = [runs[i]]
        i += 1
        while i < len(runs) and (runs[i][1] + runs[i][3]) / 2 >= line[0][1]:
            line.append(runs[i])
            i += 1
        lines.append(((line[0][1] + line[0][3]) / 2, max(r[3] - r[1] for r in line), sorted(line)))
    return lines

