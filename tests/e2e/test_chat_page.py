"""The chat page in a real browser (Debian's Chromium, driven by Playwright) against a real
`appliance serve`: real documents, parser, embeddings, store and the shipped model.

Each test saves a screenshot under test-artifacts/; every request the browser makes is recorded,
and anything beyond this loopback server is blocked and fails the test that made it."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import ROOT
from tests.support.browser import chromium, launch
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
CLI = [sys.executable, "-m", "appliance.cli"]
PASSWORDS = {"alice": "Tulip-Harbor-9921", "bob": "Granite-Falcon-4410", "carol": "Copper-Meadow-5583"}
ARTIFACTS = ROOT / "test-artifacts"
FRAMEWORKS = "Which frameworks are existing deep learning models developed with?"
WATER = "How many bottles of water were delivered?"
RUST = "Which command line tool manages Rust versions?"


@dataclass
class Site:
    url: str
    data: Path
    log: Path
    outside: list[str] = field(default_factory=list)  # requests the browser tried beyond this server

    def cli(self, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*CLI, *args, "--data-dir", str(self.data)], cwd=ROOT, capture_output=True, text=True,
                              input=stdin, timeout=300)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    root = tmp_path_factory.mktemp("page")
    docs, data = root / "share", root / "data"
    docs.mkdir()
    for name in ("fake-memo.pdf", "layout-parser-paper-fast.pdf", "rust-book-installation.md"):
        shutil.copy(ROOT / "samples" / name, docs / name)
    s = Site("", data, root / "serve.log")
    r = s.cli("ingest", str(docs))
    assert r.returncode == 0, r.stderr
    for name in PASSWORDS:
        flags = ["--admin"] if name == "carol" else []
        r = s.cli("users", "add", name, *flags, "--password-stdin", stdin=PASSWORDS[name] + "\n")
        assert r.returncode == 0, r.stderr
    with appliance_server(data, s.log, {"APPLIANCE_LLM__MAX_ANSWER_TOKENS": "64"}) as (url, _pid):
        s.url = url
        yield s
    assert "Traceback" not in s.log.read_text(), s.log.read_text()[-3000:]


@pytest.fixture(scope="module")
def browser(site: Site) -> Iterator[Any]:
    chromium()  # skips when there is none
    from playwright.sync_api import sync_playwright

    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as p:
        b = launch(p)
        yield b
        b.close()


def _page(site: Site, browser: Any, user: str, width: int = 1360, height: int = 900, theme: str = "") -> Any:
    """A new browser context signed in as `user`; requests beyond the server are blocked and recorded."""
    context = browser.new_context(viewport={"width": width, "height": height})

    def guard(route: Any) -> None:
        url = route.request.url
        if url.startswith((site.url + "/", "data:", "blob:")) or url == site.url:
            route.continue_()
        else:
            site.outside.append(url)
            route.abort()

    context.route("**/*", guard)
    page = context.new_page()
    page.goto(site.url + "/" + (f"?__theme={theme}" if theme else ""))
    page.fill("#username", user)
    page.fill("#password", PASSWORDS[user])
    page.click("button[type=submit]")
    page.wait_for_selector("#question textarea", timeout=120_000)
    page.wait_for_function("document.querySelector('#who-bar').innerText.includes('Signed in as')", timeout=60_000)
    return page


def _ask(page: Any, question: str) -> str:
    """Type the question, press Enter, and wait for the finished answer (its sources listed)."""
    before = page.locator("#chat a[href^='#cite-']").count()
    answered = page.locator("#chat").inner_text().count("ⓘ No document answers this")
    page.fill("#question textarea", question)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([before, answered]) => document.querySelectorAll(\"#chat a[href^='#cite-']\").length > before || "
        "document.querySelector('#chat').innerText.split('ⓘ No document answers this').length - 1 > answered",
        arg=[before, answered], timeout=180_000)
    return str(page.locator("#chat").inner_text())


def _shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"chat-page-{name}.png"), full_page=True)


def _audit(site: Site) -> list[dict[str, Any]]:
    lines = []
    for path in sorted((site.data / "audit").glob("audit*.jsonl")):
        lines += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return lines


def _cookies(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}


def test_an_answer_streams_and_its_citation_opens_the_passage_and_page(site: Site, browser: Any) -> None:
    page = _page(site, browser, "alice")
    # Every version of the chat's text while the answer is written: streaming shows partial answers.
    page.evaluate("""() => { window.__snapshots = [];
        new MutationObserver(() => window.__snapshots.push(document.querySelector('#chat').innerText))
          .observe(document.querySelector('#chat'), {subtree: true, childList: true, characterData: true}); }""")
    text = _ask(page, FRAMEWORKS)
    assert "Sources:" in text
    assert "layout-parser-paper-fast.pdf, page" in text
    snapshots: list[str] = page.evaluate("window.__snapshots")
    answer = text.split(FRAMEWORKS, 1)[1].split("Sources:", 1)[0].strip()
    partial = {s.split(FRAMEWORKS, 1)[1].strip() for s in snapshots
               if FRAMEWORKS in s and "Sources:" not in s and "Searching" not in s}
    partial.discard("")
    assert len(partial) >= 2, partial  # several growing versions before the finished answer
    assert any(answer.startswith(p[: max(1, len(p) - 2)]) for p in partial)

    # The answer opens its first cited source; a click on another citation opens that one.
    page.wait_for_selector("#source-view mark#cited-passage", timeout=60_000)
    links = page.locator("#chat a[href^='#cite-']")
    hrefs = [links.nth(i).get_attribute("href") for i in range(links.count())]
    last = max(hrefs, key=lambda h: int(str(h).rsplit("-", 1)[1]))
    n = str(last).rsplit("-", 1)[1]
    assert n != "1", hrefs  # two sources at least
    page.locator(f"#chat a[href='{last}']").last.click()
    page.wait_for_function(f"document.querySelector('#source-view .source-head').innerText.startsWith('[{n}]')",
                           timeout=60_000)
    assert page.locator("#source-pick input:checked").get_attribute("value") == n
    page.locator(f"#chat a[href='{str(last).rsplit('-', 1)[0]}-1']").last.click()  # back to [1]
    page.wait_for_function("document.querySelector('#source-view .source-head').innerText.startsWith('[1]')",
                           timeout=60_000)
    view = page.inner_text("#source-view")
    assert "layout-parser-paper-fast.pdf" in view
    assert "page" in view
    image = page.locator("#source-view img#source-page")
    image.scroll_into_view_if_needed()
    page.wait_for_function("document.querySelector('#source-page').complete && "
                           "document.querySelector('#source-page').naturalWidth > 0", timeout=60_000)
    assert abs(page.evaluate("document.querySelector('#source-page').naturalWidth") - 900) <= 2
    assert page.locator("#source-pick input:checked").count() == 1
    # The original file downloads for its reader.
    href = page.get_attribute("#source-download", "href")
    assert href
    original = httpx.get(site.url + href, cookies=_cookies(page))
    assert original.status_code == 200
    assert original.content.startswith(b"%PDF")
    assert original.content == (ROOT / "samples" / "layout-parser-paper-fast.pdf").read_bytes()
    _shot(page, "source-opened")
    page.context.close()
    assert site.outside == []


def test_feedback_with_a_comment_is_stored_and_exported(site: Site, browser: Any) -> None:
    page = _page(site, browser, "bob")
    _ask(page, WATER)
    page.locator("#chat button[aria-label='Dislike'], #chat button[title='Dislike']").last.click()
    page.wait_for_function("document.querySelector('#feedback-note').innerText.includes('rated')", timeout=30_000)
    page.fill("#feedback-comment textarea, #feedback-comment input", "The memo gives the number, say it first")
    page.click("#feedback-send")
    page.wait_for_function("document.querySelector('#feedback-note').innerText.includes('comment is saved')",
                           timeout=30_000)
    _shot(page, "feedback")
    r = site.cli("feedback", "export", "--rating", "down")
    assert r.returncode == 0, r.stderr
    rows = [json.loads(line) for line in r.stdout.splitlines()]
    mine = [row for row in rows if row["user"] == "bob"]
    assert len(mine) == 1  # the rating and its comment: one rated answer, its last version
    assert mine[0]["comment"] == "The memo gives the number, say it first"
    assert mine[0]["question"] == WATER
    assert any(s["path"].endswith("fake-memo.pdf") and s["page"] == 1 for s in mine[0]["sources"])
    page.context.close()
    assert site.outside == []


def test_regenerate_then_reload_finds_the_conversation_again(site: Site, browser: Any) -> None:
    page = _page(site, browser, "carol")
    first = _ask(page, WATER)
    assert "fake-memo.pdf" in first
    page.click("#regenerate")
    # The old answer's citations are on the page until regenerate replaces them: wait for the new answer
    # to be saved (the old turn is dropped when it starts, the new one saved when it ends).
    deadline, turns = time.monotonic() + 180, {"turns": []}
    while time.monotonic() < deadline:
        conversations = httpx.get(site.url + "/v1/conversations", cookies=_cookies(page)).json()["conversations"]
        assert len(conversations) == 1
        turns = httpx.get(f"{site.url}/v1/conversations/{conversations[0]['id']}", cookies=_cookies(page)).json()
        busy = "Searching the documents" in page.inner_text("#chat")
        if turns["turns"] and not busy and page.locator("#chat a[href^='#cite-']").count() > 0:
            break
        time.sleep(0.5)
    assert len(turns["turns"]) == 1  # the regenerated answer replaced the first one
    page.reload()
    page.wait_for_function("document.querySelector('#conversations')?.innerText.includes('bottles of water')",
                           timeout=60_000)
    assert page.locator("#chat a[href^='#cite-']").count() == 0  # a reloaded page starts a new conversation
    page.locator("#conversations label", has_text="bottles of water").click()
    page.wait_for_function("document.querySelector('#chat').innerText.includes('fake-memo.pdf')", timeout=60_000)
    page.locator("#chat a[href^='#cite-']").first.click()
    page.wait_for_selector("#source-view mark#cited-passage", timeout=60_000)
    assert "fake-memo.pdf" in page.inner_text("#source-view")
    _shot(page, "reloaded-conversation")
    # Rename, then delete: the list and the store follow.
    page.click("text=Rename or delete this conversation")
    title = page.locator("#conv-title input, #conv-title textarea").first
    title.wait_for(state="visible", timeout=30_000)
    title.fill("Water delivery")
    page.click("#conv-rename")
    page.wait_for_function("document.querySelector('#conversations').innerText.includes('Water delivery')",
                           timeout=60_000)
    listed = httpx.get(site.url + "/v1/conversations", cookies=_cookies(page)).json()["conversations"]
    assert [c["title"] for c in listed] == ["Water delivery"]
    page.click("#conv-delete")
    page.wait_for_function("!document.querySelector('#conversations').innerText.includes('Water delivery')",
                           timeout=60_000)
    assert httpx.get(site.url + "/v1/conversations", cookies=_cookies(page)).json()["conversations"] == []
    assert page.locator("#chat a[href^='#cite-']").count() == 0
    page.context.close()
    assert site.outside == []


def test_escape_stops_the_answer_and_shift_enter_starts_a_new_line(site: Site, browser: Any) -> None:
    page = _page(site, browser, "alice")
    box = page.locator("#question textarea")
    box.click()
    page.keyboard.type("first line")
    page.keyboard.press("Shift+Enter")
    page.keyboard.type("second line")
    assert box.input_value() == "first line\nsecond line"
    assert "first line" not in page.inner_text("#chat")  # not sent
    box.fill("Describe in detail every component and library that the layout parser paper builds on.")
    page.keyboard.press("Enter")
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Describe in detail')",
                           timeout=30_000)
    page.keyboard.press("Escape")
    time.sleep(8)  # longer than the whole answer takes: a stopped one never finishes
    text = page.inner_text("#chat")
    assert "Sources:" not in text
    conversations = httpx.get(site.url + "/v1/conversations", cookies=_cookies(page)).json()["conversations"]
    assert all("Describe in detail" not in c["title"] for c in conversations)  # nothing saved
    # The page goes on: the next question is answered.
    assert "Sources:" in _ask(page, WATER)
    page.context.close()
    assert site.outside == []


def test_a_file_uploaded_in_the_library_is_listed_and_answered_from(site: Site, browser: Any,
                                                                    tmp_path: Path) -> None:
    page = _page(site, browser, "bob")
    page.click("button[role=tab]:has-text('Library')")
    page.wait_for_function("document.querySelector('#library-table').innerText.includes('fake-memo.pdf')",
                           timeout=60_000)
    upload = tmp_path / "travel-policy.md"
    upload.write_text("# Travel policy\n\nEmployees travelling abroad book through the travel desk. The travel "
                      "desk reference code is TRV-2291 and its phone extension is 4412.\n")
    broken = tmp_path / "notes.exe"
    broken.write_bytes(b"MZ not a document")
    page.set_input_files("#upload-files input[type=file]", [str(upload), str(broken)])
    page.wait_for_function("document.querySelector('#upload-files').innerText.includes('travel-policy.md')",
                           timeout=60_000)
    page.click("#upload-go")
    page.wait_for_function("document.querySelector('#upload-note').innerText.includes('files ingested')",
                           timeout=180_000)
    results = page.inner_text("#upload-results")
    assert re.search(r"travel-policy\.md\s+added", results), results
    assert re.search(r"notes\.exe\s+refused", results), results
    assert "unsupported file type" in results
    table = page.inner_text("#library-table")
    assert "travel-policy.md" in table
    assert "notes.exe" not in table
    page.fill("#library-search input, #library-search textarea", "travel")
    page.keyboard.press("Enter")
    page.wait_for_function("!document.querySelector('#library-table').innerText.includes('fake-memo.pdf')",
                           timeout=30_000)
    assert "1 of" in page.inner_text("#library-summary")
    _shot(page, "library")
    page.click("button[role=tab]:has-text('Chat')")
    text = _ask(page, "What is the travel desk reference code?")
    assert "travel-policy.md" in text
    # Another user does not see bob's upload (readable by him alone).
    other = _page(site, browser, "alice")
    other.click("button[role=tab]:has-text('Library')")
    other.wait_for_function("document.querySelector('#library-table').innerText.includes('fake-memo.pdf')",
                            timeout=60_000)
    assert "travel-policy.md" not in other.inner_text("#library-table")
    assert not other.locator("#library-reingest").is_visible()  # administrators only
    page.context.close()
    other.context.close()
    assert site.outside == []


def test_an_administrator_sees_status_and_re_ingests_a_document(site: Site, browser: Any) -> None:
    page = _page(site, browser, "carol")
    page.click("button[role=tab]:has-text('Status')")
    page.wait_for_function("document.querySelector('#health').innerText.includes('Ready')", timeout=60_000)
    health = page.inner_text("#health")
    assert "chunks in the store" in health
    assert "Documents:" in health
    page.click("button[role=tab]:has-text('Library')")
    page.wait_for_function("document.querySelector('#library-table').innerText.includes('fake-memo.pdf')",
                           timeout=60_000)
    page.locator("#library-table").get_by_text("fake-memo.pdf", exact=True).first.click()
    page.wait_for_function("document.querySelector('#library-action') && "
                           "document.body.innerText.includes('Selected: fake-memo.pdf')", timeout=30_000)
    page.click("#library-reingest")
    page.wait_for_function("document.querySelector('#library-action').innerText.includes('chunks')",
                           timeout=180_000)
    assert "updated" in page.inner_text("#library-action")
    _shot(page, "library-admin")
    page.click("button[role=tab]:has-text('Status')")
    _shot(page, "status")
    # Answer settings: a threshold no passage reaches makes every answer say the documents don't.
    page.fill("#setting-min-similarity input[type=number]", "0.9")
    page.keyboard.press("Enter")
    page.click("#settings-apply")
    page.wait_for_function("document.body.innerText.includes('min_similarity 0.9')", timeout=30_000)
    page.click("button[role=tab]:has-text('Chat')")
    assert "ⓘ No document answers this" in _ask(page, WATER)
    page.click("button[role=tab]:has-text('Status')")
    page.fill("#setting-min-similarity input[type=number]", "0.35")
    page.keyboard.press("Enter")
    page.click("#settings-apply")
    page.wait_for_function("document.body.innerText.includes('min_similarity 0.35')", timeout=30_000)
    assert any(e["event"] == "settings" and e["actor"] == "carol" for e in _audit(site))
    # An employee sees no Status tab, and its handlers refuse them anyway.
    employee = _page(site, browser, "alice")
    assert employee.locator("button[role=tab]:has-text('Status')").count() == 0
    page.context.close()
    employee.context.close()
    assert site.outside == []


def test_two_browsers_never_see_each_others_conversation_or_selection(site: Site, browser: Any) -> None:
    alice, bob = _page(site, browser, "alice"), _page(site, browser, "bob")
    rust, frameworks = RUST, "Which deep learning frameworks are the existing models developed with?"
    alice.fill("#question textarea", rust)
    bob.fill("#question textarea", frameworks)
    alice.keyboard.press("Enter")
    bob.keyboard.press("Enter")  # both answered at once
    for page in (alice, bob):
        page.wait_for_function("document.querySelectorAll(\"#chat a[href^='#cite-']\").length > 0", timeout=180_000)
    alice.locator("#chat a[href^='#cite-']").first.click()
    alice.wait_for_selector("#source-view mark#cited-passage", timeout=60_000)
    a_chat, b_chat = alice.inner_text("#chat"), bob.inner_text("#chat")
    assert rust in a_chat
    assert frameworks not in a_chat
    assert frameworks in b_chat
    assert rust not in b_chat
    assert "rust-book-installation.md" in alice.inner_text("#source-view")
    assert "rust-book" not in bob.inner_text("#source-view")  # bob's panel keeps his own selection
    assert frameworks not in alice.inner_text("#conversations")
    assert rust not in bob.inner_text("#conversations")
    _shot(alice, "alice-beside-bob")
    alice.context.close()
    bob.context.close()
    assert site.outside == []


def _contrast(page: Any, selector: str) -> float:
    """WCAG contrast ratio of the element's text against the first opaque background behind it."""
    return float(page.evaluate("""(selector) => {
        const el = document.querySelector(selector);
        const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
        const lum = ([r, g, b]) => { const f = (v) => { v /= 255;
            return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4); };
            return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b); };
        let bg = null;
        for (let node = el; node; node = node.parentElement) {
            const c = rgb(getComputedStyle(node).backgroundColor);
            if (c.length < 4 || c[3] > 0.9) { bg = c; break; }
        }
        bg = bg || [255, 255, 255];
        const [a, b] = [lum(rgb(getComputedStyle(el).color)), lum(bg)].sort((x, y) => y - x);
        return (a + 0.05) / (b + 0.05);
    }""", selector))


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_text_is_readable_in_both_themes_and_at_phone_width(site: Site, browser: Any, theme: str) -> None:
    page = _page(site, browser, "alice", width=390, height=844, theme=theme)
    _ask(page, WATER)
    page.locator("#chat a[href^='#cite-']").first.click()
    page.wait_for_selector("#source-view mark#cited-passage", timeout=60_000)
    for selector in ("#chat .message-content, #chat .bot", "#source-view mark#cited-passage",
                     "#source-view .source-head b", "#who-bar #who"):
        ratio = _contrast(page, selector)
        assert ratio >= 4.5, (theme, selector, ratio)  # WCAG AA for body text
    width = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width[0] <= width[1] + 1, width  # no sideways scrolling on a phone
    box = page.locator("#question").bounding_box()
    assert box is not None
    assert box["x"] >= 0
    assert box["x"] + box["width"] <= 391
    # On a phone the chat comes before the conversation list.
    chat_y = page.locator("#chat").bounding_box()["y"]
    assert chat_y < page.locator("#conversations").bounding_box()["y"]
    _shot(page, f"phone-{theme}")
    page.context.close()
    assert site.outside == []
