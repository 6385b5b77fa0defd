"""Keep the index in sync with folders: file-system events, debounced, become incremental ingest jobs.

watchfiles (the Rust `notify` crate: inotify on Linux) gathers events until none has come for
`debounce_ms`, then hands over one batch. A batch becomes one job over the changed paths with
prune on: created and changed files are (re)ingested, deleted ones removed; a move is both in
one job, and the moved file's chunks are copied under its new path, not embedded again (its
content is already published under the old path when the new one is processed).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

log = logging.getLogger(__name__)

Job = Callable[[list[Path]], object]  # paths (existing or gone) -> whatever the job reports


def relevant(path: Path, roots: Iterable[Path], exclude: Iterable[Path]) -> bool:
    """Events worth a job: not hidden files or folders (as discover skips them), not the data directory."""
    if any(path == e or e in path.parents for e in exclude):
        return False
    for root in roots:
        if path == root or root in path.parents:
            return not any(part.startswith(".") for part in path.relative_to(root).parts)
    return False


def batches(roots: list[Path], *, debounce_ms: int, stop: threading.Event,
            exclude: tuple[Path, ...] = ()) -> Iterable[list[Path]]:
    """Sorted batches of changed paths (created, modified or deleted) until `stop` is set."""
    from watchfiles import watch

    absolute = [r.absolute() for r in roots]
    skip = tuple(e.absolute() for e in exclude)
    # step: quiet time that ends a batch; debounce: the longest a batch may gather (a long copy).
    for changes in watch(*absolute, step=debounce_ms, debounce=max(10 * debounce_ms, 2000), stop_event=stop,
                         raise_interrupt=False, recursive=True):
        paths = sorted({Path(p) for _kind, p in changes if relevant(Path(p), absolute, skip)})
        if paths:
            yield paths


class Watcher:
    """Watches from the moment it is made (before the first sync, so no change falls between the two);
    iterating it yields the batches until `stop()`."""

    SETTLE_S = 0.3  # the inotify watches are set up within milliseconds of the thread's start

    def __init__(self, roots: list[Path], *, debounce_ms: int, exclude: tuple[Path, ...] = ()) -> None:
        self._batches: queue.Queue[list[Path]] = queue.Queue()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(roots, debounce_ms, exclude), name="ingest-watch",
                                        daemon=True)
        self._thread.start()
        time.sleep(self.SETTLE_S)

    def _run(self, roots: list[Path], debounce_ms: int, exclude: tuple[Path, ...]) -> None:
        try:
            for paths in batches(roots, debounce_ms=debounce_ms, stop=self._stop, exclude=exclude):
                self._batches.put(paths)
        except Exception:
            log.exception("watching %s stopped", roots)
            self._stop.set()

    def __iter__(self) -> Iterator[list[Path]]:
        while not self._stop.is_set():
            try:
                yield self._batches.get(timeout=0.25)
            except queue.Empty:
                continue

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def watch_folders(watcher: Watcher, job: Job) -> None:
    """Run `job` for every batch of changes; a failing job is logged and watching goes on."""
    for paths in watcher:
        try:
            job(paths)
        except Exception:
            log.exception("ingesting %d changed paths failed; watching goes on", len(paths))
