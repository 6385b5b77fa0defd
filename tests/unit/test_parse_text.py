"""Plain text: a first line standing alone is the title that heads every chunk."""

from __future__ import annotations

from pathlib import Path

from ingest.parse import parse_plain_text


def test_a_lone_first_line_becomes_the_title_of_every_paragraph(tmp_path: Path) -> None:
    path = tmp_path / "memo.txt"
    path.write_text("Parking rules 2024\n\nVisitors park in the north lot.\n\nStaff use the garage.\n")
    elements = parse_plain_text(path).elements
    assert [e.kind for e in elements] == ["Title", "NarrativeText", "NarrativeText"]
    assert all(e.section == ("Parking rules 2024",) for e in elements)


def test_no_title_when_the_first_paragraph_is_prose_or_alone(tmp_path: Path) -> None:
    prose = tmp_path / "prose.txt"
    prose.write_text("This letter spans\ntwo lines at first.\n\nThen a second paragraph.\n")
    assert all(e.section == () and e.kind == "NarrativeText" for e in parse_plain_text(prose).elements)
    single = tmp_path / "single.txt"
    single.write_text("Only one line here.\n")
    assert [e.kind for e in parse_plain_text(single).elements] == ["NarrativeText"]


def test_a_salutation_is_not_a_title(tmp_path: Path) -> None:
    letter = tmp_path / "letter.txt"
    letter.write_text("Dear John,\n\nThe parking rules change next week, see below.\n")
    assert all(e.section == () for e in parse_plain_text(letter).elements)
