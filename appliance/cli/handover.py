"""The hand-over client: a command whose work needs the embedded store, which a running `serve` holds
exclusively, sends that work to the server (found and authorised as appliance/handover.py says) and
prints what it would have printed in its own process.

What the store does not hold is read and written directly, server or not: the manifest, users, API
keys and conversations are databases that several processes share (SQLite in WAL mode, or
PostgreSQL), and the audit trail and feedback log are appended under a file lock.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from appliance.handover import RunningServer
    from appliance.rag import Answer
    from appliance.services import Services


def server_holding_store(services: Services) -> RunningServer | None:
    """The running server of this data directory when it holds the store: the embedded store is one
    process's alone, while a Qdrant server is shared and needs no hand-over."""
    from appliance.handover import find

    if services.settings.store.provider != "embedded":
        return None
    return find(services.settings.data_dir)


def ingest_through(server: RunningServer, job: dict[str, Any], bar: Callable[[int], Any] | None) -> dict[str, Any]:
    """Run an ingest job in the server that holds the store, with the same progress bar and report."""
    import httpx

    from appliance.handover import handover_headers

    progress = None
    try:
        with httpx.stream("POST", server.url + "/v1/admin/ingest", json=job, timeout=httpx.Timeout(30, read=None),
                          headers=handover_headers(server)) as response:
            if response.status_code != 200:
                response.read()
                raise click.ClickException(f"the server refused the job: {response.text[:300]}")
            for line in response.iter_lines():
                event = json.loads(line) if line.strip() else {}
                kind = event.get("event")
                if kind == "start" and bar is not None:
                    progress = bar(int(event["total"]))
                elif kind == "file" and progress is not None:
                    progress.set_postfix_str(str(event.get("file", ""))[:40])
                elif kind == "progress" and progress is not None:
                    progress.update(int(event["advance"]))
                elif kind == "done":
                    report: dict[str, Any] = event["report"]
                    return report
                elif kind == "error":
                    raise click.ClickException(f"the server's ingest failed: {event['message']}")
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the running server at {server.url}: {exc}") from None
    except KeyboardInterrupt:
        with contextlib.suppress(httpx.HTTPError):  # the job stops in the server too, between files
            httpx.post(server.url + "/v1/admin/ingest/cancel", timeout=10,
                       headers=handover_headers(server))
        raise

    finally:
        if progress is not None:
            progress.close()
    raise click.ClickException("the server stopped before the job finished; run the command again to resume")


def remove_through(server: RunningServer, doc_ids: list[str]) -> None:
    """`docs rm` in the server: each document removed from the index (the file stays)."""
    import httpx

    from appliance.handover import handover_headers

    with httpx.Client(base_url=server.url, headers=handover_headers(server), timeout=120) as http:
        for doc_id in doc_ids:
            try:
                r = http.delete(f"/v1/documents/{doc_id}", params={"keep_file": "true"})
            except httpx.HTTPError as exc:
                raise click.ClickException(f"cannot reach the running server at {server.url}: {exc}") from None
            if r.status_code not in (200, 404):  # 404: removed meanwhile
                raise click.ClickException(f"the server refused to remove {doc_id}: {r.text[:300]}")


def apply_acl_through(server: RunningServer, dry_run: bool) -> list[dict[str, Any]]:
    """`acl apply` in the server, which reads its settings file again and applies its rules."""
    import httpx

    from appliance.handover import handover_headers

    try:
        r = httpx.post(server.url + "/v1/admin/acl/apply", params={"dry_run": str(dry_run).lower()},
                       headers=handover_headers(server), timeout=600)
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the running server at {server.url}: {exc}") from None
    if r.status_code != 200:
        raise click.ClickException(f"the running server refused: {r.text[:300]}")
    return list(r.json()["changed"])


def ask_through(server: RunningServer, job: dict[str, Any], on_token: Callable[[str], None] | None) -> dict[str, Any]:
    """Ask the question of `job` through the server (POST /v1/admin/ask): each token of the answer goes
    to `on_token` as it is written; returns the answer's record (`ask --json`)."""
    import httpx

    from appliance.handover import handover_headers

    try:
        with httpx.stream("POST", server.url + "/v1/admin/ask", json=job, timeout=httpx.Timeout(30, read=None),
                          headers=handover_headers(server)) as response:
            if response.status_code != 200:
                response.read()
                raise click.ClickException(_refusal(server, response))
            for line in response.iter_lines():
                event = json.loads(line) if line.strip() else {}
                kind = event.get("event")
                if kind == "token" and on_token is not None:
                    on_token(str(event["text"]))
                elif kind == "answer":
                    record: dict[str, Any] = event["answer"]
                    return record
                elif kind == "error":
                    raise click.ClickException(str(event["message"]))
    except httpx.HTTPError as exc:
        raise click.ClickException(f"cannot reach the running server at {server.url}: {exc}") from None
    raise click.ClickException("the server stopped before the answer was finished; ask again")


def answer_from_record(record: dict[str, Any], question: str) -> Answer:
    """The Answer again from the record the server sent (Answer.to_dict), for the same printout."""
    from appliance.rag import Answer, Source

    return Answer(question=question, text=str(record["answer"]), grounded=bool(record["grounded"]),
                  sources=[Source.from_dict(s) for s in record.get("sources") or []],
                  cited=list(record.get("cited") or []), query=str(record.get("query") or ""),
                  whole_document=record.get("whole_document"), weak=record.get("match") == "weak",
                  unsupported=list(record.get("unsupported") or []))


def _refusal(server: RunningServer, response: Any) -> str:
    """What the server said: its own message where it refuses the question itself (too long, an unknown
    --as-user, the model busy), as the command says in its own process."""
    try:
        message = str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        message = response.text[:300]
    if response.status_code in (400, 404, 503):
        return message
    return f"the running server at {server.url} refused: {message}"
