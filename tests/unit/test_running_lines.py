"""Running headers and footers (ingest.running) on page texts shaped like real documents: the body lines are
those of samples/book-war-and-peace-1p.txt (Project Gutenberg, public domain), so no two pages share them."""

from __future__ import annotations

from pathlib import Path

from ingest.running import drop_running_lines, line_key, running_keys

_BOOK = Path(__file__).resolve().parents[2] / "samples" / "book-war-and-peace-1p.txt"
LINES = [s for line in _BOOK.read_text(encoding="utf-8").splitlines() if len(s := line.strip()) > 40]


def body(page: int, n: int = 2) -> list[str]:
    """n lines of the book that no other page has."""
    return LINES[page * n: page * n + n]


def _report(pages: int, header: str = "ACME Corp - Internal - Confidential") -> list[list[str]]:
    """A report whose every page starts with a running title and ends with 'Page n of N'."""
    return [[header, *body(i), f"Page {i} of {pages}"] for i in range(1, pages + 1)]


def _text(pages: list[list[str]]) -> list[list[str]]:
    return [["\n".join(lines)] for lines in pages]


def test_page_numbers_fold_into_one_line() -> None:
    assert line_key("Page 3 of 40") == line_key("Page 14 of 40") == "page # of #"
    assert line_key("Cat. No. 28171E (12-12-2022) Internal Revenue Manual 2.3.59") == \
        "cat. no. #e (#) internal revenue manual #"
    assert line_key("iv") == line_key("12") == "#"


def test_a_running_title_and_page_footer_are_dropped_after_their_first_page() -> None:
    pages, dropped = drop_running_lines(_text(_report(5)))
    assert pages[0] == ["\n".join(_report(5)[0])]  # the first page keeps them: it may be the only place naming it
    for text, original in zip(pages[1:], _report(5)[1:], strict=True):
        assert text == ["\n".join(original[1:3])]
    assert dropped[1] == ["ACME Corp - Internal - Confidential", "Page 2 of 5"]
    assert sorted(dropped) == [1, 2, 3, 4]


def test_a_line_on_2_of_40_pages_is_kept() -> None:
    pages = _report(40, header="")
    pages = [[line for line in page if line] for page in pages]
    pages[4].insert(0, "Appendix B: travel claims")
    pages[30].insert(0, "Appendix B: travel claims")
    assert line_key("Appendix B: travel claims") not in running_keys(pages)
    assert "page # of #" in running_keys(pages)


def test_two_pages_are_too_few_to_tell_a_header_from_a_duplicated_page() -> None:
    memo = ["May 5, 2023", "To Whom it May Concern:", "20,000 bottles of water were delivered.", "Mallori"]
    assert running_keys([memo, memo]) == set()


def test_long_lines_and_lines_in_the_middle_of_pages_are_content() -> None:
    sentence = "All amounts are in thousands of euros unless stated otherwise, as in every table of this report, too."
    pages = []
    for i in range(3):
        text = body(i, 13)
        pages.append([f"Q3 report, page {i + 1}", *text[:6], "Note", *text[6:], sentence])
    keys = running_keys(pages)
    assert keys == {"q# report, page #"}  # "Note" sits mid-page; the last line is over MAX_CHARS


def test_alternating_running_heads_of_a_book_are_found() -> None:
    pages = []
    for i in range(1, 13):
        head = f"{i} Chapter Two: Budgets" if i % 2 == 0 else f"Annual Report 2024 {i}"
        pages.append([head, *body(i)])
    assert running_keys(pages) == {"# chapter two: budgets", "annual report # #"}


def test_tables_and_blank_lines_pass_untouched() -> None:
    table = object()  # a PageTable: its header row is the table's own, repeated on purpose
    pages = [[f"Handbook\n\n{body(i)[0]}\n{body(i)[1]}", table] for i in range(1, 5)]
    out, dropped = drop_running_lines(pages)
    assert out[2] == [f"\n{body(3)[0]}\n{body(3)[1]}", table]
    assert dropped == {1: ["Handbook"], 2: ["Handbook"], 3: ["Handbook"]}


def test_a_page_drops_its_running_number_once_and_keeps_other_numbers() -> None:
    pages = [[body(i)[0], "1995", "2004", body(i)[1], str(i)] for i in range(1, 8)]
    out, _ = drop_running_lines([["\n".join(p)] for p in pages])
    assert out[3] == ["\n".join(pages[3][:4])]  # the page number (last line) goes; the years stay
