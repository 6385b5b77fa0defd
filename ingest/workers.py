"""Parsing and chunking in worker processes, each file under a time and a memory limit.

A parser that loops or blows up on one file must not hang the run or take the machine's
memory: each file is parsed by a pebble ProcessPool worker (pebble kills a worker whose task
runs past its timeout and starts a fresh one), and a watchdog thread kills any worker whose
resident memory passes the limit (an address-space rlimit was tried first: spaCy's BLIS
reserves more address space than a useful limit allows, and normal files failed). Workers are
started by forkserver, never forked from a process that runs threads (the server does).
"""

from __future__ import annotations

import multiprocessing
import signal
import threading
import time
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.parse import OcrOptions, ParseError

if TYPE_CHECKING:
    from ingest.chunk import Chunk, Chunker

MB = 1024 * 1024
_SIGNALS = {int(s) for s in signal.Signals}
TASKS_PER_WORKER = 2000  # a fresh process now and then: parsers that leak cannot grow without bound


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to turn a file into chunks (sent to each worker once, so picklable)."""

    chunk_tokens: int
    overlap_tokens: int
    pdf_parser: str
    ocr: OcrOptions
    memory_mb: int
    max_unpacked_mb: int
    max_chunks: int
    pdf_tables: bool = True


@dataclass
class ParsedChunks:
    chunks: list[Chunk]
    pages: int | None
    notes: list[str]
    parser: str
    seconds: float = 0.0  # parsing and chunking, in the worker
    cpu_seconds: float = 0.0  # the worker's CPU time for them
    meta: dict[str, Any] = field(default_factory=dict)  # the document's title, author, dates (DocumentMeta)
    running: dict[int, list[str]] = field(default_factory=dict)  # page -> running lines left out (ingest.running)


class _Worker:
    """Per-process state, built by the pool's initializer (one chunker per worker process)."""

    config: WorkerConfig | None = None
    chunker: Chunker | None = None


def _init_worker(config: WorkerConfig) -> None:
    from appliance.backends.embeddings import build_token_counter
    from appliance.offline import enforce_offline
    from ingest.chunk import Chunker

    enforce_offline()
    _warm_up()
    counter = build_token_counter()
    _Worker.config = config
    _Worker.chunker = Chunker(counter.count, counter.tokens, config.chunk_tokens, config.overlap_tokens)


def _warm_up() -> None:
    """Import the parsers and load spaCy now (about 3 s), so that no file's time limit pays for them."""
    import importlib

    import pypdfium2  # noqa: F401
    from unstructured.nlp.tokenize import sent_tokenize

    for kind in ("auto", "docx", "pptx", "xlsx", "html", "md", "email", "text"):
        importlib.import_module(f"unstructured.partition.{kind}")
    sent_tokenize("Warm up. Ready.")


def parse_and_chunk(path: str) -> ParsedChunks:
    """Runs in a worker: parse one file and cut it into chunks."""
    from ingest.parse import parse_file

    config, chunker = _Worker.config, _Worker.chunker
    if config is None or chunker is None:
        raise RuntimeError("parse_and_chunk runs in a pool worker")
    check_archive(Path(path), config.max_unpacked_mb)
    started, cpu = time.perf_counter(), time.process_time()
    parsed = parse_file(Path(path), pdf_parser=config.pdf_parser, ocr=config.ocr, pdf_tables=config.pdf_tables)
    chunks = chunker.chunk(parsed.elements)
    if not chunks:
        raise ParseError("no text found")
    if len(chunks) > config.max_chunks:
        raise ParseError(f"{len(chunks)} chunks, more than ingest.max_chunks_per_file ({config.max_chunks})")
    return ParsedChunks(chunks, parsed.pages, parsed.notes, parsed.parser, time.perf_counter() - started,
                        time.process_time() - cpu, parsed.meta.to_payload(), parsed.running)


def check_archive(path: Path, max_unpacked_mb: int) -> None:
    """Refuse a zip-based file (DOCX, XLSX, PPTX, ODT, EPUB, ...) that would unpack beyond the limit.

    The sizes a zip declares bound what Python's zipfile will inflate (it stops at the declared
    size), so checking them before any parser opens the file defeats a zip bomb cheaply."""
    if not zipfile.is_zipfile(path):
        return
    try:
        with zipfile.ZipFile(path) as archive:
            members = archive.infolist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return  # not readable as a zip after all: the parser reports it
    unpacked = sum(m.file_size for m in members)
    packed = max(1, sum(m.compress_size for m in members))
    if unpacked > max_unpacked_mb * MB:
        raise ParseError(f"unpacks to {unpacked / MB:,.0f} MB ({unpacked / packed:,.0f}x its size), more than "
                         f"ingest.max_unpacked_mb ({max_unpacked_mb}): refused as a possible zip bomb")
    if len(members) > 100_000:
        raise ParseError(f"holds {len(members):,} archive members: refused as a possible zip bomb")


class ParsePool:
    """A pool of parse workers; `submit` returns a future of ParsedChunks (or the file's error)."""

    def __init__(self, workers: int, config: WorkerConfig, timeout_s: float) -> None:
        from pebble import ProcessPool

        self.workers = workers
        self._timeout = timeout_s
        self._limit = config.memory_mb * MB
        self._pool: Any = ProcessPool(max_workers=workers, max_tasks=TASKS_PER_WORKER, initializer=_init_worker,
                                      initargs=(config,), context=multiprocessing.get_context("forkserver"))
        self.killed_for_memory: set[int] = set()
        self._stop = threading.Event()
        self._watchdog = threading.Thread(target=self._watch_memory, name="parse-memory-watchdog", daemon=True)
        self._watchdog.start()

    def submit(self, path: Path) -> Future[ParsedChunks]:
        future: Future[ParsedChunks] = self._pool.schedule(parse_and_chunk, args=(str(path),),
                                                          timeout=self._timeout)
        return future

    def close(self, *, cancel: bool = False) -> None:
        self._stop.set()
        if cancel:
            self._pool.stop()
        else:
            self._pool.close()
        self._pool.join()

    def _watch_memory(self) -> None:
        """Every 0.1 s: a worker past the limit is killed (pebble then fails its task with ProcessExpired)."""
        import psutil

        me = psutil.Process()
        while not self._stop.wait(0.1):
            try:
                # Workers are the children of our forkserver (not of any other process we started).
                servers = [c for c in me.children() if "multiprocessing.forkserver" in " ".join(c.cmdline())]
                workers = [w for server in servers for w in server.children()]
            except psutil.Error:
                continue
            for worker in workers:
                try:
                    if worker.memory_info().rss > self._limit:
                        self.killed_for_memory.add(worker.pid)
                        worker.kill()
                except psutil.Error:
                    continue


def failure_reason(exc: BaseException, timeout_s: float, memory_mb: int, killed_for_memory: set[int]) -> str:
    """One line for the report, from what a worker's future raised."""
    from concurrent.futures import TimeoutError as FutureTimeout
    from concurrent.futures.process import BrokenProcessPool

    from pebble import ProcessExpired

    if isinstance(exc, ParseError):
        return str(exc)
    if isinstance(exc, BrokenProcessPool):
        return (f"the parse workers could not start or all died (a worker needs about 300 MB; "
                f"ingest.file_memory_mb is {memory_mb})")
    if isinstance(exc, FutureTimeout | TimeoutError):
        return f"parsing took longer than ingest.file_timeout_s ({timeout_s:g} s): stopped"
    if isinstance(exc, ProcessExpired):
        if exc.pid in killed_for_memory:
            return f"parsing needed more than ingest.file_memory_mb ({memory_mb} MB): stopped"
        code = exc.exitcode
        how = f"signal {signal.Signals(-code).name}" if code < 0 and -code in _SIGNALS else f"exit code {code}"
        return f"the parser crashed ({how})"
    if isinstance(exc, MemoryError):
        return f"parsing needed more than ingest.file_memory_mb ({memory_mb} MB): stopped"
    return f"{type(exc).__name__}: {exc}"[:300]
