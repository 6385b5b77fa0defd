"""The answer's figures checked against its passages (appliance/answer_check.py), in both directions: a
figure the passage states in another format is not flagged, a changed digit is."""

from __future__ import annotations

import pytest

from appliance.answer_check import unsupported_claims
from appliance.rag import Source

NBSP = "\u00a0"


def passage(text: str, number: int = 1, date: str = "", title: str = "") -> Source:
    return Source(number=number, path=f"/share/{number}.txt", file_name=f"{number}.txt", page=None, page_name=None,
                  section=[], score=1.0, dense_score=0.6, keyword_score=None, text=text, date=date, title=title)


SUPPORTED = [
    ("Revenue was 1,234.5 million.", "Revenue: 1234.5 million"),
    ("Revenue was 1234.5 million.", "Revenue: 1,234.5 million"),
    (f"Le total est de 1{NBSP}234,5 euros.", "The total is 1,234.5 euros."),
    ("Der Umsatz war 1.234,5 Euro.", "Revenue was 1234.5 euros."),
    ("It sold 1.234.567 units.", "It sold 1,234,567 units."),
    ("Sales reached $1.2 billion.", "Sales reached 1.2bn."),
    ("Sales reached 1.2bn.", "Sales reached $1,200 million."),
    ("Sales reached $1.2 billion.", "Sales reached $1,200,000,000."),
    ("Sales reached $1.23 billion.", "Sales reached $1,234,567,890."),  # rounded to the digits written
    ("Sales reached EUR 3.5 million.", "Sales (in millions of euros): 3.5"),  # a table in millions
    ("The fund holds $5m.", "The fund holds $5,000,000."),
    ("About 20k visitors came.", "20,000 visitors came."),
    ("Margins grew 12%.", "Margins grew 12 percent."),
    ("Margins grew 12.5 %.", "Margins grew by 12.5% over the year."),
    ("The pipe is 5 m long.", "The pipe is 5m long."),
    ("It closed on 30 June 2023.", "Closed: 2023-06-30."),
    ("It closed on June 30, 2023.", "Closed 30/06/2023."),
    ("It closed on 06/30/2023.", "It closed on 30 June 2023."),
    ("It closed on Jun 30th, 2023.", "It closed on 2023-06-30."),
    ("It closed on 30.06.2023.", "It closed on June 30, 2023."),
    ("It closed on 30/06/23.", "It closed on 30 June 2023."),
    ("It closed in June 2023.", "It closed on 30 June 2023."),  # says less than the passage: still true
    ("It closed in 2023.", "It closed on 2023-06-30."),
    ("It closed on June 30.", "It closed on 30 June 2023."),
    ("Order part ZX-4471.", "Spare part zx-4471 is in stock."),
    ("Cases of COVID-19 rose.", "COVID-19-related cases rose."),
    ("The CEO called it \u201ca merger of equals\u201d.", 'The CEO said: "A merger of equals."'),
    ('He said "the plan \u2026 will work".', "He said the plan, in the end, will work."),
    ("We delivered 20,000 bottles of water.", "20,000 bottles of water were delivered."),
]

UNSUPPORTED = [
    ("Revenue was 1,234.6 million.", "Revenue: 1,234.5 million", "1,234.6 million"),
    ("Sales reached $1.3 billion.", "Sales reached 1.2bn.", "1.3 billion"),
    ("Sales reached $1.2 million.", "Sales reached $1.2 billion.", "1.2 million"),
    ("It sold 1,234,567 units.", "It sold 1.2 million units.", "1,234,567"),  # digits the passage does not have
    ("We delivered 20,500 bottles.", "20,000 bottles were delivered.", "20,500"),
    ("We delivered 2,000 bottles.", "20,000 bottles were delivered.", "2,000"),
    ("Margins grew 13.5%.", "Margins grew 12.5%.", "13.5"),
    ("It closed on 30 June 2024.", "Closed: 2023-06-30.", "30 June 2024"),
    ("It closed on 29 June 2023.", "Closed: 2023-06-30.", "29 June 2023"),
    ("It closed on 06/30/2024.", "It closed on 30 June 2023.", "06/30/2024"),
    ("It closed in July 2023.", "It closed on 30 June 2023.", "July 2023"),
    ("Order part ZX-4417.", "Spare part ZX-4471 is in stock.", "ZX-4417"),
    ("See order PO-2024-11.", "See order PO-2024-118.", "PO-2024-11"),
    ("The CEO called it \u201ca merger of unequals\u201d.", 'The CEO said: "A merger of equals."',
     "\u201ca merger of unequals\u201d"),
]


@pytest.mark.parametrize(("answer", "text"), SUPPORTED)
def test_a_figure_the_passage_states_in_another_format_is_not_flagged(answer: str, text: str) -> None:
    assert unsupported_claims(answer, [passage(text)]) == []


@pytest.mark.parametrize(("answer", "text", "flagged"), UNSUPPORTED)
def test_a_changed_digit_date_or_word_is_flagged_as_written(answer: str, text: str, flagged: str) -> None:
    assert unsupported_claims(answer, [passage(text)]) == [flagged]


def test_a_cited_sentence_is_checked_against_the_passages_it_cites_only() -> None:
    sources = [passage("Berlin has 3,850,809 residents.", 1), passage("Paris has 2,102,650 residents.", 2)]
    # The figure is in passage 1, the sentence cites 2: a wrong citation is flagged.
    assert unsupported_claims("Berlin has 3,850,809 residents [2].", sources) == ["3,850,809"]
    assert unsupported_claims("Berlin has 3,850,809 residents [1].", sources) == []
    assert unsupported_claims("Both are big: 3,850,809 [1] and 2,102,650 [2].", sources) == []


def test_an_uncited_sentence_is_checked_against_every_passage() -> None:
    sources = [passage("Berlin has 3,850,809 residents.", 1), passage("Paris has 2,102,650 residents.", 2)]
    assert unsupported_claims("Paris has 2,102,650 residents.", sources) == []
    assert unsupported_claims("Paris has 2,102,651 residents.", sources) == ["2,102,651"]


def test_a_marker_after_the_full_stop_belongs_to_the_sentence_before_it() -> None:
    sources = [passage("The memo: 20,000 bottles.", 1), passage("Family day is on 14 June 2024.", 2)]
    answer = "20,000 bottles were delivered. [1] Family day is on 14 June 2024. [2]"
    assert unsupported_claims(answer, sources) == []
    assert unsupported_claims("Family day is on 14 June 2024. [1]", sources) == ["14 June 2024"]


def test_citation_markers_list_numbers_and_words_are_no_claims() -> None:
    sources = [passage("Install rustup, then run cargo.", 1)]
    answer = "Steps [1]:\n1. Install rustup.\n2. Run cargo.\n\nIt may take a minute; march on."
    assert unsupported_claims(answer, sources) == []


def test_the_passage_label_counts_as_what_the_model_read() -> None:
    sources = [passage("Quarterly figures follow.", 1, date="2024-03-31", title="ACME 10-Q Q1")]
    assert unsupported_claims("The report is dated March 31, 2024 [1].", sources) == []
    assert unsupported_claims("The report is dated March 30, 2024 [1].", sources) == ["March 30, 2024"]


def test_each_unsupported_claim_is_listed_once_in_order() -> None:
    sources = [passage("It costs 10 euros.")]
    answer = "It costs 12 euros, not 10. Again: 12 euros, and from 1 May 2020."
    assert unsupported_claims(answer, sources) == ["12", "1 May 2020"]


def test_nothing_is_checked_without_passages() -> None:
    assert unsupported_claims("It costs 12 euros.", []) == []


def test_a_fenced_code_block_is_no_claim() -> None:
    sources = [passage("Use TextFrame.add_paragraph() for bullets.")]
    answer = 'Use `TextFrame.add_paragraph()` [1]:\n```python\nfor i in range(10):\n    print("one...")\n```\nIn 2023.'
    assert unsupported_claims(answer, sources) == ["2023"]
