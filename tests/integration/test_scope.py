"""Scoped questions (issue 19): folders, documents, file types and dates narrow /v1/search, /v1/chat/completions,
the use case `answer` and `appliance ask --in` inside the store query, next to the reader's groups. On the
in-process API with a hash embedder and a scripted model (tests/fakes.py); the real embedder answers a scoped
question in tests/e2e/test_scope.py."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from tests.fakes import HashEmbedding, ScriptedLLM

PASSWORD = "Tulip-Harbor-9921"
QUESTION = "quarterly revenue growth figures"
BETTER = "Quarterly revenue growth figures: the quarterly revenue growth figures beat every forecast."


@dataclass
class Site:
    services: Any
    llm: ScriptedLLM
    client: Any
    docs: Path
    keys: dict[str, str]  # user -> API key

    def search(self, user: str, scope: dict[str, Any] | None, top_k: int = 3, query: str = QUESTION) -> Any:
        body: dict[str, Any] = {"query": query, "top_k": top_k} | ({"scope": scope} if scope is not None else {})
        return self.post("/v1/search", user, body)

    def post(self, url: str, user: str, body: dict[str, Any]) -> Any:
        # Encoded here, ASCII-escaped: a lone surrogate is valid JSON that an HTTP client's UTF-8 refuses to send.
        return self.client.post(url, content=json.dumps(body), headers={
            "authorization": f"Bearer {self.keys[user]}", "content-type": "application/json"})

    def paths(self, user: str, scope: dict[str, Any] | None, top_k: int = 3) -> list[str]:
        r = self.search(user, scope, top_k)
        assert r.status_code == 200, r.text
        return [hit["path"] for hit in r.json()["results"]]

    def chat(self, user: str, scope: dict[str, Any] | None, question: str = QUESTION, **extra: Any) -> Any:
        body = {"model": "rag-appliance", "messages": [{"role": "user", "content": question}], **extra}
        if scope is not None:
            body["scope"] = scope
        return self.post("/v1/chat/completions", user, body)

    def doc_id(self, relative: str) -> str:
        from ingest.points import doc_id_of

        return doc_id_of(str(self.docs / relative))

    def audit(self, event: str) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for path in sorted((self.services.settings.data_dir / "audit").glob("audit*.jsonl")):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [e for e in lines if e["event"] == event]


def _html(title: str, modified: str | None, text: str) -> str:
    meta = f'<meta name="dcterms.modified" content="{modified}">' if modified else ""
    return f"<html><head><title>{title}</title>{meta}</head><body><p>{text}</p></body></html>"


def write_share(docs: Path) -> None:
    files = {f"sales/pitch{i}.md": f"# Pitch {i}\n\n{BETTER}\n" for i in range(6)}
    files |= {
        "finance/2023/q1.md": "# Ledger Q1\n\nRevenue figures of the first quarter of 2023 were flat.\n",
        "finance/2023/q2.md": "# Ledger Q2\n\nRevenue figures of the second quarter of 2023 rose a little.\n",
        "finance/2023/q3.md": "# Ledger Q3\n\nRevenue figures of the third quarter of 2023 fell.\n",
        "finance/2023/notes.txt": "Notes on the revenue figures, kept in plain text.\n",
        "finance-archive/old.md": f"# Archive\n\n{BETTER} From the archive.\n",
        "hr/salaries.md": f"# Salaries\n\n{BETTER} The HR salary file, reference PELICAN-7731.\n",
        "mail/june.html": _html("June revenue", "2024-06-30T22:15:00Z", "Revenue figures for June were good."),
        "mail/july.html": _html("July revenue", "2024-07-01T08:00:00Z", "Revenue figures for July were better."),
        "mail/undated.html": _html("Undated revenue", None, "Revenue figures without a date."),
    }
    for name, text in files.items():
        (docs / name).parent.mkdir(parents=True, exist_ok=True)
        (docs / name).write_text(text)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    from fastapi.testclient import TestClient

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings
    from appliance.usecases import run_ingest

    root = tmp_path_factory.mktemp("scope")
    docs = root / "share"
    write_share(docs)
    llm = ScriptedLLM()
    # Few candidates: the six better-matching sales pitches fill them all, so a scope applied after
    # retrieval would find nothing of the finance folder; applied in the query, it fills top_k from there.
    settings = load_settings(overrides={
        "data_dir": root / "data", "retrieval": {"min_similarity": 0.1, "candidates": 4},
        "acl": [{"path": str(docs / "hr"), "groups": ["hr"]}]})
    services = build_services(settings, embedding=HashEmbedding(), llm=llm)
    report = run_ingest(services, [docs], "admin", "ingest", "cli")
    assert report.count("failed") == 0
    services.users.add("erin", PASSWORD, groups=["eng"])
    services.users.add("hanna", PASSWORD, groups=["hr"])
    keys = {name: services.api_keys.create(f"{name}-key", user=name) for name in ("erin", "hanna")}
    with TestClient(create_app(services, ui=False), base_url="http://127.0.0.1:7860") as client:
        yield Site(services, llm, client, docs, keys)
    services.close()


def under(site: Site, folder: str, paths: list[str]) -> bool:
    return all(Path(p).is_relative_to(site.docs / folder) for p in paths)


def test_a_folder_scope_is_part_of_the_store_query_and_still_fills_top_k(site: Site) -> None:
    # As many as the store's candidates: a filter applied to them afterwards would keep none.
    unscoped = site.paths("erin", None, top_k=site.services.settings.retrieval.candidates)
    assert len(unscoped) == 4
    assert not any("finance/2023" in p for p in unscoped)  # better matches lie outside
    scoped = site.paths("erin", {"folders": [str(site.docs / "finance" / "2023")]})
    assert len(scoped) == 3
    assert under(site, "finance/2023", scoped)


def test_a_folder_matches_whole_folder_names_with_its_subfolders_however_it_is_written(site: Site) -> None:
    expected = sorted(site.paths("erin", {"folders": [str(site.docs / "finance")]}, top_k=20))
    assert len(expected) == 4
    assert under(site, "finance", expected)
    for written in (f"{site.docs}/finance/", f"{site.docs}/sales/../finance", f"/{site.docs}//finance/./"):
        assert sorted(site.paths("erin", {"folders": [written]}, top_k=20)) == expected, written


def test_a_file_path_or_a_document_id_names_one_document_and_where_kinds_add_up(site: Site) -> None:
    assert site.paths("erin", {"folders": [str(site.docs / "finance/2023/q2.md")]}) == [
        str(site.docs / "finance/2023/q2.md")]
    assert site.paths("erin", {"documents": [site.doc_id("finance/2023/q3.md").upper()]}) == [
        str(site.docs / "finance/2023/q3.md")]
    both = site.paths("erin", {"folders": [str(site.docs / "finance-archive")],
                               "documents": [site.doc_id("finance/2023/q3.md")]}, top_k=10)
    assert sorted(both) == sorted([str(site.docs / "finance-archive/old.md"), str(site.docs / "finance/2023/q3.md")])


def test_file_types_narrow_to_their_extensions_and_and_with_folders(site: Site) -> None:
    assert site.paths("erin", {"file_types": [".TXT"]}, top_k=10) == [str(site.docs / "finance/2023/notes.txt")]
    html = site.paths("erin", {"file_types": ["html"]}, top_k=10)
    assert len(html) == 3
    assert under(site, "mail", html)
    assert site.paths("erin", {"file_types": ["html"], "folders": [str(site.docs / "finance")]}) == []


def test_a_date_range_covers_whole_days_and_leaves_undated_documents_out(site: Site) -> None:
    june = str(site.docs / "mail/june.html")
    july = str(site.docs / "mail/july.html")
    assert site.paths("erin", {"date_from": "2024-06-30", "date_to": "2024-06-30"}, top_k=20) == [june]
    assert site.paths("erin", {"date_from": "2024-07-01"}, top_k=20) == [july]
    assert sorted(site.paths("erin", {"date_to": "2024-12-31"}, top_k=20)) == [july, june]
    assert site.paths("erin", {"date_from": "2025-01-01"}, top_k=20) == []


def test_a_scope_never_widens_what_the_readers_groups_allow(site: Site) -> None:
    salaries = str(site.docs / "hr/salaries.md")
    for scope in ({"folders": [str(site.docs / "hr")]}, {"documents": [site.doc_id("hr/salaries.md")]},
                  {"folders": [salaries]}, {"folders": [f"{site.docs}/finance/../hr"]}):
        r = site.search("erin", scope)
        assert r.status_code == 200, r.text
        assert r.json()["results"] == [], scope
        assert "Nothing was found in the chosen scope" in r.json()["note"]
        assert site.paths("hanna", scope) == [salaries], scope
    assert salaries not in site.paths("erin", {"folders": ["/"]}, top_k=100)
    prompts = len(site.llm.prompts)
    r = site.chat("erin", {"folders": [str(site.docs / "hr")]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"].startswith("Nothing was found in the chosen scope")
    assert body["grounded"] is False
    assert body["sources"] == []
    assert len(site.llm.prompts) == prompts  # the model never saw anything


def test_a_scoped_answer_is_given_only_from_passages_inside_the_scope(site: Site) -> None:
    site.llm.enqueue("Revenue was flat in the first quarter [1].")
    r = site.chat("erin", {"folders": [str(site.docs / "finance/2023")], "file_types": ["md"]})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["grounded"]
    assert body["sources"]
    assert under(site, "finance/2023", [s["path"] for s in body["sources"]])
    prompt = site.llm.prompts[-1][-1].content
    assert "first quarter of 2023" in prompt
    assert "beat every forecast" not in prompt
    assert "plain text" not in prompt


def test_a_streamed_answer_with_nothing_in_scope_says_so(site: Site) -> None:
    r = site.chat("erin", {"folders": [str(site.docs / "nowhere")]}, stream=True)
    assert r.status_code == 200
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    text = "".join(e["choices"][0]["delta"].get("content", "") for e in events)
    assert text.startswith("Nothing was found in the chosen scope")
    assert events[-1]["sources"] == []
    assert events[-1]["grounded"] is False


def test_the_use_case_answers_within_a_scope_and_audits_it(site: Site) -> None:
    from appliance.access.auth import LOCAL
    from appliance.backends.scope import Scope
    from appliance.rag import NOTHING_IN_SCOPE, Answer
    from appliance.usecases import answer

    scope = Scope.checked(folders=[str(site.docs / "mail")], date_from="2024-07-01")
    site.llm.enqueue("Better in July [1].")
    final = list(answer(site.services, LOCAL, QUESTION, [], "ui", scope=scope))[-1]
    assert isinstance(final, Answer)
    assert final.grounded
    assert {s.path for s in final.sources} == {str(site.docs / "mail/july.html")}
    line = site.audit("question")[-1]
    assert line["channel"] == "ui"
    assert line["scope"] == {"folders": [str(site.docs / "mail")], "date_from": "2024-07-01"}
    empty = list(answer(site.services, LOCAL, QUESTION, [], "ui", scope=Scope.checked(file_types=["pptx"])))[-1]
    assert isinstance(empty, Answer)
    assert empty.text == NOTHING_IN_SCOPE
    assert site.audit("question")[-1]["scope"] == {"file_types": ["pptx"]}


def test_the_search_and_chat_audit_lines_record_the_scope(site: Site) -> None:
    site.paths("erin", {"file_types": ["txt"]})
    assert site.audit("search")[-1]["scope"] == {"file_types": ["txt"]}
    site.paths("erin", None)
    assert "scope" not in site.audit("search")[-1]
    site.chat("erin", {"documents": [site.doc_id("finance/2023/q1.md")]})
    line = site.audit("question")[-1]
    assert line["actor"] == "erin"
    assert line["channel"] == "api"
    assert line["scope"] == {"documents": [site.doc_id("finance/2023/q1.md")]}


HOSTILE: list[tuple[Any, str]] = [
    ({"folders": ["finance/2023"]}, "not an absolute path"),
    ({"folders": ["../../etc"]}, "not an absolute path"),
    ({"folders": ["C:\\share"]}, "not an absolute path"),
    ({"folders": ["/srv/share\x00/hr"]}, "control characters"),
    ({"folders": ["/srv/\ud800"]}, "valid string"),  # pydantic's JSON reader refuses a lone surrogate first
    ({"folders": [""]}, "empty"),
    ({"folders": ["/" + "a" * 5000]}, "at most 4096"),
    ({"folders": [f"/f{i}" for i in range(101)]}, "at most 100"),
    ({"folders": "/srv/share"}, "valid list"),
    ({"folders": [42]}, "valid string"),
    ({"documents": ["not-a-doc-id"]}, "not a document id"),
    ({"documents": ["0123456789abcdef0"]}, "not a document id"),
    ({"file_types": ["p.df"]}, "not a file extension"),
    ({"file_types": ["exe; rm -rf /"]}, "not a file extension"),
    ({"file_types": ["x" * 17]}, "at most 16"),
    ({"date_from": "2024-02-30"}, "not a date"),
    ({"date_from": "30/06/2024"}, "not a date"),
    ({"date_to": "2024-06-30T00:00:00"}, "not a date"),
    ({"date_from": "2024-07-01", "date_to": "2024-06-30"}, "is after date_to"),
    ({"paths": ["/srv"]}, "extra inputs"),
    ("/srv/share", "valid dictionary"),
]


@pytest.mark.parametrize(("scope", "message"), HOSTILE, ids=[str(i) for i in range(len(HOSTILE))])
def test_a_hostile_scope_is_refused_with_a_clear_422_before_anything_is_searched(
        site: Site, scope: Any, message: str) -> None:
    searches, questions = len(site.audit("search")), len(site.audit("question"))
    for r in (site.search("erin", scope), site.chat("erin", scope), site.chat("erin", scope, stream=True)):
        assert r.status_code == 422, (scope, r.text)
        error = r.json()["error"]
        assert error["type"] == "invalid_request_error"
        assert error["message"].startswith("invalid request: scope"), error["message"]
        assert message.lower() in error["message"].lower(), error["message"]
    assert (len(site.audit("search")), len(site.audit("question"))) == (searches, questions)


def test_the_page_and_the_cli_get_the_same_refusals_from_the_one_check() -> None:
    from appliance.backends.scope import InvalidScope, Scope

    for kwargs, message in (({"folders": ["/srv/\ud800"]}, "control characters"),
                            ({"folders": ["relative"]}, "not an absolute path"),
                            ({"folders": [f"/f{i}" for i in range(101)]}, "at most 100 folders"),
                            ({"documents": ["x" * 65]}, "longer than 64"),
                            ({"date_from": "2024-13-01"}, "not a date")):
        with pytest.raises(InvalidScope, match=message):
            Scope.checked(**kwargs)
    assert not Scope.checked(folders=[], file_types=[])  # nothing to narrow: no scope
    assert Scope.checked(folders=["/a/b/../c/"] * 150).folders == ("/a/c",)  # the same folder, once


def test_ask_in_searches_only_the_given_folders_from_the_command_line(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    """Real embedder (the CLI builds its own services); no model is loaded: the relevance bar is set out of
    reach, so `ask` answers from no passage and shows the closest ones, all from inside the scope."""
    from appliance.cli import main

    docs = tmp_path / "share"
    write_share(docs)
    data = tmp_path / "data"
    config = tmp_path / "settings.yaml"
    config.write_text("retrieval:\n  min_similarity: 0.99\n")
    common = ["--data-dir", str(data), "--config", str(config)]
    runner = CliRunner()
    ingest = runner.invoke(main, ["ingest", str(docs), "--no-progress", *common])
    assert ingest.exit_code == 0, ingest.output

    def ask(*args: str) -> dict[str, Any]:
        r = runner.invoke(main, ["ask", QUESTION, "--json", *args, *common])
        assert r.exit_code == 0, r.output
        return dict(json.loads(r.output))

    assert not any("finance/2023" in s["path"] for s in ask()["sources"])
    monkeypatch.chdir(tmp_path)  # --in is a path as the shell gives it: relative to where `ask` runs
    inside = ask("--in", "share/finance/2023", "--in", str(docs / "mail" / "june.html"))["sources"]
    assert inside
    assert all("finance/2023/" in s["path"] or s["path"].endswith("june.html") for s in inside)
    typed = ask("--in", str(docs), "--type", "txt")["sources"]
    assert [s["path"] for s in typed] == [str(docs / "finance/2023/notes.txt")]
    dated = ask("--since", "2024-07-01", "--until", "2024-07-31")["sources"]
    assert [s["path"] for s in dated] == [str(docs / "mail/july.html")]
    nothing = ask("--in", str(docs / "nowhere"))
    assert nothing["answer"].startswith("Nothing was found in the chosen scope")
    assert nothing["sources"] == []
    bad = runner.invoke(main, ["ask", QUESTION, "--since", "yesterday", *common])
    assert bad.exit_code == 2
    assert "not a date (YYYY-MM-DD)" in bad.output
