"""The whole flow on real documents: real parser, real embedder, real Qdrant engine, real small LLM.

The sample folder holds one real file of each supported format (samples/LICENSES.md).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, make_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FORMATS = {".pdf", ".docx", ".pptx", ".xlsx", ".csv", ".html", ".md", ".txt", ".eml", ".msg", ".epub", ".odt",
           ".rtf", ".xls"}
LEGACY = {".doc", ".ppt"}  # converted by LibreOffice when it is installed (scripts/setup.sh installs it)
HAS_SOFFICE = shutil.which("soffice") is not None


@pytest.fixture(scope="module")
def ingested(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    docs = tmp_path_factory.mktemp("docs") / "samples"
    shutil.copytree(SAMPLES, docs)
    services = make_services(tmp_path_factory.mktemp("data"))
    report = services.ingest_pipeline.run([docs])
    yield services, report, docs
    services.close()


def test_every_format_is_ingested(ingested: tuple[Any, Any, Path]) -> None:
    _, report, _docs = ingested
    by_suffix = {Path(f.path).suffix: f for f in report.files}
    assert set(by_suffix) >= FORMATS, f"samples miss formats: {FORMATS - set(by_suffix)}"
    problems = [(f.path, f.error) for f in report.files if f.status not in ("added", "skipped")]
    if HAS_SOFFICE:
        assert not problems
    else:
        assert {Path(p).suffix for p, _ in problems} <= LEGACY
        assert all("LibreOffice" in (e or "") for _, e in problems)
    for suffix in FORMATS | (LEGACY if HAS_SOFFICE else set()):
        assert (by_suffix[suffix].status, by_suffix[suffix].chunks > 0) == ("added", True), suffix
    # The license note is Markdown too: it is ingested like any document.
    assert report.count("failed") == (0 if HAS_SOFFICE else len(LEGACY))


def test_second_run_changes_nothing(ingested: tuple[Any, Any, Path]) -> None:
    services, report, docs = ingested
    before = services.store.count()
    again = services.ingest_pipeline.run([docs])
    assert again.count("unchanged") == len(report.files)
    assert services.store.count() == before == report.chunks


# (question, file the answer is in, page or None, a fact the answer must contain or None)
QUESTIONS = [
    ("How many bottles of water were delivered?", "fake-memo.pdf", 1, "20,000"),
    ("Which frameworks are existing deep learning models developed with?", "layout-parser-paper-fast.pdf", 2,
     "TensorFlow"),
    ("What activities are planned for the family day?", "family-day.eml", None, "face painting"),
    ("Which command line tool manages Rust versions?", "rust-book-installation.md", None, "rustup"),
    ("What was Anna Pavlovna Scherer's position?", "book-war-and-peace-1p.txt", None, "maid of honor"),
    ("What are all human beings endowed with?", "udhr-article-1.epub", None, None),
    ("In which state is Galaxy Gaming incorporated?", "example-10k-1p.html", None, None),
    ("How many Stanley Cups have the Maple Leafs won?", "stanley-cups.csv", None, None),
    ("Where do I find the mobile customers for the nine quarters to 30 June 2023?", "vodafone.xlsx", 1, None),
    ("Who is the leader on Friday and what color?", "fake.odt", None, None),
    ("What are a few of my favorite things? Parrots and hockey", "simple.docx", None, None),
    ("What is on the second content slide? Topic 1 subtopic", "sample-presentation.pptx", 3, None),
    ("What does the attachment include? Lots of whitespace", "fake-email-attachment.msg", None, None),
    ("My First Heading table example row 1 cell 1", "fake-doc.rtf", None, None),
    ("Blackboard question format abbreviations multiple choice", "tests-example.xls", 2, None),
    pytest.param("I am a bold italic bold-italic text", "fake-doc-emphasized-text.doc", None, None,
                 marks=pytest.mark.skipif(not HAS_SOFFICE, reason="no LibreOffice for .doc")),
    pytest.param("Use _TextFrame.add_paragraph() for subsequent bullets", "fake-power-point.ppt", 1, None,
                 marks=pytest.mark.skipif(not HAS_SOFFICE, reason="no LibreOffice for .ppt")),
]


@pytest.mark.parametrize(("question", "file_name", "page", "fact"), QUESTIONS,
                         ids=[getattr(q, "values", q)[1] for q in QUESTIONS])
def test_answers_cite_the_right_file_and_page(ingested: tuple[Any, Any, Path], question: str, file_name: str,
                                             page: int | None, fact: str | None) -> None:
    services, _, docs = ingested
    answer = services.rag.ask(question)
    assert answer.grounded, f"nothing relevant retrieved for {question!r}"
    top = answer.sources[0]
    assert top.file_name == file_name, [s.location for s in answer.sources]
    assert Path(top.path) == docs / file_name
    if page is not None:
        assert top.page == page
    if fact is not None:
        assert fact.lower() in top.text.lower()  # the model was given the passage with the fact
        assert fact.lower() in answer.text.lower(), answer.text
    # Citations point only at sources the model was given.
    assert all(1 <= n <= len(answer.sources) for n in answer.cited)


def test_streaming_yields_text_then_the_answer(ingested: tuple[Any, Any, Path]) -> None:
    from appliance.rag import Answer

    services, _, _ = ingested
    events = list(services.rag.stream("How many bottles of water were delivered?"))
    deltas = [e for e in events if isinstance(e, str)]
    assert len(deltas) > 1  # streamed, not one block
    assert isinstance(events[-1], Answer)
    assert "".join(deltas).strip() == events[-1].text


def test_unrelated_question_says_the_documents_do_not_answer(ingested: tuple[Any, Any, Path]) -> None:
    from appliance.rag import NOT_FOUND

    services, _, _ = ingested
    answer = services.rag.ask("What is the boiling point of liquid nitrogen in Kelvin?")
    assert not answer.grounded
    assert answer.text == NOT_FOUND
    assert len(answer.sources) <= 3  # the closest passages are still shown


def test_every_chunk_carries_its_citation_fields(ingested: tuple[Any, Any, Path]) -> None:
    services, _, docs = ingested
    hits = services.rag.retrieve("slides with topics and subtopics")
    assert hits
    for s in hits:
        assert Path(s.path).parent == docs
        assert s.doc_id
    pptx = [s for s in hits if s.file_name == "sample-presentation.pptx"]
    assert pptx
    assert all(s.page is not None for s in pptx)


def test_asking_an_empty_store_says_to_ingest_first(tmp_path: Path) -> None:
    from appliance.rag import NO_DOCUMENTS

    services = make_services(tmp_path / "data")
    try:
        answer = services.rag.ask("What is our travel policy?")
    finally:
        services.close()
    assert answer.text == NO_DOCUMENTS
    assert not answer.grounded
    assert answer.sources == []
