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
from tests.support.browser import chromium, contrast_report, launch, missing_glyphs
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e, pytest.mark.browser]
CLI = [sys.executable, "-m", "appliance.cli"]
PASSWORDS = {"alice": "Tulip-Harbor-9921", "bob": "Granite-Falcon-4410", "carol": "Copper-Meadow-5583",
             "dave": "Walnut-Lantern-3307", "erin": "Cobalt-Orchard-6618"}
ADMINS = {"carol", "dave"}
ARTIFACTS = ROOT / "test-artifacts"
FRAMEWORKS = "Which frameworks are existing deep learning models developed with?"
WATER = "How many bottles of water were delivered?"
RUST = "Which command line tool manages Rust versions?"
NO_DOCUMENT = "No document answers this"


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
        flags = ["--admin"] if name in ADMINS else []
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
    """A new browser context signed in as `user`; requests beyond the server are blocked and recorded.
    The theme is the browser's colour scheme, which the page follows (a ?__theme= is lost in sign-in)."""
    context = browser.new_context(viewport={"width": width, "height": height}, color_scheme=theme or "light")

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
    assert page.evaluate("document.body.classList.contains('dark')") == (theme == "dark")
    return page


def _ask(page: Any, question: str) -> str:
    """Type the question, press Enter, and wait for the finished answer (its sources listed, Send back)."""
    before = page.locator("#chat a[href^='#cite-']").count()
    answered = page.locator("#chat").inner_text().count(NO_DOCUMENT)
    page.wait_for_selector("#question .submit-button", timeout=60_000)  # a stopped answer has ended
    page.fill("#question textarea", question)
    page.keyboard.press("Enter")
    page.wait_for_function(
        "([before, answered, none]) => document.querySelectorAll(\"#chat a[href^='#cite-']\").length > before || "
        "document.querySelector('#chat').innerText.split(none).length - 1 > answered",
        arg=[before, answered, NO_DOCUMENT], timeout=180_000)
    page.wait_for_selector("#question .submit-button", timeout=60_000)
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
    answer = re.sub(r"^Weak match:.*?relying on the answer\.\s*", "", answer)  # said once the answer is checked
    partial = {s.split(FRAMEWORKS, 1)[1].strip() for s in snapshots
               if FRAMEWORKS in s and "Sources:" not in s and "Searching" not in s}
    partial.discard("")
    assert len(partial) >= 2, partial  # several growing versions before the finished answer
    assert any(answer.startswith(p[: max(1, len(p) - 2)]) for p in partial)

    # Hovering a citation previews its passage (the link's title: where it is, then its first words).
    preview = page.locator("#chat a[href^='#cite-']").first.get_attribute("title")
    assert preview
    assert preview.startswith("layout-parser-paper-fast.pdf, page ")
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
    # The page comes with the passage marked on it, and opens full size.
    src = str(page.get_attribute("#source-page", "src"))
    assert "passage=" in src
    assert httpx.get(site.url + src, cookies=_cookies(page)).headers["x-passage-marked"] == "1"
    assert "width=2000" in str(page.get_attribute("#source-page-full", "href"))
    # How well it matched, in words (the number is for administrators, on hover).
    assert any(w in view for w in ("strong match", "partial match", "weak match")), view
    assert "similarity" not in view
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
    dislike = "#chat button[aria-label='Dislike'], #chat button[title='Dislike']"
    page.locator(dislike).last.click()
    page.wait_for_function("document.querySelector('#feedback-note').innerText.includes('rated')", timeout=30_000)
    disliked = "#chat button[aria-label='Disliked']"  # Gradio's label for the chosen rating
    assert page.locator(disliked).count() == 1
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
    # Reopened later, the answer shows its rating again.
    page.click("#new-conv")
    page.wait_for_function("!document.querySelector('#chat').innerText.includes('bottles of water')", timeout=30_000)
    page.locator("#conversations label", has_text="bottles of water").click()
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Sources:')", timeout=30_000)
    page.locator(disliked).wait_for(timeout=30_000)
    assert page.locator(disliked).count() == 1
    page.context.close()
    assert site.outside == []


def test_regenerate_then_reload_finds_the_conversation_again(site: Site, browser: Any) -> None:
    page = _page(site, browser, "carol")
    first = _ask(page, WATER)
    assert "fake-memo.pdf" in first
    page.locator("#chat button[aria-label='Retry']").last.click()  # in the answer's own row of actions
    page.wait_for_selector("#question .stop-button", timeout=30_000)
    page.wait_for_selector("#question .submit-button", timeout=180_000)
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
    # Delete asks first: "no" keeps the conversation, "yes" deletes it.
    page.once("dialog", lambda dialog: dialog.dismiss())
    page.click("#conv-delete")
    page.wait_for_function("document.body.innerText.includes('Kept.')", timeout=30_000)
    assert [c["title"] for c in httpx.get(site.url + "/v1/conversations", cookies=_cookies(page)).json()[
        "conversations"]] == ["Water delivery"]
    page.once("dialog", lambda dialog: dialog.accept())
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
    page.wait_for_selector("#question .stop-button", timeout=30_000)  # Send has become Stop
    page.keyboard.press("Escape")
    time.sleep(8)  # longer than the whole answer takes: a stopped one never finishes
    page.wait_for_function("document.querySelector('#chat').innerText.includes('Stopped before the answer')",
                           timeout=30_000)
    text = page.inner_text("#chat")
    assert "Sources:" not in text  # it never finished
    # What was written is kept in the conversation, marked stopped.
    conversations = httpx.get(site.url + "/v1/conversations", cookies=_cookies(page)).json()["conversations"]
    stopped = next(c for c in conversations if "Describe in detail" in c["title"])
    turns = httpx.get(f"{site.url}/v1/conversations/{stopped['id']}", cookies=_cookies(page)).json()["turns"]
    assert len(turns) == 1
    assert turns[0]["answer"].endswith("[stopped]")
    # The page goes on: the next question is answered, in the same conversation.
    assert "Sources:" in _ask(page, WATER)
    turns = httpx.get(f"{site.url}/v1/conversations/{stopped['id']}", cookies=_cookies(page)).json()["turns"]
    assert len(turns) == 2
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
    # One progress display while it works, not one on each output of the upload.
    shown = page.evaluate("""() => new Promise((done) => { let most = 0; const t0 = Date.now();
        const tick = () => { most = Math.max(most, document.querySelectorAll(
            "[data-testid='status-tracker']:not(.hide)").length);
          if (Date.now() - t0 > 3000) { done(most); } else { setTimeout(tick, 50); } }; tick(); })""")
    assert shown == 1, shown
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
    assert NO_DOCUMENT in _ask(page, WATER)
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


def _controls_below_aa(page: Any, view: str, bad: dict[tuple[str, str, str], float]) -> int:
    """Adds each visible control whose text (or icon) is below WCAG AA to `bad`; the number checked.
    Gradio's progress overlays (a faded block while its event runs) are waited out first."""
    page.wait_for_function("![...document.querySelectorAll('[data-testid=status-tracker]')]"
                           ".some((e) => !e.classList.contains('hide') && e.checkVisibility())", timeout=60_000)
    report = contrast_report(page)
    for r in report:
        if r["ratio"] < r["need"]:
            bad[(view, r["where"], f"{r['what']} {r['text']!r}")] = r["ratio"]
    return len(report)


def _open_tab(page: Any, name: str) -> None:
    """A tab by its label; at phone width the last ones are behind the tab bar's "More tabs" menu."""
    tab = page.locator(f"button[role=tab]:has-text('{name}')")
    if not tab.is_visible():
        page.click("button[aria-label='More tabs']")
        tab = page.locator(f".overflow-dropdown button:has-text('{name}')")
    tab.click()
    page.wait_for_function(f"document.querySelector('button[role=tab][aria-selected=true]')?.innerText === '{name}'",
                           timeout=30_000)


@pytest.mark.parametrize("width", [390, 1440])
@pytest.mark.parametrize("theme", ["light", "dark"])
def test_every_visible_control_meets_wcag_aa_contrast_in_both_themes(site: Site, browser: Any, theme: str,
                                                                     width: int) -> None:
    """Walks every tab an administrator sees, the chat while an answer streams (Stop in place of Send)
    and after it (a source opened, the conversation menu open), and the tab bar's overflow menu."""
    page = _page(site, browser, "dave", width=width, height=900 if width > 700 else 844, theme=theme)
    bad: dict[tuple[str, str, str], float] = {}
    checked = _controls_below_aa(page, "chat, empty", bad)
    page.fill("#question textarea", FRAMEWORKS)
    page.keyboard.press("Enter")
    page.wait_for_function(f"document.querySelector('#chat').innerText.includes({FRAMEWORKS!r})", timeout=30_000)
    checked += _controls_below_aa(page, "chat, answering", bad)  # Stop in place of Send
    page.wait_for_selector("#source-view mark#cited-passage", timeout=180_000)
    page.wait_for_selector("#question .submit-button", timeout=60_000)
    if width < 700:  # on a phone the conversations are a drawer
        page.click("#drawer-toggle")
    page.click("text=Rename or delete this conversation")
    page.locator("#conv-title input, #conv-title textarea").first.wait_for(state="visible", timeout=30_000)
    checked += _controls_below_aa(page, "chat, answered", bad)
    if width < 700:
        page.mouse.click(380, 400)  # beside the drawer: it closes
    _shot(page, f"contrast-{theme}-{width}")
    for tab in ("Library", "Status", "Users", "Audit"):
        _open_tab(page, tab)
        page.wait_for_timeout(1000)  # the tab's tables fill in
        checked += _controls_below_aa(page, tab, bad)
    if width < 700:
        page.click("button[aria-label='More tabs']")
        checked += _controls_below_aa(page, "More tabs menu", bad)
    assert checked > 100, checked  # the walk found the page's controls
    assert bad == {}, (theme, width, bad)
    if width < 700:
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1] + 1, widths  # no sideways scrolling on a phone
        _open_tab(page, "Chat")
        box = page.locator("#question").bounding_box()
        assert box is not None
        assert box["x"] >= 0
        assert box["x"] + box["width"] <= width + 1
        # On a phone the conversation list is a drawer, closed: the chat has the screen.
        assert not page.locator("#conversations").is_visible()
        _shot(page, f"phone-{theme}")
    page.context.close()
    assert site.outside == []


def test_a_question_typed_while_an_answer_is_written_is_kept_and_sent_after(site: Site, browser: Any) -> None:
    page = _page(site, browser, "alice")
    assert page.locator("#stop-answer, #regenerate").count() == 0  # no permanent Stop and Regenerate row
    box = page.locator("#question textarea")
    box.fill(FRAMEWORKS)
    page.keyboard.press("Enter")
    page.keyboard.type("How many bottles")
    assert box.input_value() == "How many bottles"  # emptied as the question was sent, nothing typed lost
    stop = page.locator("#question .stop-button")
    stop.wait_for(timeout=30_000)  # Send became Stop
    assert stop.inner_text().strip() == "Stop"
    assert page.locator("#question .submit-button").count() == 0
    page.keyboard.type(" of water were delivered?")
    page.keyboard.press("Enter")  # while the answer is written, Enter leaves the typed question alone
    seen = set()
    while stop.count() > 0:  # every token of the answer: the typed question stays
        seen.add(box.input_value())
        page.wait_for_timeout(100)
    seen.add(box.input_value())
    assert seen <= {"How many bottles", WATER}, seen
    page.wait_for_selector("#question .submit-button", timeout=30_000)  # Send again
    assert box.input_value() == WATER
    assert "Sources:" in page.inner_text("#chat")
    assert FRAMEWORKS in page.inner_text("#chat")
    assert WATER not in page.inner_text("#chat")  # not sent while the first answer was written
    # Regenerate is in the answer's own row of actions.
    assert page.locator("#chat button[aria-label='Retry']").count() == 1
    _shot(page, "typed-while-answering")
    page.keyboard.press("Enter")  # the kept question is sent
    page.wait_for_function(f"document.querySelector('#chat').innerText.includes({WATER!r})", timeout=30_000)
    page.wait_for_function("document.querySelector('#question textarea').value === ''", timeout=5_000)
    page.wait_for_function("document.querySelector('#chat').innerText.split('Sources:').length === 3",
                           timeout=180_000)
    page.context.close()
    assert site.outside == []


def test_a_key_typed_between_enter_and_the_send_stays_in_the_box(site: Site, browser: Any) -> None:
    """Replays CI's race: a key typed after Enter but before Gradio reads the box belongs to the next
    question. It used to be wiped with the sent question (the box kept "ow many bottles")."""
    page = _page(site, browser, "alice")
    box = page.locator("#question textarea")
    box.fill(FRAMEWORKS)
    # Enter and a key in one turn of the page's event loop: the key lands before the send runs.
    page.evaluate("""() => {
      const box = document.querySelector('#question textarea');
      box.focus();
      for (const type of ['keydown', 'keypress']) {
        box.dispatchEvent(new KeyboardEvent(type, {key: 'Enter', bubbles: true, cancelable: true}));
      }
      box.value += 'H';
      box.dispatchEvent(new Event('input', {bubbles: true}));
    }""")
    page.locator("#question .stop-button").wait_for(timeout=30_000)
    assert box.input_value() == "H"
    page.wait_for_selector("#question .submit-button", timeout=180_000)
    chat = page.inner_text("#chat")
    assert FRAMEWORKS in chat
    assert f"{FRAMEWORKS}H" not in chat  # the question as it was at Enter
    assert box.input_value() == "H"
    page.context.close()
    assert site.outside == []


def test_copy_conversation_and_copy_message_copy_plain_text(site: Site, browser: Any) -> None:
    page = _page(site, browser, "bob")
    page.context.grant_permissions(["clipboard-read", "clipboard-write"])
    question = "What's the number of bottles of water delivered?"
    _ask(page, question)
    page.locator("#chat button[aria-label='Copy conversation']").click()
    page.wait_for_timeout(500)
    copied = str(page.evaluate("navigator.clipboard.readText()"))
    answer = page.locator("#chat .message-row.bot-row .message-content").last.inner_text()
    body = answer.split("Sources:")[0].strip()
    assert copied.startswith(f"Question: {question}\n\nAnswer: {body}"), copied
    for markup in ("<small", "</", "&#", "&amp;", "](#cite-", "[[", "**"):
        assert markup not in copied, (markup, copied)
    sources = copied.split("\n\nSources:\n", 1)[1].splitlines()
    assert sources, copied
    assert all(re.fullmatch(r"\[\d+\] .+", line) for line in sources), sources  # one source a line
    assert any("fake-memo.pdf, page 1" in line for line in sources), sources
    page.locator("#chat .message-buttons button[aria-label='Copy message']").last.click()
    page.wait_for_timeout(500)
    message = str(page.evaluate("navigator.clipboard.readText()"))
    assert message == copied.split("Answer: ", 1)[1], message
    page.context.close()
    assert site.outside == []


def test_long_names_and_notes_fit_and_every_glyph_is_drawn(site: Site, browser: Any, tmp_path: Path) -> None:
    """The Library's columns fit 1360 px with headers on one line and notes in full; a name with no
    space breaks in the source panel; no character of the page is an empty box (no "ⓘ")."""
    page = _page(site, browser, "erin")
    page.click("button[role=tab]:has-text('Library')")
    page.wait_for_function("document.querySelector('#library-table').innerText.includes('fake-memo.pdf')",
                           timeout=60_000)
    long_name = "Cafeteria_menu_and_opening_hours_for_the_northern_campus_buildings_2024_final.md"
    (tmp_path / long_name).write_text("# Cafeteria\n\nThe northern campus cafeteria serves lunch from 11:30 to "
                                      "14:00; its soup of the day on Fridays is lentil soup with lemon.\n")
    broken = tmp_path / "Scanned_contract_with_the_cleaning_company_signed_copy.pdf"
    broken.write_bytes(b"%PDF-1.4\nthis file was cut short in transfer and is not a PDF\n")
    page.set_input_files("#upload-files input[type=file]", [str(tmp_path / long_name), str(broken)])
    page.wait_for_function("document.querySelector('#upload-files').innerText.includes('Cafeteria')", timeout=60_000)
    page.click("#upload-go")
    page.wait_for_function("document.querySelector('#upload-note').innerText.includes('files ingested')",
                           timeout=180_000)
    page.click("#library-refresh")
    page.wait_for_function("document.querySelector('#library-table').innerText.includes('Scanned_contract')",
                           timeout=60_000)
    table = page.inner_text("#library-table")
    assert "failed" in table
    layout = page.evaluate("""() => {
        const table = document.querySelector('#library-table .table-wrap, #library-table');
        const edge = table.getBoundingClientRect().right;
        const heads = [...document.querySelectorAll('#library-table th[role=columnheader]')].map((th) => {
            const label = th.querySelector('.header') || th;
            const line = parseFloat(getComputedStyle(label).lineHeight);
            const lines = Math.round(label.getBoundingClientRect().height / line);
            return { text: label.innerText.trim(), lines, right: Math.round(th.getBoundingClientRect().right) };
        });
        const cut = [...document.querySelectorAll('#library-table td')].filter((td) => td.innerText.trim()).flatMap(
            (td) => [...td.querySelectorAll('*')].filter((e) => e.scrollWidth > e.clientWidth + 1 ||
                e.scrollHeight > e.clientHeight + 1 && getComputedStyle(e).overflowY !== 'visible')
              .map((e) => td.innerText.trim().slice(0, 40)));
        return { edge: Math.round(edge), heads, cut };
    }""")
    assert [h["text"] for h in layout["heads"]] == ["name", "type", "pages", "chunks", "ingested at", "status",
                                                    "error or notes", "folder"], layout
    assert all(h["lines"] == 1 for h in layout["heads"]), layout  # no header wrapped letter by letter
    assert all(h["right"] <= layout["edge"] + 1 for h in layout["heads"]), layout  # "folder" on screen
    assert layout["cut"] == [], layout  # no truncated cell: the error in full
    _shot(page, "library-long-names")
    page.click("button[role=tab]:has-text('Chat')")
    _ask(page, "When does the northern campus cafeteria serve lunch?")
    page.locator("#source-pick label", has_text="Cafeteria_menu").first.click()
    page.wait_for_function("document.querySelector('#source-view .source-head').innerText.includes('Cafeteria_menu')",
                           timeout=60_000)
    overflowing = page.evaluate("""() => [...document.querySelectorAll('#source-view, #source-view *, #source-pick, '
        + '#source-pick *, #chat .message-content, #chat .message-content *')]
        .filter((e) => e.scrollWidth > e.clientWidth + 1 && e.clientWidth > 0).map((e) => e.tagName + ' ' +
          e.innerText.slice(0, 40))""")
    assert overflowing == []
    panel = page.locator("#source-view .source-head b").bounding_box()
    view = page.locator("#source-view").bounding_box()
    assert panel["x"] + panel["width"] <= view["x"] + view["width"] + 1  # the name wraps inside the panel
    assert NO_DOCUMENT in _ask(page, "What is the capital city of Mongolia?")
    assert missing_glyphs(page) == []
    _shot(page, "long-names-and-glyphs")
    page.context.close()
    assert site.outside == []


_MARK = """() => { const m = document.querySelector('#source-view mark#cited-passage'); if (!m) return null;
    const box = m.closest('.passage').getBoundingClientRect(), r = m.getBoundingClientRect();
    return { head: document.querySelector('#source-view .source-head').innerText.split('\\n')[0],
             top: r.top - box.top, height: box.height, offset: r.top - box.top + m.closest('.passage').scrollTop,
             screen: r.top, vh: window.innerHeight }; }"""


def test_an_opened_source_shows_its_highlighted_passage(site: Site, browser: Any) -> None:
    """The highlight is scrolled into the passage box (it often sat below the box's fold), and on a
    phone a click on a citation brings the panel, below the chat, onto the screen."""
    page = _page(site, browser, "alice")
    _ask(page, RUST)
    labels = page.locator("#source-pick label")
    below_fold = 0
    for i in range(labels.count()):
        labels.nth(i).click()
        page.wait_for_function(f"document.querySelector('#source-view .source-head')?.innerText.startsWith('[{i + 1}]')"
                               " && document.querySelector('#source-view mark#cited-passage')", timeout=60_000)
        page.wait_for_timeout(300)
        mark = page.evaluate(_MARK)
        below_fold += mark["offset"] > mark["height"]
        assert 0 <= mark["top"] < mark["height"] - 20, mark  # the highlight's first lines are in the box
    assert below_fold, "no source's passage started below the box's fold: the test proves nothing"
    _shot(page, "passage-scrolled")
    page.context.close()
    phone = _page(site, browser, "alice", width=390, height=844)
    _ask(phone, RUST)
    phone.evaluate("window.scrollTo(0, 0)")
    links = phone.locator("#chat a[href^='#cite-']")
    last = max((links.nth(i).get_attribute("href") for i in range(links.count())),
               key=lambda h: int(str(h).rsplit("-", 1)[1]))
    phone.locator(f"#chat a[href='{last}']").last.click()
    n = str(last).rsplit("-", 1)[1]
    phone.wait_for_function(f"document.querySelector('#source-view .source-head')?.innerText.startsWith('[{n}]')",
                            timeout=60_000)
    phone.wait_for_timeout(3500)  # a source already open is not drawn again: the panel comes after 3 s
    mark = phone.evaluate(_MARK)
    assert 0 <= mark["screen"] < mark["vh"] - 40, mark  # on the screen
    assert 0 <= mark["top"] < mark["height"] - 20, mark
    _shot(phone, "phone-citation")
    phone.context.close()
    assert site.outside == []


def test_the_empty_page_helps_and_a_chosen_scope_narrows_the_question(site: Site, browser: Any) -> None:
    page = _page(site, browser, "erin")
    # The empty chat says what the reader may search, with questions drawn from their documents.
    listed = httpx.get(site.url + "/v1/documents", cookies=_cookies(page)).json()["documents"]
    readable = sum(d["status"] == "ok" for d in listed)  # the samples, and any file erin uploaded before
    assert readable >= 3
    page.wait_for_function(f"document.querySelector('#chat').innerText.includes('You can ask about {readable} "
                           "documents')", timeout=60_000)
    welcome = page.inner_text("#chat")
    assert "Try:" in welcome
    assert "Nothing you ask" in welcome
    _shot(page, "welcome")
    # "#" in the question box opens the picker, and is not kept in the question.
    box = page.locator("#question textarea")
    box.click()
    page.keyboard.type("#")
    page.wait_for_function("document.activeElement && document.activeElement.closest('#scope-pick') !== null",
                           timeout=10_000)
    assert "#" not in box.input_value()
    page.keyboard.type("rust-book")
    option = page.locator("#scope-pick [role=option]", has_text="rust-book-installation.md").first
    option.wait_for(state="visible", timeout=10_000)
    option.click()
    page.wait_for_function("document.querySelector('#scope-pick').innerText.includes('rust-book-installation')",
                           timeout=10_000)  # a chip
    page.keyboard.press("Escape")
    _shot(page, "scope-chosen")
    # The water question's answer is in the memo, outside the chosen scope: never cited.
    _ask(page, WATER)
    answer = page.inner_text("#chat")
    assert "fake-memo.pdf" not in answer
    assert "fake-memo.pdf" not in page.inner_text("#source-view")
    # The chat's bin icon says what it does.
    assert page.locator("#chat button[aria-label='New conversation (this one stays saved)']").count() == 1
    # The scope is kept with the conversation: a new one starts without it, the saved one has it again.
    page.click("#new-conv")
    page.wait_for_function("!document.querySelector('#scope-pick').innerText.includes('rust-book-installation')",
                           timeout=30_000)
    page.locator("#conversations label").first.click()
    page.wait_for_function("document.querySelector('#scope-pick').innerText.includes('rust-book-installation')",
                           timeout=30_000)
    page.context.close()
    assert site.outside == []


def test_on_a_phone_the_page_opens_at_its_top_with_the_conversations_in_a_drawer(site: Site, browser: Any) -> None:
    phone = _page(site, browser, "bob", width=390, height=844)
    phone.wait_for_timeout(500)
    assert phone.evaluate("window.scrollY") == 0  # not scrolled past the title and tabs to the focused box
    header = phone.evaluate("(() => { const r = document.querySelector('#header-row h2').getBoundingClientRect();"
                            " return {width: r.width, top: r.top}; })()")
    assert header["width"] >= 0.75 * 390, header  # the title across the width (less the margins), not half of it
    assert 0 <= header["top"] < 120, header
    assert not phone.locator("#new-conv").is_visible()  # the list is in the drawer, not at the page's bottom
    _shot(phone, "phone-top")
    phone.click("#drawer-toggle")
    phone.locator("#new-conv").wait_for(state="visible", timeout=10_000)
    box = phone.locator("#new-conv").bounding_box()
    assert box is not None
    assert 0 <= box["y"] < 844 - box["height"]  # on the screen at once
    _shot(phone, "phone-drawer")
    phone.click("#new-conv")
    phone.locator("#conversations-column").wait_for(state="hidden", timeout=10_000)  # chosen: the drawer closes
    assert "Sources:" in _ask(phone, WATER)
    phone.context.close()
    assert site.outside == []
