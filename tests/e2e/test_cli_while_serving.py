"""Every command works while `serve` holds the embedded store, and prints what it prints without it:
`ask` is answered by the server (the same use case, the same audit line), the rest reads and writes
what the server shares safely. Real parser, embedder, store, model and server; the CLI runs beside it."""

from __future__ import annotations

import getpass
import json
import re
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

QUESTION = "How many bottles of water were delivered?"
PASSWORD = "a long enough passphrase 7"


class Cli:
    def __init__(self, data: Path, config: Path) -> None:
        self.common = ["--data-dir", str(data), "--config", str(config)]

    def __call__(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run([sys.executable, "-m", "appliance.cli", *args, *self.common], cwd=ROOT, input=stdin,
                              capture_output=True, text=True, timeout=300)
        assert "Traceback" not in proc.stderr, proc.stderr
        return proc


def _session(cli: Cli, name: str, check_key: object = None) -> list[tuple[int, str, str]]:
    """Every command the issue names, once; each (exit status, stdout, stderr) with the names, times,
    counts and the key made generic, so two sessions compare."""
    key = f"key-{name}"
    runs = [cli("ask", QUESTION), cli("ask", QUESTION, "--json"), cli("docs", "list"),
            cli("acl", "apply", "--dry-run"), cli("acl", "apply"),
            cli("users", "add", name, "--group", "finance", "--password-stdin", stdin=PASSWORD + "\n"),
            cli("users", "set", name, "--group", "hr"), cli("users", "passwd", name, "--password-stdin",
                                                            stdin=PASSWORD + "!\n"),
            cli("users", "list")]
    created = cli("keys", "create", key, "--user", name)
    assert created.returncode == 0, created.stderr
    token = created.stdout.strip()
    assert token.startswith("rag-")
    runs += [created, cli("keys", "list")]
    if callable(check_key):
        check_key(token, True)
    runs.append(cli("keys", "revoke", key))
    if callable(check_key):
        check_key(token, False)
    runs += [cli("users", "rm", name), cli("users", "list"), cli("audit", "verify"),
             cli("audit", "search", "--event", "question", "--limit", "1"),
             cli("audit", "search", "--event", "permissions", "--limit", "1"),
             cli("feedback", "export")]
    out = []
    for proc in runs:
        text = [proc.stdout, proc.stderr]
        for i, t in enumerate(text):
            t = t.replace(token, "TOKEN").replace(key, "KEY").replace(name, "NAME")
            t = re.sub(r"\d{4}-\d\d-\d\d[ T]\d\d:\d\d[0-9:.+]*", "TIME", t)
            t = re.sub(r"rag-[A-Za-z0-9_-]+\.\.\.", "HINT...", t)  # a key's first characters
            t = re.sub(r'"(ts|prev|hash)": "[^"]*"', r'"\1": "-"', t)
            text[i] = re.sub(r"^\d+ lines; intact", "N lines; intact", t, flags=re.M)
        out.append((proc.returncode, text[0], text[1]))
    return out


def _questions(data: Path) -> int:
    return sum('"event": "question"' in line for line in (data / "audit" / "audit.jsonl").read_text().splitlines())


def test_every_command_prints_the_same_while_serve_holds_the_store(tmp_path: Path) -> None:
    data, config = tmp_path / "data", tmp_path / "appliance.yaml"
    config.write_text("acl: []\n")
    cli = Cli(data, config)
    assert cli("ingest", str(SAMPLES / "fake-memo.pdf")).returncode == 0
    alone = _session(cli, "qa-user-1")
    assert [status for status, _, _ in alone] == [0] * len(alone), alone
    question_line = json.loads(alone[-3][1])
    assert (question_line["actor"], question_line["channel"]) == (f"cli:{getpass.getuser()}", "cli")

    with appliance_server(data, tmp_path / "server.log", {"APPLIANCE_CONFIG": str(config)}) as (url, _pid):
        token = json.loads((data / "server.json").read_text())["token"]
        asked = _questions(data)
        # The hand-over door is the local administrator's alone: no token, a wrong one, or the right one
        # relayed by a proxy (someone else's request) is refused before any question reaches the model.
        for path, body in (("/v1/admin/ask", {"question": QUESTION}), ("/v1/admin/ingest", {"paths": [str(SAMPLES)]})):
            for headers in ({}, {"authorization": "Bearer not-the-token"},
                            {"authorization": f"Bearer {token}", "x-forwarded-for": "10.0.0.9"},
                            {"authorization": f"Bearer {token}", "forwarded": "for=127.0.0.1"}):
                r = httpx.post(url + path, json=body, headers=headers, timeout=60)
                assert r.status_code in (401, 403), (path, headers, r.status_code, r.text[:200])
        assert _questions(data) == asked

        def check_key(key: str, valid: bool) -> None:  # keys made and revoked beside it count at once
            r = httpx.get(url + "/v1/documents", headers={"authorization": f"Bearer {key}"}, timeout=60)
            assert r.status_code == (200 if valid else 401), r.text[:200]

        served = _session(cli, "qa-user-2", check_key)
        log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log, log[-3000:]
    for (command, *_), before, after in zip(_COMMANDS, alone, served, strict=True):
        assert after == before, command
    lines = [json.loads(line) for line in (data / "audit" / "audit.jsonl").read_text().splitlines()]
    questions = [e for e in lines if e["event"] == "question"]
    assert len(questions) == asked + 2  # the two asks handed over
    for e in questions[-2:]:  # named as in the command's own process: the OS user, through `cli`
        assert (e["actor"], e["channel"]) == (f"cli:{getpass.getuser()}", "cli")
        assert e["sources"][0]["path"].endswith("fake-memo.pdf")
    permissions = [e for e in lines if e["event"] == "permissions"]
    assert [(e["actor"], e["via"]) for e in permissions[-2:]] == [(f"cli:{getpass.getuser()}", "cli")] * 2
    # The sources were printed through the server as in the command's own process.
    assert "Sources:" in served[0][1] or "Closest passages" in served[0][1]
    assert "fake-memo.pdf  page 1" in served[0][1]
    assert json.loads(served[1][1])["sources"][0]["file_name"] == "fake-memo.pdf"


_COMMANDS = [("ask",), ("ask --json",), ("docs list",), ("acl apply --dry-run",), ("acl apply",), ("users add",),
             ("users set",), ("users passwd",), ("users list",), ("keys create",), ("keys list",),
             ("keys revoke",), ("users rm",), ("users list (after rm)",), ("audit verify",),
             ("audit search question",), ("audit search permissions",), ("feedback export",)]
