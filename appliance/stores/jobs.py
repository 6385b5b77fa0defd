"""The ingestion jobs this server runs now (uploads, handed-over `ingest` runs, watched folders), with
their progress and ETA, for the admin tab. Each job is driven by the pipeline's progress interface
(the one a tqdm bar has), so nothing in the pipeline knows about it."""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Job:
    id: int
    kind: str  # upload | ingest | watch
    actor: str
    what: str
    started: float = field(default_factory=time.monotonic)
    total: int = 0  # bytes
    done: int = 0
    files: int = 0
    current: str = ""

    def eta_s(self) -> float | None:
        elapsed = time.monotonic() - self.started
        if not self.total or not self.done or elapsed < 0.5:
            return None
        return max(0.0, elapsed * (self.total - self.done) / self.done)

    def row(self) -> dict[str, Any]:
        eta = self.eta_s()
        return {"id": self.id, "kind": self.kind, "by": self.actor, "what": self.what,
                "percent": round(100 * self.done / self.total, 1) if self.total else 0.0, "files": self.files,
                "current": self.current, "running_s": round(time.monotonic() - self.started, 1),
                "eta_s": None if eta is None else round(eta, 1)}


def what_of(names: list[str]) -> str:
    """A job's files as the Status tab lists them: the first three, and how many more."""
    return ", ".join(names[:3]) + (f" (+{len(names) - 3})" if len(names) > 3 else "")


class _Bar:
    """The progress object IngestPipeline.run drives (update, set_postfix_str, close)."""

    def __init__(self, job: Job, total: int, forward: Any | None) -> None:
        self._job = job
        self._forward = forward
        job.total, job.done = total, 0

    def update(self, n: int) -> None:
        self._job.done += n
        self._job.files += 1
        if self._forward is not None:
            self._forward.update(n)

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self._job.current = text.rsplit(", ", 1)[-1]  # the meter writes "<rates>, <file name>"
        if self._forward is not None:
            self._forward.set_postfix_str(text, refresh=refresh)

    def close(self) -> None:
        if self._forward is not None:
            self._forward.close()


class JobBoard:
    def __init__(self) -> None:
        self._jobs: dict[int, Job] = {}
        self._ids = itertools.count(1)
        self._lock = threading.Lock()

    @contextmanager
    def job(self, kind: str, actor: str, what: str,
            forward: Callable[[int], Any] | None = None) -> Iterator[Callable[[int], _Bar]]:
        """A progress factory for one pipeline run, listed while the block runs; `forward` is another
        progress factory (a client's stream) that sees the same calls."""
        with self._lock:
            job = Job(next(self._ids), kind, actor, what)
            self._jobs[job.id] = job
        try:
            yield lambda total: _Bar(job, total, forward(total) if forward else None)
        finally:
            with self._lock:
                self._jobs.pop(job.id, None)

    def running(self) -> list[dict[str, Any]]:
        with self._lock:
            jobs = list(self._jobs.values())
        return [j.row() for j in sorted(jobs, key=lambda j: j.id)]
