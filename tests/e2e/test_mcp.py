"""The MCP door (appliance/api/mcp_server.py), used with the SDK's own client over both transports:
streamable HTTP against a real `appliance serve` (/mcp), and stdio launching `appliance mcp`. Each
user's key sees only their groups' documents in search, ask, list, read and resources; a missing or
wrong key is refused; calls are audited and the question limit applies, as on /v1."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from tests.conftest import ROOT
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e]
CLI = [sys.executable, "-m", "appliance.cli"]
HR_SECRET = "PELICAN-7731"
QUESTIONS_PER_MINUTE = 8


@dataclass
class Site:
    url: str
    root: Path
    data: Path  # the server's
    stdio_data: Path  # a copy for `appliance mcp` (the running server holds the embedded store)
    config: Path
    keys: dict[str, str]

    def audit(self, data: Path) -> list[dict[str, Any]]:
        return [json.loads(line) for path in sorted((data / "audit").glob("audit*.jsonl"))
                for line in path.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("mcp")
    docs, data = root / "share", root / "data"
    for folder, name, text in (
        ("hr", "salaries.md", f"# Salary bands 2027\n\n## Engineering\n\nThe HR salary file: engineering band E4 "
                              f"pays 91,500 euros a year. Reference {HR_SECRET}.\n"),
        ("public", "holidays.md", "# Company holidays\n\nThe office is closed on the first Monday of May for the "
                                  "spring holiday.\n"),
    ):
        (docs / folder).mkdir(parents=True)
        (docs / folder / name).write_text(text)
    config = root / "appliance.yaml"
    # In the settings file, so the server and `appliance mcp` both follow it.
    config.write_text(f"acl:\n  - path: {docs / 'hr'}\n    groups: [hr]\nllm:\n  max_answer_tokens: 48\n"
                      f"auth:\n  questions_per_minute: {QUESTIONS_PER_MINUTE}\n")

    def cli(*args: str, stdin: str | None = None) -> str:
        r = subprocess.run([*CLI, *args, "--data-dir", str(data), "--config", str(config)], cwd=ROOT,
                           capture_output=True, text=True, input=stdin, timeout=600)
        assert r.returncode == 0, r.stderr
        return r.stdout

    cli("ingest", str(docs))
    keys = {}
    for name, groups in (("alice", ["hr"]), ("bob", []), ("dave", [])):
        cli("users", "add", name, *[f"--group={g}" for g in groups], "--password-stdin",
            stdin="Tulip-Harbor-9921\n")
        keys[name] = cli("keys", "create", f"{name}-mcp", "--user", name).strip()
    stdio_data = root / "stdio-data"
    shutil.copytree(data, stdio_data)
    env = {"APPLIANCE_CONFIG": str(config)}
    log = root / "serve.log"
    with appliance_server(data, log, env) as (url, _pid):
        yield Site(url, root, data, stdio_data, config, keys)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


@asynccontextmanager
async def http_session(site: Site, key: str | None) -> AsyncIterator[Any]:
    import httpx2
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    headers = {"Authorization": f"Bearer {key}"} if key else {}
    async with httpx2.AsyncClient(headers=headers, timeout=300) as client, \
            streamable_http_client(site.url + "/mcp", http_client=client) as (read, write), \
            ClientSession(read, write) as session:
        await session.initialize()
        yield session


def stdio_params(site: Site, key: str | None = None, key_file: Path | None = None) -> Any:
    from mcp import StdioServerParameters

    args = ["-m", "appliance.cli", "mcp", "--data-dir", str(site.stdio_data), "--config", str(site.config)]
    env = {"APPLIANCE_API_KEY": key} if key else {}
    if key_file is not None:
        args += ["--key-file", str(key_file)]
    # The child gets PATH and the like from the SDK; the egress guard's variables travel too.
    passed = {k: v for k, v in os.environ.items() if k in ("LD_PRELOAD", "EGRESS_SYSCALL_LOG", "HOME")}
    return StdioServerParameters(command=sys.executable, args=args, env={**passed, **env}, cwd=str(ROOT))


@asynccontextmanager
async def stdio_session(site: Site, key: str | None = None, key_file: Path | None = None) -> AsyncIterator[Any]:
    from mcp import ClientSession, stdio_client

    with (site.root / "stdio.log").open("a") as errlog:
        async with stdio_client(stdio_params(site, key, key_file), errlog=errlog) as (read, write), \
                ClientSession(read, write, read_timeout_seconds=300) as session:
            await session.initialize()
            yield session


def data(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content[0].text
    assert isinstance(result.structured_content, dict)
    return result.structured_content


async def check_permissions(session_of: Any, site: Site) -> None:
    from mcp.shared.exceptions import MCPError

    """alice (group hr) reads the HR file; bob (no group) sees only the public one, through every tool.
    One session at a time: two `appliance mcp` processes cannot share one embedded store."""
    question = {"question": "What does engineering band E4 pay?"}
    async with session_of("alice") as alice:
        tools = {t.name for t in (await alice.list_tools()).tools}
        assert tools == {"search", "ask", "list_documents", "read_document"}

        listed = data(await alice.call_tool("list_documents", {}))
        names = {d["name"]: d for d in listed["documents"]}
        assert set(names) == {"salaries.md", "holidays.md"}
        salaries = names["salaries.md"]["id"]
        assert names["salaries.md"]["link"].endswith(f"/v1/documents/{salaries}/file")
        assert data(await alice.call_tool("list_documents", {"filter": "HOLIDAY"}))["total"] == 1

        found = data(await alice.call_tool("search", {"query": "salary band E4", "top_k": 3}))["results"]
        assert found[0]["file_name"] == "salaries.md"
        assert HR_SECRET in found[0]["text"]
        assert found[0]["section"]
        assert found[0]["link"].endswith(f"/v1/documents/{salaries}/file")

        read = await alice.call_tool("read_document", {"id": salaries})
        assert HR_SECRET in read.content[0].text
        assert data(read)["chunks"]
        uri = f"appliance://documents/{salaries}"
        assert uri in {str(r.uri) for r in (await alice.list_resources()).resources}
        assert HR_SECRET in (await alice.read_resource(uri)).contents[0].text

        answer = data(await alice.call_tool("ask", question))
        assert answer["sources"][0]["file_name"] == "salaries.md"
        assert answer["sources"][0]["link"].endswith(f"/v1/documents/{salaries}/file")

        # Inputs are bounded as /v1 bounds them.
        too_many = await alice.call_tool("search", {"query": "salary", "top_k": 1000})
        assert too_many.is_error
        assert "top_k" in too_many.content[0].text
        too_long = await alice.call_tool("ask", {"question": "why " * 2000})
        assert too_long.is_error
        assert "max_question_chars" in too_long.content[0].text

    async with session_of("bob") as bob:
        assert {d["name"] for d in data(await bob.call_tool("list_documents", {}))["documents"]} == {"holidays.md"}
        hidden = data(await bob.call_tool("search", {"query": "salary band E4 PELICAN", "top_k": 10}))["results"]
        assert hidden
        assert all(h["file_name"] != "salaries.md" for h in hidden)
        assert HR_SECRET not in json.dumps(hidden)
        scoped = await bob.call_tool("search", {"query": "salary", "scope": {"documents": [salaries]}})
        assert data(scoped)["results"] == []  # a scope never widens what the groups allow
        assert data(scoped)["note"]

        refused = await bob.call_tool("read_document", {"id": salaries})
        assert refused.is_error
        assert "no document with id" in refused.content[0].text  # as if it did not exist
        assert uri not in {str(r.uri) for r in (await bob.list_resources()).resources}
        with pytest.raises(MCPError, match="no document with id"):
            await bob.read_resource(uri)

        other = data(await bob.call_tool("ask", question))
        assert all(s["file_name"] != "salaries.md" for s in other["sources"])
        assert HR_SECRET not in json.dumps(other)


async def check_question_limit(session_of: Any) -> None:
    async with session_of("dave") as dave:
        for _ in range(QUESTIONS_PER_MINUTE):
            data(await dave.call_tool("search", {"query": "holidays"}))
        limited = await dave.call_tool("search", {"query": "holidays"})
        assert limited.is_error
        assert "too many questions" in limited.content[0].text


def check_audited(site: Site, data_dir: Path, channel: str) -> None:
    events = site.audit(data_dir)
    assert any(e["event"] == "search" and e["actor"] == "bob" for e in events)
    assert any(e["event"] == "question" and e["actor"] == "alice" and e.get("channel") == channel for e in events)
    assert any(e["event"] == "read" and e["actor"] == "alice" for e in events)
    assert any(e["event"] == "api_key" and e["actor"] == "alice" and e.get("route") == "/mcp" for e in events)


# --- streamable HTTP -----------------------------------------------------------------------------------------


def test_over_http_each_key_sees_only_its_groups_documents_and_is_audited(site: Site) -> None:
    def session_of(name: str) -> Any:
        return http_session(site, site.keys[name])

    anyio.run(check_permissions, session_of, site)
    check_audited(site, site.data, "mcp")


def test_over_http_a_missing_or_wrong_key_is_refused_with_401(site: Site) -> None:
    hello = {"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {
        "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
    accept = {"accept": "application/json, text/event-stream"}
    for headers in ({}, {"Authorization": "Bearer rag-not-a-key"}):
        r = httpx.post(site.url + "/mcp", json=hello, headers={**accept, **headers})
        assert r.status_code == 401, r.text
        assert "Traceback" not in r.text
    ok = httpx.post(site.url + "/mcp", json=hello, headers={**accept, "Authorization": f"Bearer {site.keys['bob']}"})
    assert ok.status_code == 200, ok.text
    # DNS rebinding: a page of another site resolved to 127.0.0.1 does not reach /mcp of a loopback server.
    rebound = httpx.post(site.url + "/mcp", json=hello, headers={**accept, "host": "evil.example",
                                                                 "Authorization": f"Bearer {site.keys['bob']}"})
    assert rebound.status_code == 421
    # Found by an external attack run: a GET held a server-to-client stream open (one connection per
    # key, for good). Stateless: only POST.
    auth = {"Authorization": f"Bearer {site.keys['bob']}"}
    streamed = httpx.get(site.url + "/mcp", headers={"accept": "text/event-stream", **auth}, timeout=10)
    assert streamed.status_code == 405
    assert streamed.headers["allow"] == "POST"
    assert "no-store" in ok.headers["cache-control"]
    with pytest.raises(Exception):  # noqa: B017, PT011 - the SDK raises a transport error (an ExceptionGroup)
        anyio.run(_initialize_with, site, "rag-wrong")


async def _initialize_with(site: Site, key: str) -> None:
    async with http_session(site, key):
        pass


def test_over_http_the_question_limit_applies(site: Site) -> None:
    anyio.run(check_question_limit, lambda name: http_session(site, site.keys[name]))


# --- stdio (`appliance mcp`) ---------------------------------------------------------------------------------


def test_over_stdio_each_key_sees_only_its_groups_documents_and_is_audited(site: Site) -> None:
    key_file = site.root / "bob.key"
    key_file.write_text(site.keys["bob"] + "\n")

    def session_of(name: str) -> Any:  # bob's key from a file, alice's from the environment
        return stdio_session(site, key_file=key_file) if name == "bob" else stdio_session(site, site.keys[name])

    anyio.run(check_permissions, session_of, site)
    check_audited(site, site.stdio_data, "mcp-stdio")


def test_over_stdio_a_missing_or_wrong_key_is_refused(site: Site) -> None:
    base = [*CLI, "mcp", "--data-dir", str(site.stdio_data), "--config", str(site.config)]
    env = {k: v for k, v in os.environ.items() if k != "APPLIANCE_API_KEY"}
    missing = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, input="", env=env, timeout=120)
    assert missing.returncode != 0
    assert "an API key is needed" in missing.stderr
    wrong = subprocess.run(base, cwd=ROOT, capture_output=True, text=True, input="", timeout=120,
                           env={**env, "APPLIANCE_API_KEY": "rag-not-a-key"})
    assert wrong.returncode != 0
    assert "refused" in wrong.stderr
    assert wrong.stdout == ""
    locked = subprocess.run([*CLI, "mcp", "--data-dir", str(site.data), "--config", str(site.config)], cwd=ROOT,
                            capture_output=True, text=True, input="", timeout=120,
                            env={**env, "APPLIANCE_API_KEY": site.keys["bob"]})
    assert locked.returncode != 0
    assert "/mcp" in locked.stderr


def test_over_stdio_the_question_limit_applies(site: Site) -> None:
    anyio.run(check_question_limit, lambda name: stdio_session(site, site.keys[name]))
