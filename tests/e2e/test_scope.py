"""Scoped questions with the real parts: real parser (metadata read from the files' own headers), real
embedder, the Qdrant engine in-process and the small LLM. Two filings that differ only in their year, and
e-mails that differ in their Date header: a scope picks the one asked about, inside the store query."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import SAMPLES, make_services

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

FILING = ("# ACME Corp quarterly report\n\nACME Corp, quarterly report for the quarter ended June 30, {year}.\n\n"
          "## Results of operations\n\nRevenue for the quarter ended June 30, {year} was {revenue} million dollars, "
          "driven by sales of industrial anvils and rocket skates.\n")
EMAIL = ("From: Mallori Harrell <mallori@example.com>\nTo: Everyone <all@example.com>\nSubject: Family Day {year}\n"
         "Date: {date}\nContent-Type: text/plain; charset=utf-8\n\nHi all, family day this year has face painting, "
         "a bouncy castle and a barbecue in the park. Bring the kids.\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Any, Any, Path]]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.usecases import run_ingest

    root = tmp_path_factory.mktemp("scope")
    docs = root / "share"
    for year, revenue in (("2023", "41.2"), ("2024", "57.9")):
        (docs / "finance" / year).mkdir(parents=True)
        (docs / "finance" / year / f"ACME 10-Q {year} Q2.md").write_text(FILING.format(year=year, revenue=revenue))
    (docs / "mail").mkdir()
    shutil.copy(SAMPLES / "family-day.eml", docs / "mail" / "family-day.eml")  # Date: 21 Dec 2022
    (docs / "mail" / "family-day-2024.eml").write_text(EMAIL.format(year=2024, date="Fri, 14 Jun 2024 09:00:00 +0200"))
    services = make_services(root / "data")
    report = run_ingest(services, [docs], "admin", "ingest", "cli")
    assert report.count("failed") == 0
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
        yield services, client, docs
    services.close()


def test_a_scoped_question_is_answered_from_the_chosen_year_only(site: tuple[Any, Any, Path]) -> None:
    _, client, docs = site
    question = "What was ACME's revenue for the quarter ended June 30?"
    for year, revenue in (("2023", "41.2"), ("2024", "57.9")):
        r = client.post("/v1/search", json={"query": question, "top_k": 5,
                                            "scope": {"folders": [str(docs / "finance" / year)]}})
        assert r.status_code == 200, r.text
        results = r.json()["results"]
        assert results
        assert all(Path(h["path"]).parent == docs / "finance" / year for h in results), year
        assert revenue in results[0]["text"]
    r = client.post("/v1/chat/completions", json={
        "model": "rag-appliance", "messages": [{"role": "user", "content": question}], "sources_in_text": False,
        "scope": {"folders": [str(docs / "finance" / "2023")], "file_types": ["md"]}})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grounded"], body
    assert all("/finance/2023/" in s["path"] for s in body["sources"])
    assert "41.2" in body["sources"][0]["text"]
    assert "57.9" not in body["choices"][0]["message"]["content"]  # the other year was never given to the model


def test_dates_come_from_the_documents_own_headers_and_narrow_to_whole_days(site: tuple[Any, Any, Path]) -> None:
    _, client, docs = site

    def found(scope: dict[str, Any]) -> list[str]:
        r = client.post("/v1/search", json={"query": "family day face painting", "top_k": 10, "scope": scope})
        assert r.status_code == 200, r.text
        return sorted({Path(h["path"]).name for h in r.json()["results"]})

    assert found({"date_from": "2022-12-21", "date_to": "2022-12-21"}) == ["family-day.eml"]
    assert found({"date_from": "2024-01-01", "file_types": ["eml"]}) == ["family-day-2024.eml"]
    assert found({"file_types": ["eml"], "folders": [str(docs / "finance")]}) == []
    # Markdown files carry no date of their own: a date range leaves them out.
    assert found({"date_to": "2030-12-31"}) == ["family-day-2024.eml", "family-day.eml"]
