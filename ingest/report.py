"""What an ingest run reports: each file's outcome, the counts, where the time went; and the errors
and changes the pipeline hands back to its callers (every channel reads these, none needs the pipeline)."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

STATUSES = ("added", "updated", "unchanged", "removed", "failed", "skipped")
STAGES = ("plan", "parse", "waiting", "embed", "write", "index")


@dataclass
class AccessChange:
    path: str
    before: list[str]
    after: list[str]
    chunks: int


@dataclass
class FileResult:
    path: str
    status: str  # one of STATUSES
    chunks: int = 0
    error: str | None = None
    pages: int | None = None
    notes: list[str] = field(default_factory=list)


@dataclass
class IngestReport:
    files: list[FileResult] = field(default_factory=list)
    seconds: float = 0.0
    interrupted: bool = False
    # Where the time went: parse (summed over the workers, so it may exceed the wall time), and
    # embed, write and index in this process; "waiting" is this process idle for a parse result.
    stages: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    # CPU seconds of each stage: parse in the workers, the rest this process's (all its threads: the
    # embedding runtime's included); with the wall times above they say which stage kept the cores busy.
    stage_cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    cpu_seconds: float = 0.0  # this process's whole run, plus the workers' parsing
    cores: int = 1

    def utilisation(self) -> dict[str, Any]:
        """Per stage: wall and CPU seconds, and the cores it kept busy on average; and the whole run's
        share of the machine (1.0: every core busy for the whole run)."""
        stages = {}
        for k in STAGES:
            wall, cpu = self.stages.get(k, 0.0), self.stage_cpu.get(k, 0.0)
            stages[k] = {"seconds": round(wall, 2), "cpu_seconds": round(cpu, 2),
                         "cores_busy": round(cpu / wall, 2) if wall else 0.0}
        busy = self.cpu_seconds / (self.seconds * self.cores) if self.seconds else 0.0
        return {"cores": self.cores, "cpu_seconds": round(self.cpu_seconds, 2), "busy": round(busy, 3),
                "stages": stages}

    def count(self, status: str) -> int:
        return sum(1 for f in self.files if f.status == status)

    @property
    def chunks(self) -> int:
        return sum(f.chunks for f in self.files if f.status in ("added", "updated"))

    @property
    def pages(self) -> int:
        """Pages of the files processed (a file without pages counts as one, as the baseline counts)."""
        return sum(f.pages or 1 for f in self.files if f.status in ("added", "updated"))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {s: self.count(s) for s in STATUSES}
        out["chunks"] = self.chunks
        out["pages"] = self.pages
        out["seconds"] = round(self.seconds, 2)
        out["interrupted"] = self.interrupted
        out["stage_seconds"] = {k: round(v, 2) for k, v in self.stages.items()}
        out["utilisation"] = self.utilisation()
        out["files"] = [
            {"path": f.path, "status": f.status, "chunks": f.chunks, "error": f.error, "notes": f.notes}
            for f in self.files
        ]
        return out


class FileBusy(RuntimeError):
    """Another ingest run holds the file's lease; the message says so."""


def usable_cores() -> int:
    """The cores this process may run on (a container's CPU set, not the host's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1
