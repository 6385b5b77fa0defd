"""Ingest while `serve` answers: no question fails, none sees a half-ingested or half-replaced document."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import ROOT
from tests.support.servers import appliance_server

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def _manual(revision: str) -> str:
    return "\n\n".join(f"Pump maintenance, revision {revision}, step {i}: check the seal of pump {i % 9} and log "
                       f"the pressure of line {i % 4} before restarting it." for i in range(60))


def _post(url: str, body: dict[str, Any]) -> tuple[int, Any]:
    request = urllib.request.Request(url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, json.load(response)
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=60) as response:
        return json.load(response)


def _bump(path: Path, text: str) -> None:
    path.write_text(text)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000_000))


def test_questions_are_answered_during_ingestion_and_see_whole_versions(tmp_path: Path) -> None:
    docs = tmp_path / "share"
    docs.mkdir()
    manual = docs / "manual.txt"
    _bump(manual, _manual("alpha"))
    data = tmp_path / "data"
    first = subprocess.run([sys.executable, "-m", "appliance.cli", "ingest", str(docs), "--data-dir", str(data)],
                           cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert first.returncode == 0, first.stderr
    with appliance_server(data, tmp_path / "server.log") as (url, _pid):
        stop = threading.Event()
        problems: list[str] = []
        seen_revisions: set[str] = set()
        new_doc_counts: list[int] = []
        answers = 0

        def search_loop() -> None:
            while not stop.is_set():
                status, body = _post(url + "/v1/search", {"query": "pump maintenance revision seal", "top_k": 10})
                if status != 200:
                    problems.append(f"search {status}: {body}")
                    continue
                revisions = {r for h in body["results"] if h["file_name"] == "manual.txt"
                             for r in re.findall(r"revision (\w+),", h["text"])}
                if len(revisions) != 1:
                    problems.append(f"manual.txt seen as {revisions or 'nothing'}: "
                                    f"{[(h['file_name'], h['text'][:60]) for h in body['results']]}")
                seen_revisions.update(revisions)
                status, body = _post(url + "/v1/search", {"query": "vacation request form approval", "top_k": 5})
                if status != 200:
                    problems.append(f"search {status}: {body}")
                    continue
                for doc_id in {h["doc_id"] for h in body["results"] if h["file_name"] == "handbook.txt"}:
                    new_doc_counts.append(len(_get(f"{url}/v1/documents/{doc_id}/chunks")["chunks"]))

        def chat_loop() -> None:
            nonlocal answers
            while not stop.is_set():
                status, body = _post(url + "/v1/chat/completions", {
                    "model": "rag-appliance", "max_tokens": 8,
                    "messages": [{"role": "user", "content": "What must be checked before restarting a pump?"}]})
                if status != 200:
                    problems.append(f"chat {status}: {body}")
                else:
                    answers += 1

        threads = [threading.Thread(target=search_loop), threading.Thread(target=chat_loop)]
        for t in threads:
            t.start()
        try:
            for revision in ("beta", "gamma", "delta"):
                _bump(manual, _manual(revision))
                if revision == "gamma":  # a new document of many chunks arrives too
                    (docs / "handbook.txt").write_text("\n\n".join(
                        f"Handbook rule {i}: a vacation request form needs the approval of {i % 5 + 1} managers."
                        for i in range(300)))
                proc = subprocess.run([sys.executable, "-m", "appliance.cli", "ingest", str(docs), "--data-dir",
                                       str(data)], cwd=ROOT, capture_output=True, text=True, timeout=600)
                assert proc.returncode == 0, proc.stderr
                assert "holds the store: the job runs there" in proc.stderr
                time.sleep(1.5)  # let the readers see this version
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=180)
        assert problems == []
        assert answers >= 1
        assert "delta" in seen_revisions
        assert len(seen_revisions) >= 2
        handbook = next(d for d in _get(url + "/v1/documents")["documents"] if d["name"] == "handbook.txt")
        assert new_doc_counts, "the new document was never found"
        assert set(new_doc_counts) == {handbook["chunks"]}  # whenever it was visible, it was whole
