"""Two replicas of `appliance serve` on one PostgreSQL database (database.url) and one shared folder
(shared_dir), as the Kubernetes Deployment runs them: a user signed in on one is signed in on the
other, a conversation started on one continues on the other, an API key and the rate limits count
on both, and signing out on one ends the session everywhere.

Each replica has its own embedded store, a copy of the same collection: the stand-in for the Qdrant
cluster they would share (no Qdrant server runs on the test machines)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.support.browser import chromium, launch
from tests.support.postgres import PgServer
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e]
PASSWORD = "Tulip-Harbor-9921"
WATER = "How many bottles of water were delivered?"
RUST = "Which command line tool manages Rust versions?"


@dataclass
class Replicas:
    a: str
    b: str
    key: str
    env: dict[str, str]
    data_a: Path
    logs: tuple[Path, Path]


def _cli(env: dict[str, str], data: Path, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args, "--data-dir", str(data)], cwd=ROOT,
                          capture_output=True, text=True, input=stdin, timeout=300, env={**os.environ, **env})


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory, postgres_server: PgServer) -> Iterator[Replicas]:
    root = tmp_path_factory.mktemp("replicas")
    docs, a, b = root / "share", root / "a", root / "b"
    docs.mkdir()
    for name in ("fake-memo.pdf", "rust-book-installation.md"):
        shutil.copy(SAMPLES / name, docs / name)
    env = {"APPLIANCE_DATABASE__URL": postgres_server.new_database(), "APPLIANCE_SHARED_DIR": str(root / "shared"),
           "APPLIANCE_AUTH__QUESTIONS_PER_MINUTE": "6", "APPLIANCE_LLM__MAX_ANSWER_TOKENS": "48"}
    r = _cli(env, a, "ingest", str(docs))
    assert r.returncode == 0, r.stderr
    assert not (a / "manifest.sqlite").exists()  # the manifest is in PostgreSQL
    shutil.copytree(a / "store", b / "store")  # the same collection for both
    assert _cli(env, a, "users", "add", "alice", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    r = _cli(env, a, "keys", "create", "reporting")
    assert r.returncode == 0, r.stderr
    key = next(w for w in r.stdout.split() if w.startswith("rag-"))
    logs = (root / "a.log", root / "b.log")
    audit = root / "shared" / "audit"  # one chain per replica
    with appliance_server(a, logs[0], {**env, "APPLIANCE_AUDIT__DIR": str(audit / "a")}) as (url_a, _), \
            appliance_server(b, logs[1], {**env, "APPLIANCE_AUDIT__DIR": str(audit / "b")}) as (url_b, _):
        yield Replicas(url_a, url_b, key, env, a, logs)
    for log in logs:
        assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_an_api_key_and_the_rate_limits_count_on_every_replica(replicas: Replicas) -> None:
    bearer = {"Authorization": f"Bearer {replicas.key}"}
    for url in (replicas.a, replicas.b):
        listed = httpx.get(url + "/v1/documents", headers=bearer, timeout=60).json()
        assert sorted(d["name"] for d in listed["documents"]) == ["fake-memo.pdf", "rust-book-installation.md"]
    codes = [httpx.post(url + "/v1/search", json={"query": "water bottles"}, headers=bearer, timeout=120).status_code
             for url in (replicas.a, replicas.b) * 4]
    assert codes[:6] == [200] * 6
    assert codes[6:] == [429, 429]  # 6 a minute, whichever replica was asked
    r = _cli(replicas.env, replicas.data_a, "keys", "revoke", "reporting")
    assert r.returncode == 0, r.stderr
    for url in (replicas.a, replicas.b):
        assert httpx.get(url + "/v1/documents", headers=bearer, timeout=60).status_code == 401


def test_sign_in_on_one_replica_and_go_on_with_the_conversation_on_the_other(replicas: Replicas) -> None:
    chromium()  # skips when there is none
    from playwright.sync_api import sync_playwright

    outside: list[str] = []

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith((replicas.a, replicas.b, "data:", "blob:")):
            route.continue_()
        else:
            outside.append(url)
            route.abort()

    with sync_playwright() as p:
        browser = launch(p)
        context = browser.new_context(viewport={"width": 1360, "height": 900})
        context.route("**/*", guard)
        on_a = context.new_page()
        on_a.goto(replicas.a + "/")
        on_a.fill("#username", "alice")
        on_a.fill("#password", PASSWORD)
        on_a.click("button[type=submit]")
        on_a.wait_for_selector("#question textarea", timeout=120_000)
        on_a.fill("#question textarea", WATER)
        on_a.keyboard.press("Enter")
        on_a.wait_for_function("document.querySelectorAll(\"#chat a[href^='#cite-']\").length > 0", timeout=180_000)
        assert "fake-memo.pdf" in on_a.inner_text("#chat")

        # The other replica (another port: the browser sends the same cookie): no sign-in asked.
        on_b = context.new_page()
        on_b.goto(replicas.b + "/")
        on_b.wait_for_selector("#question textarea", timeout=120_000)
        on_b.wait_for_function("document.querySelector('#who-bar').innerText.includes('alice')", timeout=60_000)
        on_b.wait_for_function("document.querySelector('#conversations')?.innerText.includes('bottles of water')",
                               timeout=60_000)
        on_b.locator("#conversations label", has_text="bottles of water").click()
        on_b.wait_for_function("document.querySelector('#chat').innerText.includes('fake-memo.pdf')", timeout=60_000)
        on_b.fill("#question textarea", RUST)
        on_b.keyboard.press("Enter")
        on_b.wait_for_function("document.querySelectorAll(\"#chat a[href^='#cite-']\").length > 1", timeout=180_000)
        time.sleep(1)
        cookies = {c["name"]: c["value"] for c in context.cookies()}
        (conv,) = httpx.get(replicas.a + "/v1/conversations", cookies=cookies, timeout=60).json()["conversations"]
        turns = httpx.get(f"{replicas.a}/v1/conversations/{conv['id']}", cookies=cookies, timeout=60).json()["turns"]
        assert [t["question"] for t in turns] == [WATER, RUST]  # one conversation, continued on B, seen on A
        (ROOT / "test-artifacts").mkdir(exist_ok=True)
        on_b.screenshot(path=str(ROOT / "test-artifacts" / "replicas-conversation-on-b.png"), full_page=True)

        on_b.click("#sign-out")
        on_b.wait_for_selector("#username", timeout=60_000)
        assert httpx.get(replicas.a + "/v1/conversations", cookies=cookies, timeout=60).status_code == 401
        on_a.reload()
        on_a.wait_for_selector("#username", timeout=60_000)  # signed out on A too
        browser.close()
    assert outside == []
