"""Chunking logic, measured with the real embedding tokenizer."""

from __future__ import annotations

import pytest

from appliance.backends.embeddings import build_token_counter
from ingest.chunk import Chunker, table_rows
from ingest.parse import Element


@pytest.fixture(scope="module")
def counter():  # type: ignore[no-untyped-def]
    return build_token_counter()


def chunker(counter, tokens: int = 64) -> Chunker:  # type: ignore[no-untyped-def]
    return Chunker(counter.count, counter.tokens, chunk_tokens=tokens, overlap_tokens=8)


def test_small_elements_of_one_section_share_a_chunk(counter) -> None:  # type: ignore[no-untyped-def]
    els = [
        Element("Introduction", "Title", page=1, section=("Introduction",)),
        Element("The plant opened in 1998.", "NarrativeText", page=1, section=("Introduction",)),
        Element("It employs 40 people.", "NarrativeText", page=1, section=("Introduction",)),
    ]
    chunks = chunker(counter).chunk(els)
    assert len(chunks) == 1
    assert chunks[0].text == "Introduction\nThe plant opened in 1998.\nIt employs 40 people."
    assert chunks[0].section == ("Introduction",)
    assert chunks[0].kinds == ("Title", "NarrativeText")


def test_chunks_never_cross_pages_or_sections(counter) -> None:  # type: ignore[no-untyped-def]
    els = [
        Element("alpha", "NarrativeText", page=1, section=("A",)),
        Element("beta", "NarrativeText", page=2, section=("A",)),
        Element("gamma", "NarrativeText", page=2, section=("A", "B")),
    ]
    chunks = chunker(counter).chunk(els)
    assert [(c.page, c.section, c.text) for c in chunks] == [
        (1, ("A",), "alpha"), (2, ("A",), "beta"), (2, ("A", "B"), "gamma"),
    ]
    assert [c.index for c in chunks] == [0, 1, 2]


def test_long_text_is_split_within_the_token_budget(counter) -> None:  # type: ignore[no-untyped-def]
    sentence = "The quarterly maintenance of the cooling system is scheduled by the facilities team. "
    el = Element(sentence * 40, "NarrativeText", page=3)
    chunks = chunker(counter, tokens=64).chunk([el])
    assert len(chunks) > 5
    assert all(counter.count(c.text) <= 64 for c in chunks)
    assert all(c.page == 3 for c in chunks)


def test_a_table_that_fits_stays_whole_and_alone(counter) -> None:  # type: ignore[no-untyped-def]
    html = "<table><tr><td>Team</td><td>Cups</td></tr><tr><td>Blues</td><td>1</td></tr></table>"
    els = [
        Element("Before the table.", "NarrativeText"),
        Element("Team Cups Blues 1", "Table", table_html=html),
        Element("After the table.", "NarrativeText"),
    ]
    chunks = chunker(counter).chunk(els)
    assert [c.text for c in chunks] == ["Before the table.", "| Team | Cups |\n| Blues | 1 |", "After the table."]
    assert chunks[1].kinds == ("Table",)


def test_a_large_table_is_cut_between_rows_repeating_the_header(counter) -> None:  # type: ignore[no-untyped-def]
    rows = "".join(f"<tr><td>site {i}</td><td>{i * 7} kWh</td></tr>" for i in range(60))
    html = f"<table><tr><th>Site</th><th>Consumption</th></tr>{rows}</table>"
    chunks = chunker(counter, tokens=64).chunk([Element("x", "Table", table_html=html)])
    assert len(chunks) > 3
    for c in chunks:
        lines = c.text.split("\n")
        assert lines[0] == "| Site | Consumption |"
        assert len(lines) > 1
        assert counter.count(c.text) <= 64
    body = [line for c in chunks for line in c.text.split("\n")[1:]]
    assert body == [f"| site {i} | {i * 7} kWh |" for i in range(60)]  # every row once, in order


@pytest.mark.parametrize("layout", ["one cell", "a huge header"])
def test_a_table_of_one_long_row_or_a_huge_header_loses_no_text(counter, layout: str) -> None:  # type: ignore[no-untyped-def]
    """An HTML mail laid out in one table cell (unstructured-example-docs' email-replace-mime-encodings-
    error-3.eml) made no chunk at all, and the file failed with "no text found"."""
    words = [f"word{i}" for i in range(400)]
    cell = f"<td>{' '.join(words)}</td>"
    html = (f"<table><tr>{cell}</tr></table>" if layout == "one cell"
            else f"<table><tr>{cell}</tr><tr><td>Blues</td></tr><tr><td>STL</td></tr></table>")
    chunks = chunker(counter, tokens=64).chunk([Element(" ".join(words), "Table", table_html=html)])
    assert len(chunks) > 5
    assert all(counter.count(c.text) <= 64 for c in chunks)
    found = set(" ".join(c.text for c in chunks).replace("|", " ").split())
    assert set(words) <= found  # every word kept
    assert layout == "one cell" or {"Blues", "STL"} <= found


def test_table_rows_from_html() -> None:
    assert table_rows("<table><tr><th> A </th><td>b  c</td></tr></table>") == [["A", "b c"]]
    assert table_rows("not a table") == []
