"""Fuzzing every /v1 route an employee may call, from the server's own OpenAPI schema (schemathesis),
against a real `appliance serve` on 0.0.0.0: whatever the request, no 500, answers that match the
schema, no text of a group the employee is not in, and another group's document or conversation
answers exactly as one that does not exist.

The employee is `fuzz` (group engineering), with an API key of its own so that the rate limits of the
other security tests are not shared. The share holds an HR file, an engineering file and an
engineering PDF (for the page images), and an HR user (alice) has a conversation that quotes the HR
file: the fuzzer's ids, page numbers, questions and searches are drawn from these real values as well
as from whatever the schema allows. Bounded for a 2-core machine: a fixed number of examples per
route, derandomized, no example database (about 25 s here, most of it starting the server).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from appliance.stores.conversations import Conversations, Turn
from tests.conftest import SAMPLES
from tests.security.test_attacks import HR_SECRET, PASSWORD, Site
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
EXAMPLES = 50  # per route, in the fuzzing phase; the coverage phase adds its own boundary cases
# What an engineer must never read: the HR file's reference, its figures, its title and its name.
HR_WORDS = (HR_SECRET, "91,500", "Salary bands", "salaries.md", "HR salary file")
# Real questions (none quotes the HR file's words, so an answer that holds one took it from the file).
QUESTIONS = ("What does band E4 pay a year, and what is its HR reference?", "Where does Kestrel run?",
             "Summarise every document you can read, with all figures.")
# Left out: the administrator's routes (not an employee's to call; they would change the site under the
# fuzzer) and uploads (multipart parsing and ingestion take seconds each; tests/e2e/test_api.py covers them).
EXCLUDED_PATHS = r"^/v1/admin/"
# What another group's id may answer: the same as an id that does not exist (404), or a refusal that
# comes before the id is looked up (no key: 401; a method the route lacks: 405; a malformed request: 400, 422).
AS_IF_ABSENT = (400, 401, 404, 405, 422)


def doc_id(path: str) -> str:
    """The API's id of a document (ingest.points.doc_id_of), computed here so the test reads no app state."""
    return hashlib.sha1(path.encode()).hexdigest()[:16]


class FuzzSite(Site):
    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.key = self.model = ""
        self.real: dict[str, tuple[Any, ...]] = {}  # path parameter: real values to try
        self.theirs: frozenset[str] = frozenset()  # another group's document id, another user's conversation id

    def log_tail(self, chars: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-chars:]


@pytest.fixture(scope="module")
def fuzz_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FuzzSite]:
    s = FuzzSite(tmp_path_factory.mktemp("fuzz"))
    (s.docs / "hr").mkdir(parents=True)
    (s.docs / "eng").mkdir(parents=True)
    hr, eng, pdf = s.docs / "hr" / "salaries.md", s.docs / "eng" / "handbook.md", s.docs / "eng" / "memo.pdf"
    hr.write_text(f"# Salary bands 2027\n\nThe HR salary file: engineering band E4 pays 91,500 euros a year. "
                  f"Reference {HR_SECRET}.\n")
    eng.write_text("# Engineering handbook\n\nDeployments happen on Tuesdays. The build server is called Kestrel "
                   "and runs in the basement. Kestrel builds every branch and keeps the artifacts for thirty days.\n")
    shutil.copy(SAMPLES / "fake-memo.pdf", pdf)
    s.config.write_text(f"acl:\n  - path: {s.docs / 'hr'}\n    groups: [hr]\n"
                        f"  - path: {s.docs / 'eng'}\n    groups: [engineering]\n")
    r = s.cli("ingest", str(s.docs))
    assert r.returncode == 0, r.stdout + r.stderr
    for name, group in (("alice", "hr"), ("fuzz", "engineering")):
        r = s.cli("users", "add", name, f"--group={group}", "--password-stdin", stdin=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    r = s.cli("keys", "create", "fuzzkey", "--user", "fuzz")
    assert r.returncode == 0, r.stderr
    s.key = r.stdout.splitlines()[0].strip()
    # One conversation each: alice's quotes the HR file (fuzz must never reach it), fuzz's is its own.
    store = Conversations(s.data / "conversations.sqlite")
    try:
        alices = store.create("alice", "Salary bands for E4")
        store.add_turn("alice", alices, Turn(f"What does band E4 pay? {HR_SECRET}",
                                             f"The HR salary file: band E4 pays 91,500 euros. Reference {HR_SECRET}.",
                                             [{"file": str(hr), "doc_id": doc_id(str(hr))}]))
        own = store.create("fuzz", "Where does Kestrel run?")
        store.add_turn("fuzz", own, Turn("Where does Kestrel run?", "In the basement.",
                                         [{"file": str(eng), "doc_id": doc_id(str(eng))}]))
    finally:
        store.close()
    s.real = {"doc_id": (doc_id(str(hr)), doc_id(str(eng)), doc_id(str(pdf))), "cid": (alices, own), "page": (1, 2)}
    s.theirs = frozenset({doc_id(str(hr)), alices})
    env = {"APPLIANCE_SERVER__HOST": "0.0.0.0", "APPLIANCE_CONFIG": str(s.config),
           "APPLIANCE_AUTH__REQUESTS_PER_MINUTE": "100000", "APPLIANCE_AUTH__QUESTIONS_PER_MINUTE": "100000",
           "APPLIANCE_LLM__MAX_ANSWER_TOKENS": "16"}
    with appliance_server(s.data, s.log, env) as (url, _pid):
        s.url = url
        key = {"authorization": f"Bearer {s.key}"}
        listed = httpx.get(f"{url}/v1/documents", headers=key, timeout=30).json()["documents"]
        assert sorted(d["id"] for d in listed) == sorted(s.real["doc_id"][1:]), listed  # the ids, as computed
        s.model = httpx.get(f"{url}/v1/models", headers=key, timeout=30).json()["data"][0]["id"]
        yield s
    assert "Traceback" not in s.log.read_text(), s.log_tail()


@pytest.fixture(scope="module")
def api_schema(fuzz_site: FuzzSite) -> Any:
    """The server's /openapi.json (it needs a key too), with the fuzzing bounds and the employee's key."""
    key = {"Authorization": f"Bearer {fuzz_site.key}"}
    config = schemathesis.Config.from_dict({
        "base-url": fuzz_site.url,
        "headers": key,
        "request-timeout": 120,
        "generation": {"max-examples": EXAMPLES, "deterministic": True, "database": "none"},
        "phases": {"stateful": {"enabled": False}},  # the schema declares no links between routes
    })
    schema = schemathesis.openapi.from_url(f"{fuzz_site.url}/openapi.json", config=config, headers=key, timeout=30)

    @schema.hook
    def flatmap_path_parameters(context: Any, params: Any) -> Any:
        """Half the time each id or page is a real one: another group's, the employee's own, a PDF's page."""
        strategy = st.just(params)
        for name in (n for n in fuzz_site.real if isinstance(params, dict) and n in params):
            strategy = strategy.flatmap(lambda p, n=name: st.one_of(
                st.just(p), st.sampled_from(fuzz_site.real[n]).map(lambda real, p=p, n=n: {**p, n: real})))
        return strategy

    @schema.hook
    def flatmap_body(context: Any, body: Any) -> Any:
        """Half the questions and searches are real ones, about either group's file, to the served model:
        a random model name is refused before retrieval, and a random question matches nothing."""
        path = context.operation.path
        if not isinstance(body, dict) or path not in ("/v1/chat/completions", "/v1/search"):
            return st.just(body)
        if path == "/v1/search":
            return st.one_of(st.just(body), st.sampled_from(QUESTIONS).map(lambda q: {**body, "query": q}))
        earlier = body.get("messages") if isinstance(body.get("messages"), list) else []
        return st.one_of(st.just(body), st.sampled_from(QUESTIONS).map(lambda q: {
            **body, "model": fuzz_site.model, "messages": [*earlier, {"role": "user", "content": q}]}))

    return schema


@pytest.fixture(autouse=True)
def _node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's lazy loader reads (and renames) `node._nodeid`, which pytest 9.2 dropped for
    `node._id`: without it, the test fails with AttributeError before any request. The routes' results
    are still reported one by one, as subtests labelled with the route."""
    if not hasattr(request.node, "_nodeid"):
        request.node._nodeid = request.node.nodeid


schema = (schemathesis.pytest.from_fixture("api_schema").include(path_regex=r"^/v1/")
          .exclude(path_regex=EXCLUDED_PATHS).exclude(method="POST", path="/v1/documents"))


@schema.parametrize()
def test_an_employee_fuzzing_v1_gets_no_server_error_and_no_other_groups_text(case: Any, fuzz_site: FuzzSite) -> None:
    response = case.call()
    request, text = f"{case.method} {case.formatted_path}", response.content.decode("utf-8", "replace")
    assert response.status_code < 500, (f"{request} answered {response.status_code}: {text[:300]}\n"
                                        f"{case.as_curl_command()}\nserver log:\n{fuzz_site.log_tail()}")
    leaked = [w for w in HR_WORDS if w.lower() in text.lower()]
    assert not leaked, f"{request} leaked {leaked}: {text[:500]}\n{case.as_curl_command()}"
    if fuzz_site.theirs & set(map(str, (case.path_parameters or {}).values())):
        assert response.status_code in AS_IF_ABSENT, (
            f"{request} (another's id) answered {response.status_code}, not as an absent id: {text[:300]}\n"
            f"{case.as_curl_command()}")
    # Not checked: undocumented statuses (403 and 429 are not in the schema) and content types (/file
    # serves the file's own type), 405s without an Allow header, and whether a request the fuzzer meant
    # to be invalid was refused (the hooks above make some of them valid).
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
