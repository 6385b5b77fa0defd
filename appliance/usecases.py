"""One path per act, whoever asks: the chat page, the API, the CLI and the folder watcher are thin
adapters over these functions, so an act gets the same lock, job line, audit line and metrics
whatever channel it came through.

- `answer`: one question answered (the question checked, a slot of the shared answer gate, the
  answer metrics, the `question` audit line with its scope and the sources shown).
- `run_ingest`: one ingestion job (the write lock, a line on the Status tab's job board, the
  pipeline, the `ingest` audit line, the ingest metrics).
- `apply_acl`: the `acl:` rules applied to stored chunks (the lock, the pipeline, the `permissions`
  audit line).
- `readable_chunks`: a document's published chunks that a reader may read (the access rule every
  chunk view and whole-document answer uses).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

if TYPE_CHECKING:
    from appliance.access.auth import Principal
    from appliance.backends.scope import Scope
    from appliance.backends.store import Hit
    from appliance.rag import Answer
    from appliance.services import Services
    from appliance.settings import Settings
    from ingest.report import AccessChange, IngestReport

IngestKind = Literal["ingest", "upload", "watch", "reingest"]
log = logging.getLogger("appliance")


def answer(services: Services, principal: Principal, question: str, history: Sequence[tuple[str, str]],
           channel: str, *, whole_document: bool = False, max_tokens: int | None = None,
           cancelled: Callable[[], bool] | None = None, patience: float | None = None,
           scope: Scope | None = None) -> Iterator[str | Answer]:
    """The answer's text as it is generated, then the final Answer, for `principal` (their groups only),
    from within `scope` (Scope.checked; inside the store query with the groups, so it only narrows).

    Raises QuestionTooLong before anything else, Busy when the shared gate is full (answer_gate.py),
    Cancelled when `cancelled()` turns true while waiting for a slot, StillWaiting after `patience`
    seconds without one (the page then shows that it waits, and asks again: a Stop lands between).
    Close the generator to stop the model (the slot is given back)."""
    from appliance.answer_gate import Busy, Cancelled, StillWaiting
    from appliance.rag import Answer, checked_question

    question = checked_question(question, services.settings.retrieval.max_question_chars)
    m = services.metrics
    started = time.perf_counter()
    first = True
    outcome = "cancelled"  # unless it finishes: the client went away or the server stops
    try:
        with services.answer_gate.slot(cancelled, principal.fair_share_key, patience):
            for event in services.rag.stream(question, history, groups=principal.reads,
                                             whole_document=whole_document, max_tokens=max_tokens, scope=scope):
                if isinstance(event, Answer):
                    outcome = "answered" if event.grounded else "not_found"
                    record_question(services, principal, channel, event, scope)
                else:
                    if first:
                        m.first_token.observe(time.perf_counter() - started)
                        first = False
                    m.tokens.inc()
                yield event
    except Busy:
        outcome = "busy"
        raise
    except (Cancelled, StillWaiting):
        outcome = ""  # not an answer (yet): nothing to count
        raise
    except GeneratorExit:
        log.info("answer stopped after %.1fs (%s): the reader went away", time.perf_counter() - started, channel)
        raise
    except Exception:  # BackendUnavailable among them
        outcome = "error"
        raise
    finally:
        if outcome:
            m.answers.labels(outcome).inc()


def record_question(services: Services, principal: Principal, channel: str, answer: Answer,
                    scope: Scope | None = None) -> None:
    """The audit line of a question: who, through what, within which scope, which sources they were shown."""
    services.audit.record(
        "question", principal.name, channel=channel, question=answer.question, grounded=answer.grounded,
        scope=scope.to_dict() if scope else None,
        sources=[{"path": s.path, "page": s.page, "doc_id": s.doc_id, "text": s.text} for s in answer.sources],
        answer=answer.text)


def run_ingest(services: Services, paths: Sequence[Path], actor: str, kind: IngestKind, via: str, *,
               progress: Callable[[int], Any] | None = None, cancel: threading.Event | None = None,
               prune: bool = False, dry_run: bool = False, retry_failed: bool = False,
               force: bool = False) -> IngestReport:
    """Ingest `paths` as one job of `actor` through channel `via` (cli, api, page, watch, serve).

    `progress` is a progress factory (a tqdm bar, a client's stream, Gradio's bar) that sees what the
    job board sees. A dry run changes nothing and records nothing."""
    from appliance.stores.jobs import what_of

    started = time.perf_counter()
    targets = list(paths)
    with services.write_lock, services.jobs.job(kind, actor, what_of([p.name for p in targets]),
                                                forward=progress) as bar:
        report = services.ingest_pipeline.run(targets, prune=prune, dry_run=dry_run, retry_failed=retry_failed,
                                              force=force, progress=bar, cancel=cancel)
    if dry_run:
        return report
    metrics = services.metrics
    metrics.ingest_seconds.observe(time.perf_counter() - started)
    for f in report.files:
        metrics.ingest_files.labels(f.status).inc()
        if f.status in ("added", "updated"):
            metrics.ingest_chunks.inc(f.chunks)
    counts = {s: report.count(s) for s in ("added", "updated", "removed", "failed")}
    services.audit.record("ingest", actor, kind=kind, via=via, paths=[str(p.absolute()) for p in targets],
                          interrupted=report.interrupted or None, **counts)
    return report


def apply_acl(services: Services, actor: str, via: str, fresh: Settings | None = None,
              dry_run: bool = False) -> list[AccessChange]:
    """Bring every stored chunk's readers in line with the `acl:` rules: those of `fresh` settings (read
    again from the settings file by a running server), or the ones this process started with. A
    payload update in the store; nothing is parsed or embedded."""
    rules = services.access_rules(fresh) if fresh is not None else None
    with services.write_lock:
        changes = services.ingest_pipeline.apply_access(rules, dry_run=dry_run)
        if fresh is not None and not dry_run:
            services.settings.acl = fresh.acl
            services.settings.ingest.default_groups = fresh.ingest.default_groups
    if not dry_run and (changes or via != "serve"):
        services.audit.record("permissions", actor, via=via, rules=[r.model_dump() for r in services.settings.acl],
                              changed=[{"path": c.path, "before": c.before, "after": c.after} for c in changes])
    return changes


def readable_chunks(services: Services, doc_id: str, groups: list[str] | None, limit: int = 10_000) -> list[Hit]:
    """A document's published chunks in reading order that readers of `groups` may read (None: all, for
    the machine's own operator). Chunks being written or superseded are never included; the filter
    is part of the store query."""
    return services.store.chunks_of(doc_id, limit, exclude=services.manifest.hidden_ids(), groups=groups)
