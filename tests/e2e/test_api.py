"""The HTTP API of a real `appliance serve`, used the way programs use it: with the `openai`
package for chat, plain HTTP for documents and search. API keys are required (as they are
beyond loopback), the queue is small, and answers are short, so the concurrency tests run fast."""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e]
MODEL = "rag-appliance"
MAX_TOKENS = 96
QUEUE = 3


class Api:
    def __init__(self, url: str, key: str, pid: int, log: Path) -> None:
        self.url, self.key, self.pid, self.log = url, key, pid, log
        self.http = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=300)
        self.openai = openai.OpenAI(base_url=url + "/v1", api_key=key, max_retries=0, timeout=300)

    def metric(self, name: str) -> float:
        text = self.http.get("/metrics").text
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith(name) and not line.startswith("#"))

    def rss_mb(self) -> float:
        status = Path(f"/proc/{self.pid}/status").read_text()
        return int(re.search(r"VmRSS:\s+(\d+)", status).group(1)) / 1024  # type: ignore[union-attr]


@pytest.fixture(scope="module")
def api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Api]:
    root = tmp_path_factory.mktemp("api")
    data = root / "data"
    docs = root / "docs"
    docs.mkdir()
    for name in ("fake-memo.pdf", "rust-book-installation.md", "family-day.eml"):
        (docs / name).write_bytes((SAMPLES / name).read_bytes())
    cli = [sys.executable, "-m", "appliance.cli"]
    subprocess.run([*cli, "ingest", str(docs), "--data-dir", str(data)], check=True, cwd=ROOT, capture_output=True)
    key = subprocess.run([*cli, "keys", "create", "tests", "--admin", "--data-dir", str(data)], check=True, cwd=ROOT,
                         capture_output=True, text=True).stdout.strip()
    env = {"APPLIANCE_SERVER__REQUIRE_API_KEY": "true", "APPLIANCE_SERVER__MAX_QUEUED": str(QUEUE),
           "APPLIANCE_LLM__MAX_ANSWER_TOKENS": str(MAX_TOKENS), "APPLIANCE_INGEST__MAX_FILE_MB": "1",
           "APPLIANCE_SERVER__MAX_UPLOAD_FILES": "2",  # request bodies: at most 2 x 1 MB + 1 MB
           "APPLIANCE_AUTH__QUESTIONS_PER_MINUTE": "10000",  # the concurrency tests ask many at once
           "APPLIANCE_SERVER__MAX_QUEUED_PER_USER": "100"}  # with one key: the shared queue is under test here
    log = root / "serve.log"
    with appliance_server(data, log, env) as (url, pid):
        client = Api(url, key, pid, log)
        yield client
        client.http.close()
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]


def test_a_key_is_required_and_checked(api: Api) -> None:
    for headers in ({}, {"Authorization": "Bearer rag-not-a-key"}, {"Authorization": "Bearer é".encode("latin-1")}):
        r = httpx.get(api.url + "/v1/models", headers=headers)
        assert r.status_code == 401
        assert r.json()["error"]["type"] == "authentication_error"
        assert "API key" in r.json()["error"]["message"]
    wrong = openai.OpenAI(base_url=api.url + "/v1", api_key="rag-wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError, match="invalid or revoked API key"):
        wrong.models.list()
    assert httpx.get(api.url + "/healthz").status_code == 200  # probes need no key
    assert [m.id for m in api.openai.models.list()] == [MODEL]


def test_streamed_chat_cites_its_sources(api: Api) -> None:
    stream = api.openai.chat.completions.create(
        model=MODEL, stream=True,
        messages=[{"role": "user", "content": "How many bottles of water were there?"}])
    text, last = "", None
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
        last = chunk
    assert last is not None
    assert last.choices[0].finish_reason == "stop"
    extra = last.model_extra or {}
    assert extra["grounded"] is True
    assert extra["sources"][0]["file_name"] == "fake-memo.pdf"
    assert extra["sources"][0]["n"] == 1
    assert "\n\nSources:\n[1] fake-memo.pdf" in text


def test_chat_follows_the_conversation_and_answers_in_one_piece(api: Api) -> None:
    reply = api.openai.chat.completions.create(model=MODEL, messages=[
        {"role": "system", "content": "ignored: the appliance's own prompt governs"},
        {"role": "user", "content": "How do I install Rust on Linux?"},
        {"role": "assistant", "content": "With rustup."},
        {"role": "user", "content": "And on Windows?"},
    ])
    extra = reply.model_extra or {}
    assert reply.object == "chat.completion"
    assert reply.choices[0].message.content
    assert extra["sources"][0]["file_name"] == "rust-book-installation.md"  # the follow-up kept its subject
    off_topic = api.openai.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "What is the boiling point of tungsten?"}])
    assert (off_topic.model_extra or {})["grounded"] is False
    assert off_topic.choices[0].message.content.startswith("The documents don't contain")  # type: ignore[union-attr]


def test_errors_are_json_with_a_message(api: Api) -> None:
    with pytest.raises(openai.NotFoundError, match="does not exist"):
        api.openai.chat.completions.create(model="gpt-4o", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(openai.BadRequestError, match="last message must be a user message"):
        api.openai.chat.completions.create(model=MODEL, messages=[{"role": "assistant", "content": "hi"}])
    as_json = {"content-type": "application/json"}
    cases = [("POST", "/v1/chat/completions", {"content": b"{not json", "headers": as_json}, 422),
             ("POST", "/v1/search", {"json": {"query": ""}}, 422),
             ("GET", "/v1/documents/0000", {}, 404),
             ("DELETE", "/v1/models", {}, 405),
             ("GET", "/v1/nothing", {}, 404)]
    for method, path, kwargs, status in cases:
        r = api.http.request(method, path, **kwargs)  # type: ignore[arg-type]
        assert r.status_code == status, (path, r.text)
        body = r.json()
        assert body["error"]["code"] == status
        assert body["error"]["message"]
        assert "Traceback" not in r.text


def test_documents_upload_list_chunks_search_delete(api: Api) -> None:
    note = b"Project Kestrel\n\nThe Kestrel launch budget is 4.2 million euros, approved in March.\n"
    r = api.http.post("/v1/documents", files=[("files", ("kestrel.txt", note, "text/plain"))])
    assert r.status_code == 201, r.text
    (added,) = r.json()["files"]
    assert added["status"] == "added"
    assert added["chunks"] >= 1
    doc_id = added["id"]
    listed = {d["id"]: d for d in api.http.get("/v1/documents").json()["documents"]}
    assert listed[doc_id]["uploaded"] is True
    assert {d["name"] for d in listed.values()} >= {"fake-memo.pdf", "kestrel.txt"}
    chunks = api.http.get(f"/v1/documents/{doc_id}/chunks").json()["chunks"]
    assert "4.2 million euros" in " ".join(c["text"] for c in chunks)
    hits = api.http.post("/v1/search", json={"query": "Kestrel launch budget", "top_k": 3}).json()["results"]
    assert hits[0]["doc_id"] == doc_id
    assert hits[0]["relevant"] is True
    # Bad uploads are refused whole, with the reason; nothing is stored.
    r = api.http.post("/v1/documents", files=[("files", ("tool.exe", b"MZ\x90", "application/octet-stream"))])
    assert r.status_code == 415
    assert "unsupported file type '.exe'" in r.json()["error"]["message"]
    r = api.http.post("/v1/documents", files=[("files", ("broken.pdf", b"%PDF-1.7 truncated", "application/pdf"))])
    assert r.status_code == 422
    assert r.json()["files"][0]["status"] == "failed"
    assert r.json()["files"][0]["error"]
    r = api.http.post("/v1/documents", files=[("files", ("big.txt", b"word " * 300_000, "text/plain"))])
    assert r.status_code == 413  # 1.5 MB: over ingest.max_file_mb, refused by the route
    assert "max_file_mb" in r.json()["error"]["message"]
    r = api.http.post("/v1/documents", files=[("files", ("huge.txt", b"word " * 900_000, "text/plain"))])
    assert r.status_code == 413  # 4.5 MB: over the whole body's cap, refused before it is read
    assert "request body larger than" in r.json()["error"]["message"]
    deleted = api.http.delete(f"/v1/documents/{doc_id}").json()
    assert deleted == {"id": doc_id, "deleted": True, "chunks": added["chunks"]}
    assert api.http.get(f"/v1/documents/{doc_id}").status_code == 404
    hits = api.http.post("/v1/search", json={"query": "Kestrel launch budget", "top_k": 3}).json()["results"]
    assert all(h["doc_id"] != doc_id for h in hits)


def test_a_document_downloads_and_its_pdf_pages_render(api: Api) -> None:
    docs = {d["name"]: d["id"] for d in api.http.get("/v1/documents").json()["documents"]}
    memo, notes = docs["fake-memo.pdf"], docs["rust-book-installation.md"]
    r = api.http.get(f"/v1/documents/{memo}/file")
    assert r.status_code == 200
    assert r.content == (SAMPLES / "fake-memo.pdf").read_bytes()
    assert 'filename="fake-memo.pdf"' in r.headers["content-disposition"]
    png = api.http.get(f"/v1/documents/{memo}/pages/1.png", params={"width": 400})
    assert png.status_code == 200
    assert png.headers["content-type"] == "image/png"
    assert png.content.startswith(b"\x89PNG\r\n\x1a\n")
    assert abs(int.from_bytes(png.content[16:20], "big") - 400) <= 2  # the IHDR width
    r = api.http.get(f"/v1/documents/{memo}/pages/9.png")
    assert r.status_code == 404
    assert "has 1 pages" in r.json()["error"]["message"]
    assert api.http.get(f"/v1/documents/{notes}/pages/1.png").status_code == 415  # not a PDF
    assert api.http.get("/v1/documents/nope/file").status_code == 404


def test_a_cited_passage_is_marked_on_its_pdf_page(api: Api) -> None:
    from PIL import Image

    hit = next(h for h in api.http.post("/v1/search", json={"query": "LayoutParser deep learning toolkit",
                                                             "top_k": 10}).json()["results"]
               if h["path"].endswith(".pdf") and h.get("page"))
    url = f"/v1/documents/{hit['doc_id']}/pages/{hit['page']}.png"
    chunk = hit["chunk_index"]

    def yellow(png: bytes) -> int:  # pixels of the marker's colour (the pages themselves are black on white)
        import numpy as np

        rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB")).astype(int)
        return int(((rgb[..., 0] > 200) & (rgb[..., 1] > 180) & (rgb[..., 2] < 150)).sum())

    plain = api.http.get(url)
    marked = api.http.get(url, params={"passage": chunk})
    assert marked.status_code == 200
    assert marked.headers["x-passage-marked"] == "1"
    assert yellow(marked.content) > 20 * yellow(plain.content) + 1000
    # A passage that is not on this page leaves it unmarked (re-ingested since), not a broken image.
    gone = api.http.get(url, params={"passage": 9_999_999})
    assert gone.status_code == 200
    assert gone.headers["x-passage-marked"] == "0"
    assert api.http.get(url, params={"passage": -1}).status_code == 422


def test_uploads_of_one_name_at_once_keep_one_whole_version(api: Api) -> None:
    texts = [f"Version {v}. The warehouse in Lyon holds {v * 111} pallets of copper wire.\n".encode()
             for v in range(1, 5)]
    results: list[httpx.Response] = []

    def upload(text: bytes) -> None:
        results.append(api.http.post("/v1/documents", files=[("files", ("stock.txt", text, "text/plain"))]))

    threads = [threading.Thread(target=upload, args=(t,)) for t in texts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert sorted(r.status_code for r in results) == [201] * 4, [r.text for r in results]
    doc_id = results[0].json()["files"][0]["id"]
    stored = " ".join(c["text"] for c in api.http.get(f"/v1/documents/{doc_id}/chunks").json()["chunks"])
    assert sum(t.decode().strip() == stored.strip() for t in texts) == 1, stored  # one version, not a mix
    long_name = "é" * 150 + ".txt"
    r = api.http.post("/v1/documents", files=[("files", (long_name, b"Short note about llamas.", "text/plain"))])
    assert r.status_code == 201, r.text
    assert len(r.json()["files"][0]["name"].encode()) <= 200
    assert r.json()["files"][0]["name"].endswith(".txt")
    for doc in (doc_id, r.json()["files"][0]["id"]):
        assert api.http.delete(f"/v1/documents/{doc}").status_code == 200


def test_answer_length_and_unsupported_options(api: Api) -> None:
    tokens = api.metric("appliance_answer_tokens_total")
    reply = api.openai.chat.completions.create(
        model=MODEL, max_tokens=3, messages=[{"role": "user", "content": "Explain the Rust installation steps."}])
    assert api.metric("appliance_answer_tokens_total") - tokens <= 3
    assert reply.choices[0].message.content
    with pytest.raises(openai.UnprocessableEntityError, match="n: "):
        api.openai.chat.completions.create(model=MODEL, n=2, messages=[{"role": "user", "content": "hi"}])
    r = api.http.options("/v1/nothing")
    assert r.json()["error"]["code"] == 404


def test_openapi_schema_describes_the_api(api: Api) -> None:
    schema = api.http.get("/openapi.json").json()
    for path in ("/v1/chat/completions", "/v1/models", "/v1/documents", "/v1/documents/{doc_id}",
                 "/v1/documents/{doc_id}/chunks", "/v1/search", "/healthz", "/readyz", "/metrics"):
        assert path in schema["paths"], path
    chat = schema["paths"]["/v1/chat/completions"]["post"]
    assert chat["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/ChatCompletion")
    assert chat["responses"]["503"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
    assert "sources" in schema["components"]["schemas"]["ChatCompletion"]["properties"]
    assert schema["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    assert chat["security"] == [{"HTTPBearer": []}]


def test_twenty_simultaneous_chats_complete_or_get_busy(api: Api) -> None:
    before = api.rss_mb()
    results: list[tuple[int, dict[str, object]]] = []

    def one(i: int) -> None:
        r = api.http.post("/v1/chat/completions", json={
            "model": MODEL, "messages": [{"role": "user", "content": f"What happens at family day? ({i})"}]})
        results.append((r.status_code, r.json()))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    assert len(results) == 20
    statuses = sorted(s for s, _ in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses.count(200) >= 1 + QUEUE  # one generating, the queue full behind it
    assert 503 in statuses
    for status, body in results:
        if status == 503:
            assert "busy" in body["error"]["message"]  # type: ignore[index]
        else:
            assert body["choices"]  # type: ignore[index]
    assert api.metric('appliance_answers_total{outcome="busy"}') >= 1
    assert api.rss_mb() - before < 300, "memory grew with concurrent requests"


def test_a_client_that_disconnects_stops_the_generation(api: Api) -> None:
    question = {"model": MODEL, "messages": [{"role": "user", "content": "Explain the Rust installation steps."}]}
    tokens = api.metric("appliance_answer_tokens_total")
    api.http.post("/v1/chat/completions", json=question)
    full = api.metric("appliance_answer_tokens_total") - tokens
    assert full > 10, "the answer is long enough to interrupt"
    cancelled = api.metric('appliance_answers_total{outcome="cancelled"}')
    tokens = api.metric("appliance_answer_tokens_total")
    with api.http.stream("POST", "/v1/chat/completions", json={**question, "stream": True}) as r:
        seen = 0
        for line in r.iter_lines():
            if line.startswith("data: ") and '"content": "' in line:
                seen += 1
                if seen == 3:
                    break
    time.sleep(3)
    assert api.metric('appliance_answers_total{outcome="cancelled"}') == cancelled + 1
    streamed = api.metric("appliance_answer_tokens_total") - tokens
    assert streamed < full, f"generation went on after the client left ({streamed} of {full} tokens)"
    # and the model is free at once for the next question
    started = time.monotonic()
    assert api.http.post("/v1/search", json={"query": "rustup"}).status_code == 200
    assert time.monotonic() - started < 30
    assert json.loads(api.http.get("/readyz").text)["status"] == "ready"
