"""Document metadata, carried everywhere: read from the files' own properties by the real parsers, kept
in the manifest and the payload, shown by `docs list` and /v1/documents, indexed with every chunk, and
given to the model as each passage's label."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ingest.metadata import DocumentMeta, from_html, from_zip_properties, pdf_date, with_title
from ingest.parse import parse_file
from tests.fakes import HashEmbedding, ScriptedLLM

SAMPLES = Path(__file__).parents[2] / "samples"


def test_pdf_dates_and_placeholder_titles() -> None:
    assert pdf_date("D:20240331120000+02'00'") == "2024-03-31T12:00:00"
    assert pdf_date("D:2023") == "2023-01-01T00:00:00"
    assert pdf_date("yesterday") == ""
    assert pdf_date("D:20241399") == ""  # month 13: not a date
    for placeholder in ("Untitled", "Microsoft Word - Q3 draft.docx", "Title Slide", "http://intranet/x"):
        assert with_title(DocumentMeta(), placeholder, Path("/s/q3_report.pdf")).title == "q3 report"
    assert with_title(DocumentMeta(title="Annual Report 2024"), "Contents", Path("/s/x.pdf")).title == \
        "Annual Report 2024"


def test_each_format_gives_what_it_carries() -> None:
    memo = parse_file(SAMPLES / "fake-memo.pdf").meta
    assert memo.created.startswith("2023-05-16")
    docx = parse_file(SAMPLES / "simple.docx").meta
    assert (docx.author, docx.created[:10]) == ("python-docx", "2013-12-23")
    mail = parse_file(SAMPLES / "family-day.eml").meta
    assert mail.title == mail.subject == "Family Day"
    assert "mallori@unstructured.io" in mail.email_from
    assert mail.email_date.startswith("2022-12-21")
    assert mail.date == "2022-12-21"
    msg = parse_file(SAMPLES / "fake-email-attachment.msg").meta
    assert msg.subject == "Fake email with attachment"
    assert parse_file(SAMPLES / "rust-book-installation.md").meta.title == "Installation"  # the first heading


def test_office_and_html_properties(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.core_properties.title = "Travel Policy 2025"
    document.core_properties.author = "HR Department"
    document.add_paragraph("Employees book trains for trips under 500 km.")
    document.save(str(tmp_path / "policy.docx"))
    meta = from_zip_properties(tmp_path / "policy.docx")
    assert (meta.title, meta.author) == ("Travel Policy 2025", "HR Department")
    (tmp_path / "page.html").write_text("<html><head><title>Q3 results</title><meta name='author' content='IR team'>"
                                        "<meta name='dcterms.modified' content='2024-10-30'></head><body>x</body>")
    page = from_html(tmp_path / "page.html")
    assert (page.title, page.author, page.modified) == ("Q3 results", "IR team", "2024-10-30T00:00:00")
    (tmp_path / "broken.docx").write_bytes(b"PK\x03\x04 not really a zip")
    assert from_zip_properties(tmp_path / "broken.docx") == DocumentMeta()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, ScriptedLLM]]:
    from appliance.services import build_services
    from appliance.settings import load_settings
    from appliance.usecases import run_ingest

    tmp_path = tmp_path_factory.mktemp("site")
    docs = tmp_path / "share"
    docs.mkdir()
    shutil.copy(SAMPLES / "family-day.eml", docs)
    import docx

    report = docx.Document()  # its title is a property only: the text never names the company
    report.core_properties.title = "NVIDIA quarterly report, Q3 fiscal 2025"
    report.add_heading("Revenue", level=1)
    report.add_paragraph("Revenue was a record for the quarter, driven by data center sales.")
    report.save(str(docs / "q3.docx"))
    llm = ScriptedLLM()
    settings = load_settings(overrides={"data_dir": tmp_path / "data", "retrieval": {"min_similarity": 0.0},
                                        "llm": {"passage_labels": "full"}})
    services = build_services(settings, embedding=HashEmbedding(), llm=llm)
    run_ingest(services, [docs], "admin", "ingest", "cli")
    yield services, llm
    services.close()


def test_the_manifest_the_list_and_the_api_show_each_documents_metadata(site: Any) -> None:
    from click.testing import CliRunner
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.cli import main

    services, _ = site
    mail = next(r for r in services.manifest.all() if r.path.endswith("family-day.eml"))
    assert mail.meta["subject"] == "Family Day"
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
        docs = client.get("/v1/documents").json()["documents"]
    listed = {Path(d["path"]).name: d for d in docs}
    assert listed["family-day.eml"]["title"] == "Family Day"
    assert listed["family-day.eml"]["email_date"].startswith("2022-12-21")
    assert listed["q3.docx"]["title"] == "NVIDIA quarterly report, Q3 fiscal 2025"
    out = CliRunner().invoke(main, ["docs", "list", "--json", "--data-dir", str(services.settings.data_dir)])
    assert out.exit_code == 0, out.output
    assert {r["title"] for r in json.loads(out.output)} == {"Family Day", "NVIDIA quarterly report, Q3 fiscal 2025"}


def test_the_model_is_told_each_passages_document_page_section_and_date(site: Any) -> None:
    from appliance.access.auth import LOCAL
    from appliance.rag import Answer
    from appliance.usecases import answer

    services, llm = site
    llm.enqueue("Family Day is on the calendar [1].")
    final = [e for e in answer(services, LOCAL, "When is family day at the office?", [], "cli")
             if isinstance(e, Answer)][-1]
    assert final.sources[0].title == "Family Day"
    assert final.sources[0].date == "2022-12-21"
    prompt = llm.prompts[-1][-1].content or ""
    assert "[1] Family Day — 2022-12-21\n" in prompt


def test_a_question_naming_only_the_title_finds_the_documents_chunks_by_keyword(site: Any) -> None:
    """The report's text never says NVIDIA: its chunk is found by the title that heads it in the index."""
    services, _ = site
    hits = services.store.search(services.embedding.get_query_embedding("NVIDIA"), "NVIDIA", limit=5,
                                 candidates=20, groups=None)
    texts = [str(h.payload.get("text")) for h in hits if h.keyword_score]
    assert any("Revenue was a record" in t for t in texts), texts
