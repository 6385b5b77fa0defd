"""Replays of the attacks of the security review (issue 17) against a real `appliance serve` on
0.0.0.0 with users of different groups: each test is one attack, and each failed on 8ce8e9e.

Who attacks here: a signed-in employee (bob, group engineering), the holder of a service key, and
anonymous clients; what they must not get: another group's text, a server file, the audit trail's
integrity, or everyone else's share of the server."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e]
CLI = [sys.executable, "-m", "appliance.cli"]
PASSWORD = "Granite-Falcon-4410"
HR_SECRET = "PELICAN-7731"
USERS = {"alice": ["hr"], "bob": ["engineering"], "dave": ["engineering"], "erin": ["engineering"],
         "frank": ["engineering"], "gina": ["engineering"], "hank": ["engineering"], "admin": []}


class Site:
    def __init__(self, root: Path) -> None:
        self.root, self.data, self.docs = root, root / "data", root / "share"
        self.config, self.log, self.url = root / "appliance.yaml", root / "serve.log", ""

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "--data-dir", str(self.data), "--config", str(self.config)], cwd=ROOT,
                              capture_output=True, text=True, input=stdin, timeout=300)

    def sign_in(self, name: str) -> httpx.Client:
        client = httpx.Client(base_url=self.url, timeout=120, headers={"origin": self.url})
        page = client.get("/login")
        csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
        assert csrf is not None
        r = client.post("/login", data={"username": name, "password": PASSWORD, "csrf": csrf.group(1), "next": "/"})
        assert r.status_code == 303, r.text
        return client

    def audit(self) -> list[dict[str, Any]]:
        lines: list[dict[str, Any]] = []
        for path in sorted((self.data / "audit").glob("audit*.jsonl")):
            lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return lines


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    s = Site(tmp_path_factory.mktemp("attacks"))
    (s.docs / "hr").mkdir(parents=True)
    (s.docs / "eng").mkdir(parents=True)
    (s.docs / "hr" / "salaries.md").write_text(
        f"# Salary bands 2027\n\nThe HR salary file: engineering band E4 pays 91,500 euros a year. "
        f"Reference {HR_SECRET}.\n")
    (s.docs / "eng" / "handbook.md").write_text(
        "# Engineering handbook\n\nDeployments happen on Tuesdays. The build server is called Kestrel and "
        "runs in the basement. Kestrel builds every branch and keeps the artifacts for thirty days.\n")
    s.config.write_text(f"acl:\n  - path: {s.docs / 'hr'}\n    groups: [hr]\n"
                        f"  - path: {s.docs / 'eng'}\n    groups: [engineering]\n")
    assert s.cli("ingest", str(s.docs)).returncode == 0
    for name, groups in USERS.items():
        flags = [f"--group={g}" for g in groups] + (["--admin"] if name == "admin" else [])
        r = s.cli("users", "add", name, *flags, "--password-stdin", stdin=PASSWORD + "\n")
        assert r.returncode == 0, r.stderr
    env = {"APPLIANCE_SERVER__HOST": "0.0.0.0", "APPLIANCE_CONFIG": str(s.config),
           "APPLIANCE_LLM__MAX_ANSWER_TOKENS": "32"}
    with appliance_server(s.data, s.log, env) as (url, _pid):
        s.url = url
        yield s
    assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]


def secrets_of(site: Site) -> dict[str, Path]:
    """Files an employee must never read through the page."""
    return {"hostname": Path("/etc/hostname"), "server.json": site.data / "server.json",
            "users.sqlite": site.data / "users.sqlite", "manifest.sqlite": site.data / "manifest.sqlite",
            "hr document": site.docs / "hr" / "salaries.md"}


def file_data(path: Path | str) -> dict[str, Any]:
    return {"path": str(path), "meta": {"_type": "gradio.FileData"}}


def hostile_inputs(path: Path | str) -> list[Any]:
    """The shapes in which a page event's input can name a file: a file, a list of files, a chat message
    with a file part, and the same without Gradio's meta."""
    fd = file_data(path)
    return [fd, [fd], [{"role": "assistant", "content": [{"type": "file", "file": fd}]}],
            [{"role": "user", "content": {"path": str(path)}}], {"path": str(path)}]


def page_events(client: httpx.Client) -> list[dict[str, Any]]:
    config = client.get("/config").json()
    return [d for d in config["dependencies"] if d.get("backend_fn") and d.get("inputs")]


def test_no_page_event_accepts_a_file_the_client_names(site: Site) -> None:
    """Finding 1: every event of the page (walked from /config, so a new one is covered too), with every
    shape of file reference in every input, naming server files: refused, and nothing served."""
    bob = site.sign_in("gina")  # her own user: the walk takes most of a minute's request allowance
    events = page_events(bob)
    assert len(events) >= 10  # the chat, library, admin tabs' events
    tried = 0
    secrets = secrets_of(site)
    for event in events:
        for path in (secrets["hostname"], secrets["server.json"], secrets["hr document"]):
            for shape in hostile_inputs(path):
                body = {"data": [shape] * len(event["inputs"]), "fn_index": event["id"],
                        "trigger_id": (event.get("targets") or [[None]])[0][0], "session_hash": uuid.uuid4().hex[:10],
                        "event_data": None}
                r = bob.post("/gradio_api/queue/join", json=body)
                assert r.status_code == 400, (event.get("api_name"), shape, r.status_code, r.text[:200])
                assert str(path) not in r.text
                tried += 1
        if event.get("api_name"):  # Gradio's REST door to the same event
            r = bob.post(f"/gradio_api/call/{event['api_name']}",
                         json={"data": [file_data(site.data / "server.json")] * len(event["inputs"])})
            assert r.status_code == 400, (event["api_name"], r.text[:200])
    assert tried >= len(events) * 5
    cache = site.data / "tmp" / "gradio"
    copied = [p.name for p in cache.rglob("*") if p.is_file()] if cache.exists() else []
    for name in ("hostname", "server.json", "users.sqlite", "manifest.sqlite", "salaries.md"):
        assert name not in copied, f"{name} was copied into Gradio's cache"


def test_the_reported_regenerate_payload_reads_nothing(site: Site) -> None:
    """The exact payload of the report: regenerate with a chat message naming /etc/hostname."""
    bob = site.sign_in("bob")
    payload = {"data": [[{"role": "assistant", "content": [{"type": "file", "file": file_data("/etc/hostname")}]}]]}
    r = bob.post("/gradio_api/call/regenerate", json=payload)
    assert r.status_code == 400
    assert "uploaded through the page" in r.json()["error"]["message"]


def test_gradio_serves_no_file_outside_its_upload_cache(site: Site) -> None:
    bob = site.sign_in("bob")
    for name, path in secrets_of(site).items():
        for url in (f"/gradio_api/file={path}", f"/gradio_api/file={site.data}/tmp/gradio/../../{path.name}",
                    f"/file={path}"):
            r = bob.get(url)
            assert r.status_code in (403, 404), (name, url, r.status_code)
            assert str(site.data) not in r.text
            assert path.read_bytes()[:40] not in r.content


def test_an_upload_event_cannot_ingest_a_server_file(site: Site) -> None:
    """Finding 1b: the Library's upload event naming an HR file the caller may not read."""
    bob = site.sign_in("bob")
    hr = site.docs / "hr" / "salaries.md"
    r = bob.post("/gradio_api/call/upload", json={"data": [[file_data(hr)], None, "", "all", False]})
    assert r.status_code == 400
    found = bob.post("/v1/search", json={"query": f"salary band reference {HR_SECRET}"}).json()["results"]
    assert all(HR_SECRET not in hit["text"] for hit in found)
    assert not [e for e in site.audit() if e["event"] == "upload" and e["actor"] == "bob"]


def test_long_questions_are_refused_on_every_channel_and_the_trail_still_verifies(site: Site) -> None:
    """Finding 3: a 100k-character question broke `audit verify`; now every channel refuses it, and the
    trail verifies whatever was sent."""
    bob = site.sign_in("bob")
    huge = ("Kestrel " * 12_500).strip()
    r = bob.post("/v1/chat/completions", json={"model": "rag-appliance", "messages": [
        {"role": "user", "content": huge}]})
    assert r.status_code == 400
    assert "max_question_chars" in r.json()["error"]["message"]
    r = bob.post("/v1/chat/completions", json={"model": "rag-appliance", "stream": True, "messages": [
        {"role": "user", "content": huge}]})
    assert r.status_code == 400
    r = bob.post("/v1/search", json={"query": huge})
    assert r.status_code == 400
    assert "max_question_chars" in r.json()["error"]["message"]
    outputs = gradio_call(bob, "respond", [huge, []])
    assert "max_question_chars" in json.dumps(outputs[0])
    assert outputs[1] == huge  # the question stays in the box
    assert not [e for e in site.audit() if len(json.dumps(e)) > 64 << 10]
    verify = site.cli("audit", "verify")
    assert verify.returncode == 0, verify.stdout + verify.stderr


def test_a_question_that_fills_the_context_is_answered_not_a_500(site: Site) -> None:
    """Finding 10: a long question matching a document crashed the whole-document offer (OverflowError):
    now refused for its length, and one just under the bound is answered."""
    bob = site.sign_in("bob")
    r = bob.post("/v1/chat/completions", json={"model": "rag-appliance", "messages": [
        {"role": "user", "content": "Where does the Kestrel build server run? " * 500}]})
    assert r.status_code == 400, r.text[:300]
    question = ("Which server builds the branches and where does Kestrel run? " * 60)[:3990]
    r = bob.post("/v1/chat/completions", json={"model": "rag-appliance", "messages": [
        {"role": "user", "content": question}]})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["choices"][0]["message"]["content"]


def test_a_lone_surrogate_is_answered_not_a_500(site: Site) -> None:
    bob = site.sign_in("bob")
    body = b'{"model": "rag-appliance", "stream": %s, "messages": [{"role": "user", "content": "Kestrel \\ud800?"}]}'
    for stream in (b"false", b"true"):
        r = bob.post("/v1/chat/completions", content=body % stream, headers={"content-type": "application/json"})
        assert r.status_code == 200, r.text[:300]
        assert '"code": 500' not in r.text
        assert "internal error" not in r.text
    r = bob.post("/v1/search", content=b'{"query": "Kestrel \\udfff"}', headers={"content-type": "application/json"})
    assert r.status_code in (200, 422), r.text[:300]  # pydantic's parser calls a lone low surrogate invalid JSON
    assert "internal error" not in r.text


def test_json_bodies_are_capped_before_they_are_read(site: Site) -> None:
    """Finding 5: a 400 MB JSON body grew the server by 1.2 GB; JSON routes now stop at 1 MB."""
    bob = site.sign_in("bob")
    big = b'{"query": "' + b"a" * (3 << 20) + b'"}'
    r = bob.post("/v1/search", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "max_request_kb" in r.text
    r = bob.post("/gradio_api/queue/join", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    # 400 MB declared and never sent: answered at once, before any of it is read.
    cookie = bob.cookies.get("appliance_session")
    host, port = site.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as raw:
        raw.sendall(f"POST /v1/search HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
                    f"Content-Length: {400 << 20}\r\nCookie: appliance_session={cookie}\r\n\r\n{{".encode())
        assert raw.recv(100).startswith(b"HTTP/1.1 413")
    assert httpx.get(site.url + "/healthz", timeout=5).status_code == 200


def test_page_requests_are_rate_limited_per_user(site: Site) -> None:
    """Finding 7: 700 GET /config were all answered; the page's routes now count against the same
    per-user limit as /v1, and another user is not affected."""
    dave, erin = site.sign_in("dave"), site.sign_in("erin")
    codes = [dave.get("/config").status_code for _ in range(620)]
    assert codes.count(429) >= 15
    assert codes[0] == 200
    assert erin.get("/config").status_code == 200


def test_one_user_cannot_fill_the_answer_queue(site: Site) -> None:
    """Finding 7: 300 events of one user filled the shared queue (503 for everyone). A user's waiting
    events are capped at server.max_queued_per_user; the others still get in."""
    frank, bob = site.sign_in("frank"), site.sign_in("bob")
    codes = []
    for _ in range(12):
        codes.append(frank.post("/gradio_api/call/respond",
                                json={"data": ["Where does Kestrel run?", []]}).status_code)
    assert 429 in codes, codes
    assert codes.count(200) <= 4 + 1  # the share, plus the one already running
    assert bob.post("/gradio_api/call/respond", json={"data": ["Where does Kestrel run?", []]}).status_code == 200


def test_metrics_need_an_administrator(site: Site) -> None:
    bob = site.sign_in("bob")
    assert bob.get("/metrics").status_code == 403
    key = site.cli("keys", "create", f"svc-{uuid.uuid4().hex[:6]}").stdout.strip().split()[-1]
    assert httpx.get(site.url + "/metrics", headers={"authorization": f"Bearer {key}"}).status_code == 403
    assert site.sign_in("admin").get("/metrics").status_code == 200


def test_anonymous_probes_and_schemas_reveal_no_versions_or_counts(site: Site) -> None:
    ready = httpx.get(site.url + "/readyz")
    assert ready.json() == {"status": "ready"}
    assert "server" not in ready.headers
    bob = site.sign_in("bob")
    assert bob.get("/openapi.json").json()["info"]["version"] == "1"
    config = bob.get("/config").json()
    assert "version" not in config
    # Found by an external attack run: the same JSON at /config/, and Gradio's schema, run history and
    # dev routes, told the version to any signed-in user.
    assert "version" not in bob.get("/config/").json()
    for route in ("/gradio_api/openapi.json", "/gradio_api/runs", "/gradio_api/dev/reload"):
        r = bob.get(route)
        assert r.status_code == 404, (route, r.status_code)
        assert "6." not in r.text
    for route in ("/", "/config"):  # the page and its config are the user's: never cached
        assert "no-store" in bob.get(route).headers.get("cache-control", ""), route


def test_cli_changes_to_users_and_keys_take_effect_at_once_while_serving(site: Site) -> None:
    """Finding 2: after the cache read released the server's SQLite locks, a CLI `--disable` had no
    effect. Changes made by the CLI while serve runs reach the very next request, and the files stay
    sound (doctor runs SQLite's integrity check)."""
    bob = site.sign_in("bob")
    assert bob.get("/v1/documents").status_code == 200
    assert site.cli("users", "set", "bob", "--disable").returncode == 0
    assert bob.get("/v1/documents").status_code == 401
    assert site.cli("users", "set", "bob", "--enable").returncode == 0
    bob = site.sign_in("bob")
    new = "Quartz-Lantern-2718"
    assert site.cli("users", "passwd", "bob", "--password-stdin", stdin=new + "\n").returncode == 0
    assert bob.get("/v1/documents").status_code == 401  # the old session ended
    assert site.cli("users", "passwd", "bob", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    name = f"gone-{uuid.uuid4().hex[:6]}"
    key = site.cli("keys", "create", name).stdout.strip().split()[-1]
    assert httpx.get(site.url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 200
    assert site.cli("keys", "revoke", name).returncode == 0
    assert httpx.get(site.url + "/v1/models", headers={"authorization": f"Bearer {key}"}).status_code == 401
    doctor = site.cli("doctor", "--json")
    checks = {c["name"]: c for c in json.loads(doctor.stdout)}
    assert checks["database"]["status"] == "ok"
    assert "integrity checked" in checks["database"]["detail"]


def gradio_call(client: httpx.Client, api_name: str, data: list[Any]) -> list[Any]:
    """One event through Gradio's REST door, as the page's own calls: its final outputs."""
    r = client.post(f"/gradio_api/call/{api_name}", json={"data": data})
    assert r.status_code == 200, r.text[:300]
    stream = client.get(f"/gradio_api/call/{api_name}/{r.json()['event_id']}").text
    lines = stream.splitlines()
    done = lines.index("event: complete")
    outputs: list[Any] = json.loads(lines[done + 1].removeprefix("data: "))
    return outputs


def test_a_page_session_and_its_events_belong_to_the_user_who_opened_them(site: Site) -> None:
    """Gradio keys a session's state, event stream and cancellation by a session hash and event ids that
    any signed-in user could name: another user's are refused, and events never run beside the queue."""
    alice, erin = site.sign_in("alice"), site.sign_in("erin")
    session = uuid.uuid4().hex[:11]
    respond = next(d for d in page_events(alice) if d.get("api_name") == "respond")
    question = ["What is the salary band E4?", [], *[None] * (len(respond["inputs"]) - 2)]  # the states: null
    join = {"data": question, "fn_index": respond["id"], "session_hash": session,
            "trigger_id": respond["targets"][0][0], "event_data": None}
    r = alice.post("/gradio_api/queue/join", json=join)
    assert r.status_code == 200
    event_id = r.json()["event_id"]
    assert erin.get("/gradio_api/queue/data", params={"session_hash": session}).status_code == 403
    assert erin.post("/gradio_api/queue/join", json={**join, "fn_index": respond["id"]}).status_code == 403
    assert erin.post("/gradio_api/cancel", json={"session_hash": session, "fn_index": respond["id"],
                                                  "event_id": event_id}).status_code == 403
    assert erin.get(f"/gradio_api/heartbeat/{session}").status_code == 403
    with alice.stream("GET", "/gradio_api/queue/data", params={"session_hash": session}) as stream:
        text = ""
        for line in stream.iter_lines():
            text += line
            if "process_completed" in line:
                break
    assert "process_completed" in text
    r = erin.post("/gradio_api/call/respond", json={"data": ["Where does Kestrel run?", []]})
    assert r.status_code == 200
    assert alice.get(f"/gradio_api/call/respond/{r.json()['event_id']}").status_code == 403
    assert erin.get(f"/gradio_api/call/respond/{r.json()['event_id']}").status_code == 200
    for route in ("/gradio_api/run/respond", "/gradio_api/api/respond"):
        assert erin.post(route, json={"data": ["Where does Kestrel run?", []]}).status_code in (403, 404)


def test_one_key_cannot_fill_the_answer_queue_of_v1(site: Site) -> None:
    """The external attack run: 12 questions at once with one user's key filled /v1's queue, and another
    caller waited 66 s behind them. A user's answers running or waiting are capped at
    server.max_queued_per_user, on /v1 as on the page; another caller still gets in."""
    import threading

    key = site.cli("keys", "create", f"erin-{uuid.uuid4().hex[:6]}", "--user", "erin").stdout.strip().split()[-1]
    codes: list[int] = []

    def ask() -> None:
        question = {"role": "user", "content": "Where does Kestrel run?"}
        r = httpx.post(site.url + "/v1/chat/completions", timeout=300, headers={"authorization": f"Bearer {key}"},
                       json={"model": "rag-appliance", "messages": [question]})
        codes.append(r.status_code)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for t in threads:
        t.start()
    time.sleep(1)
    other = site.sign_in("alice").post("/v1/chat/completions", json={"model": "rag-appliance", "messages": [
        {"role": "user", "content": "What is the salary band E4?"}]})
    for t in threads:
        t.join(300)
    assert other.status_code == 200, other.text[:300]
    assert codes.count(429) >= 10 - 4, codes
    assert codes.count(200) >= 1


def test_sign_in_attempts_sent_together_are_counted_before_the_next_is_checked(site: Site) -> None:
    """The external attack run: 40 sign-ins for one name sent at once were all checked before any
    failure counted, and the correct password, sent last, got in. Now they queue per name and address."""
    import asyncio

    name = f"target{uuid.uuid4().hex[:4]}"
    assert site.cli("users", "add", name, "--password-stdin", stdin=PASSWORD + "\n").returncode == 0

    async def attempt(password: str) -> int:
        # From 127.0.0.3: the address locked by this attack is not the one the other tests sign in from.
        transport = httpx.AsyncHTTPTransport(local_address="127.0.0.3")
        async with httpx.AsyncClient(base_url=site.url, timeout=300, headers={"origin": site.url},
                                     transport=transport) as client:
            page = await client.get("/login")
            csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
            assert csrf is not None
            r = await client.post("/login", data={"username": name, "password": password, "csrf": csrf.group(1),
                                                  "next": "/"})
            return r.status_code

    async def burst() -> list[int]:
        return await asyncio.gather(*[attempt(f"Wrong-Guess-{i:04d}-x") for i in range(11)], attempt(PASSWORD))

    codes = asyncio.run(burst())
    # No more wrong guesses evaluated than auth.sign_in_attempts (the right password may come first and pass).
    assert codes.count(401) <= 5, codes
    assert codes.count(429) >= 12 - 6, codes


def test_only_callers_who_may_upload_put_files_in_the_pages_upload_cache(site: Site) -> None:
    """The external attack run: a service key (which may not upload) wrote 4 GB requests into Gradio's
    cache. It is refused now; an employee's upload from the page still lands."""
    key = site.cli("keys", "create", f"svc-{uuid.uuid4().hex[:6]}").stdout.strip().split()[-1]
    files = {"files": ("note.md", b"# Note\n\nA note.\n", "text/markdown")}
    r = httpx.post(site.url + "/gradio_api/upload", files=files, headers={"authorization": f"Bearer {key}"})
    assert r.status_code == 403, r.text[:200]
    r = site.sign_in("erin").post("/gradio_api/upload", files=files)
    assert r.status_code == 200, r.text[:200]


def test_gradio_routes_the_page_never_uses_are_closed(site: Site) -> None:
    """The external attack run: /call/v2, /run and /api answered plain-text 500s with tracebacks in the log."""
    dave = site.sign_in("hank")  # dave has spent his minute's requests
    for route in ("/gradio_api/call/v2/respond", "/gradio_api/run/predict", "/gradio_api/api/predict"):
        r = dave.post(route, json={"data": ["Where does Kestrel run?", []]})
        assert r.status_code == 404, (route, r.status_code)
        assert r.json()["error"]["message"] == "no such endpoint"


def test_a_cookie_write_without_origin_is_refused(site: Site) -> None:
    """Browsers send Origin (or Sec-Fetch-Site) on every POST: a cookie-signed write with neither is not
    the page's. Upper-case schemes and hosts are still the same origin."""
    cookie = site.sign_in("hank").cookies.get("appliance_session")
    bare = httpx.Client(base_url=site.url, cookies={"appliance_session": cookie})
    r = bare.post("/v1/search", json={"query": "Kestrel"})
    assert r.status_code == 403, r.text[:200]
    host = site.url.removeprefix("http://").upper()
    assert bare.post("/v1/search", json={"query": "Kestrel"}, headers={"origin": f"HTTP://{host}"}).status_code == 200


def test_unknown_gradio_events_are_json_errors_and_forwarded_hosts_ignored(site: Site) -> None:
    """The third attack run: /call/<unknown name>, queue/join with an unknown fn_index and an unknown
    event id answered plain-text 500s or a broken stream; X-Forwarded-Host from any client became the
    page's root URL."""
    hank = site.sign_in("hank")
    for route in ("/gradio_api/call/v2", "/gradio_api/call/predict", "/gradio_api/call/nosuchevent"):
        r = hank.post(route, json={"data": []})
        assert r.status_code == 404, (route, r.status_code, r.text[:100])
        assert r.json()["error"]["message"] == "no such endpoint"
    for index in (9999, -1, "x"):
        r = hank.post("/gradio_api/queue/join", json={"data": [], "fn_index": index, "session_hash": "zz"})
        assert r.status_code == 400, (index, r.status_code)
    assert hank.get("/gradio_api/call/respond/0000").status_code == 404
    config = hank.get("/config", headers={"x-forwarded-host": "evil.example", "x-forwarded-proto": "https"}).json()
    assert "evil.example" not in json.dumps(config)
    page = hank.get("/", headers={"x-forwarded-host": "evil.example", "accept": "text/html"})
    assert "evil.example" not in page.text
