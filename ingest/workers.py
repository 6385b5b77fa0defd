"""Parsing and chunking in worker processes, each file under a time and a memory limit.

A parser that loops or blows up on one file must not hang the run or take the machine's
memory: each file is parsed by a pebble ProcessPool worker (pebble kills a worker whose task
runs past its timeout and starts a fresh one), and every worker caps its own address space
with RLIMIT_AS, so an allocation beyond the limit fails inside that worker only. Workers
are started by forkserver, never forked from a process that runs threads (the server does).
"""

from __future__ import annotations

import multiprocessing
import resource
import zipfile
from concurrent.futures import Future
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.parse import ParseError

if TYPE_CHECKING:
    from ingest.chunk import Chunk, Chunker

MB = 1024 * 1024
TASKS_PER_WORKER = 500  # a fresh process now and then: parsers that leak cannot grow without bound


@dataclass(frozen=True)
class WorkerConfig:
    """What a worker needs to turn a file into chunks (sent to each worker once, so picklable)."""

    chunk_tokens: int
    overlap_tokens: int
    pdf_parser: str
    ocr: str
    memory_mb: int
    max_unpacked_mb: int
    max_chunks: int


@dataclass
class ParsedChunks:
    chunks: list[Chunk]
    pages: int | None
    notes: list[str]
    parser: str


class _Worker:
    """Per-process state, built by the pool's initializer (one chunker per worker process)."""

    config: WorkerConfig | None = None
    chunker: Chunker | None = None


def _init_worker(config: WorkerConfig) -> None:
    from appliance.backends.embeddings import build_token_counter
    from appliance.offline import enforce_offline
    from ingest.chunk import Chunker

    enforce_offline()
    import pypdfium2  # noqa: F401  (loaded before the limit is measured: its library is mapped once)

    counter = build_token_counter()
    _Worker.config = config
    _Worker.chunker = Chunker(counter.count, counter.tokens, config.chunk_tokens, config.overlap_tokens)
    # The limit is on top of what the worker already maps (interpreter, libraries, tokenizer).
    with open("/proc/self/statm") as fh:
        mapped = int(fh.read().split()[0]) * resource.getpagesize()
    limit = mapped + config.memory_mb * MB
    _soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    resource.setrlimit(resource.RLIMIT_AS, (limit if hard == resource.RLIM_INFINITY else min(limit, hard), hard))


def parse_and_chunk(path: str) -> ParsedChunks:
    """Runs in a worker: parse one file and cut it into chunks."""
    from ingest.parse import parse_file

    config, chunker = _Worker.config, _Worker.chunker
    if config is None or chunker is None:
        raise RuntimeError("parse_and_chunk runs in a pool worker")
    check_archive(Path(path), config.max_unpacked_mb)
    try:
        parsed = parse_file(Path(path), pdf_parser=config.pdf_parser, ocr=config.ocr)
        chunks = chunker.chunk(parsed.elements)
    except MemoryError:
        raise ParseError(f"needed more than {config.memory_mb} MB of memory (ingest.file_memory_mb)") from None
    if not chunks:
        raise ParseError("no text found")
    if len(chunks) > config.max_chunks:
        raise ParseError(f"{len(chunks)} chunks, more than ingest.max_chunks_per_file ({config.max_chunks})")
    return ParsedChunks(chunks, parsed.pages, parsed.notes, parsed.parser)


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

        self._timeout = timeout_s
        self._pool: Any = ProcessPool(max_workers=workers, max_tasks=TASKS_PER_WORKER, initializer=_init_worker,
                                 initargs=(config,), context=multiprocessing.get_context("forkserver"))

    def submit(self, path: Path) -> Future[ParsedChunks]:
        future: Future[ParsedChunks] = self._pool.schedule(parse_and_chunk, args=(str(path),),
                                                          timeout=self._timeout)
        return future

    def close(self, *, cancel: bool = False) -> None:
        if cancel:
            self._pool.stop()
        else:
            self._pool.close()
        self._pool.join()


def failure_reason(exc: BaseException, timeout_s: float, memory_mb: int) -> str:
    """One line for the report, from what a worker's future raised."""
    from concurrent.futures import TimeoutError as FutureTimeout

    from pebble import ProcessExpired

    if isinstance(exc, ParseError):
        return str(exc)
    if isinstance(exc, FutureTimeout | TimeoutError):
        return f"parsing took longer than ingest.file_timeout_s ({timeout_s:g} s): stopped"
    if isinstance(exc, ProcessExpired):
        return (f"the parser crashed (exit code {exc.exitcode}); "
                f"it may have needed more than ingest.file_memory_mb ({memory_mb} MB)")
    if isinstance(exc, MemoryError):
        return f"needed more than {memory_mb} MB of memory (ingest.file_memory_mb)"
    return f"{type(exc).__name__}: {exc}"[:300]

