"""Tables on text-layer PDF pages, read from pdfium's geometry: real statements, real layouts, broken files."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pypdfium2 as pdfium
import pytest

from ingest.chunk import table_rows
from ingest.pdf_tables import PageTable, find_tables, might_have_tables, page_tables, split_page, text_outside
from tests.conftest import CORPUS, ROOT

STATEMENTS = ROOT / "tests" / "fixtures" / "tables" / "galaxy-gaming-10k-2021-statements.pdf"
AUDITOR_REPORT, BALANCE_SHEET, INCOME_STATEMENT, CASH_FLOWS = range(4)
PDFS = CORPUS / "unstructured-example-docs" / "pdf"
needs_corpus = pytest.mark.skipif(not PDFS.is_dir(), reason="../shared/corpus not present")


@contextmanager
def opened(path: Path, index: int) -> Iterator[tuple[Any, Any]]:
    pdf = pdfium.PdfDocument(str(path))
    page = pdf[index]
    textpage = page.get_textpage()
    try:
        yield page, textpage
    finally:
        textpage.close()
        page.close()
        pdf.close()


def the_only_table(path: Path, index: int) -> PageTable:
    tables = page_tables(path, index)
    assert len(tables) == 1, [t.text() for t in tables]
    return tables[0]


def test_the_income_statement_is_one_table_with_each_line_item_and_its_figures_in_one_row() -> None:
    table = the_only_table(STATEMENTS, INCOME_STATEMENT)
    assert table.header
    assert table.rows[0] == ["", "2021", "2020"]
    assert ["Licensing fees", "$ 19,984,378", "$ 10,230,316"] in table.rows
    assert ["Total revenue", "19,984,378", "10,230,316"] in table.rows
    assert ["Net income (loss)", "2,111,812", "(2,208,887)"] in table.rows  # ")" drawn apart joins its figure
    assert ["Revenue:", "", ""] in table.rows  # a section label stays a row of its own
    assert "Total revenue | 19,984,378 | 10,230,316" in table.text().splitlines()
    assert "<th>2021</th>" in table.html()
    assert table_rows(table.html()) == table.rows  # what the chunker reads back


def test_a_line_item_wrapped_over_two_lines_stays_one_row_with_its_figures() -> None:
    table = the_only_table(STATEMENTS, BALANCE_SHEET)
    assert ["Accounts receivable, net of allowance of $348,695 and $145,000, respectively",
            "4,377,165", "2,493,254"] in table.rows
    assert ["Total assets", "$ 40,452,705", "$ 30,574,594"] in table.rows
    assert table.rows[0] == ["ASSETS", "2021", "2020"]


def test_the_cash_flow_statement_keeps_both_years_although_its_shading_skips_a_column() -> None:
    table = the_only_table(STATEMENTS, CASH_FLOWS)
    assert ["Depreciation and amortization", "2,858,991", "2,222,042"] in table.rows
    assert ["Net cash provided by (used in) operating activities", "6,003,576", "(1,633,132)"] in table.rows


def test_a_page_of_running_text_has_no_table() -> None:
    assert page_tables(STATEMENTS, AUDITOR_REPORT) == []


def test_the_text_outside_the_table_keeps_the_title_and_the_note_but_no_figure() -> None:
    with opened(STATEMENTS, INCOME_STATEMENT) as (page, textpage):
        tables = find_tables(page, textpage)
        pieces = split_page(textpage, tables)
        outside = text_outside(textpage, tables)
    assert [type(p) for p in pieces] == [str, PageTable, str]
    before, table, after = pieces
    assert "CONSOLIDATED STATEMENTS OF OPERATIONS" in str(before)
    assert "The accompanying notes are an integral part" in str(after)
    assert table is tables[0]
    assert "19,984,378" not in outside
    assert "Licensing fees" not in outside
    assert "CONSOLIDATED STATEMENTS OF OPERATIONS" in outside


def test_a_page_without_tables_is_its_whole_text() -> None:
    with opened(STATEMENTS, AUDITOR_REPORT) as (_, textpage):
        pieces = split_page(textpage, [])
        whole = textpage.get_text_range()
    assert len(pieces) == 1
    assert isinstance(pieces[0], str)
    assert pieces[0].split() == whole.split()


def test_broken_or_foreign_files_yield_no_tables_and_no_exception(tmp_path: Path) -> None:
    truncated = tmp_path / "truncated.pdf"
    truncated.write_bytes(STATEMENTS.read_bytes()[: STATEMENTS.stat().st_size // 3])
    garbage = tmp_path / "garbage.pdf"
    garbage.write_bytes(b"%PDF-1.7\n" + bytes(range(256)) * 40)
    encrypted = ROOT / "tests" / "fixtures" / "broken" / "encrypted.pdf"
    for path in (truncated, garbage, encrypted, tmp_path / "missing.pdf"):
        assert page_tables(path, 0) == []
    assert page_tables(STATEMENTS, 99) == []  # no such page
    assert find_tables(None, None) == []
    assert not might_have_tables(None, None)


def test_html_escapes_cell_text() -> None:
    table = PageTable(rows=[["Item", "R&D <net>"], ["a", "1"]], bbox=(0, 0, 1, 1), header=True)
    assert "<th>R&amp;D &lt;net&gt;</th>" in table.html()
    assert table_rows(table.html()) == table.rows


@needs_corpus
def test_two_ruled_tables_side_by_side_are_read_apart() -> None:
    tables = page_tables(PDFS / "korean-text-with-tables.pdf", 0)
    assert [t.rows[0] for t in tables] == [["업종", "적립 대상"], ["업종", "적립 대상"]]
    left, right = tables
    assert left.bbox[2] < right.bbox[0]
    # Rows drawn over several lines between two rules are one row each.
    assert ["온라인쇼핑몰", "삼성카드 쇼핑, G마켓, 옥션, 11번가, 인터파크, 쿠팡, 티몬, 위메프"] in left.rows
    assert ["편의점", "CU, GS25, 세븐일레븐, 미니스톱"] in right.rows


@needs_corpus
def test_a_header_over_two_lines_above_its_rule_is_one_header_row() -> None:
    table = the_only_table(PDFS / "embedded-images-tables.pdf", 0)
    assert table.header
    assert table.rows[0][0] == "Inhibitor concentration (g)"
    assert table.rows[0][5] == "Polarization resistance (Ω)"
    assert len(table.rows) == 7
    assert all(len(row) == 7 for row in table.rows)


@needs_corpus
def test_a_table_in_a_two_column_paper_is_found_and_the_code_listing_beside_it_is_not() -> None:
    table = the_only_table(PDFS / "layout-parser-paper-with-table.pdf", 0)
    assert ["TableBank [18]", "F", "F", "Table region on modern scientific and business document"] in table.rows


@needs_corpus
def test_pages_of_photos_boxes_and_columns_of_text_have_no_table() -> None:
    for index in range(3):
        assert page_tables(PDFS / "reliance.pdf", index) == []
