"""discover -> parse -> chunk -> embed -> upsert, incremental through the manifest.

Stages overlap: files are parsed and chunked in worker processes (ingest.workers) while this
process embeds and writes the files already parsed, batched across files.

Per file, the order makes every crash harmless and every update atomic for readers: the new
chunks are listed as hidden in the manifest, then written (their ids derive from path, content
hash, settings and index, so a redo overwrites rather than duplicates); one transaction then
publishes the new row and hides the superseded chunks, which are deleted STALE_GRACE_S later
(a search that read the hidden list just before the switch still finds the old version). A run
killed anywhere leaves only hidden chunks behind; the next run deletes them first.

Several runs may share the manifest and store (ingest.runs): a run takes a file's lease before it
reads the file's row, so each changed file is processed by one run; a file another run holds is
waited for at the end, so when a run returns, every file it was given has been ingested, by it
or by the other.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ingest.chunk import Chunk
from ingest.discover import Discovery, discover, file_sha256, file_size
from ingest.manifest import FileRecord, LeaseLost, Manifest
from ingest.metadata import renamed
from ingest.parse import SUPPORTED_SUFFIXES, OcrOptions
from ingest.points import (
    _point,
    chunk_payload,
    doc_id_of,
    embed_input,
    embed_key,
    placed,
    point_id,
    processing_config,
)
from ingest.progress import Meter, ProgressFactory
from ingest.report import AccessChange, FileBusy, FileResult, IngestReport, usable_cores
from ingest.runs import RunLease
from ingest.workers import ParsedChunks, ParsePool, WorkerConfig, failure_reason

if TYPE_CHECKING:
    from appliance.access.acl import AccessRules
    from appliance.backends.embeddings import Embedding
    from appliance.backends.store import ChunkStore, StorePoint
    from appliance.settings import IngestSettings

log = logging.getLogger("ingest")
UPSERT_BATCH = 256
EMBED_BATCH_CHUNKS = 512  # parsed files are embedded together up to this many chunks
# Bumped whenever parsing or chunking changes what a file becomes (eval stores are keyed by it).
STALE_GRACE_S = 1.0  # superseded chunks outlive their replacement's publication by this long
CHANGE_RETRIES = 2  # a file that changes while it is read is read again this many times
VECTOR_CACHE = 20_000  # embeddings of recent chunk texts kept in a run: repeated text is embedded once


@dataclass
class _Held:
    """A file another live run is processing: waited for, then planned again."""

    path: Path


@dataclass
class _Task:
    """A file that must be (re)processed."""

    path: Path
    key: str
    st: os.stat_result
    sha: str
    old: FileRecord | None
    status: str  # added | updated
    donor: FileRecord | None = None  # a published file with the same content: its vectors are copied
    tries: int = 0
    pool: ParsePool | None = None  # the pool parsing it
    salt: str = ""  # in its point ids: set when forced, so they differ from the published ones


class IngestPipeline:
    def __init__(self, settings: IngestSettings, manifest: Manifest, store: ChunkStore,
                 embedding: Embedding, exclude: tuple[Path, ...] = (), access: AccessRules | None = None,
                 access_source: Callable[[], AccessRules] | None = None) -> None:
        from appliance.access.acl import AccessRules

        self._settings = settings
        self.access = access or AccessRules([], settings.default_groups)
        self._access_source = access_source  # called at each run: the rules as they are now
        self._manifest = manifest
        self._store = store
        self._embedding = embedding
        self._exclude = exclude  # the data directory: a folder that holds it must not ingest the store
        self.config = processing_config(settings, getattr(embedding, "model_name", "?"))
        self._pool: ParsePool | None = None  # started on the first file to parse, kept for later runs
        self._stale: list[tuple[float, list[str]]] = []  # (published at, superseded ids), oldest first
        self._vectors: dict[str, Any] = {}
        self._stages: dict[str, float] = {}  # the current run's IngestReport.stages
        self._stage_cpu: dict[str, float] = {}  # and its stage_cpu
        self._pool_workers = settings.workers
        self._lease: RunLease | None = None  # this run among those sharing the manifest (not in a dry run)
        self._held: list[Path] = []  # files other runs held when planned

    def run(self, paths: list[Path], *, prune: bool = False, dry_run: bool = False,
            retry_failed: bool = False, progress: ProgressFactory | None = None,
            cancel: threading.Event | None = None, force: bool = False) -> IngestReport:
        """cancel: once set, the run stops between files as Ctrl-C would (report.interrupted).
        force: parse and embed every file again, unchanged or not (an administrator's re-ingest); the
        old chunks stay searchable until the new ones are published, as for a changed file."""
        started, cpu = time.monotonic(), time.process_time()
        report = IngestReport(cores=usable_cores())
        self._stages, self._stage_cpu = report.stages, report.stage_cpu
        if self._access_source is not None:
            self.access = self._access_source()
        if not dry_run:
            lease = RunLease(self._manifest)
            lease.start()
            self._lease = lease
        try:
            self._run(paths, report, started, prune=prune, dry_run=dry_run, retry_failed=retry_failed,
                      progress=progress, cancel=cancel, force=force)
            report.cpu_seconds = time.process_time() - cpu + report.stage_cpu["parse"]
            return report
        finally:
            if self._lease is not None:
                self._lease.stop()
                self._lease = None

    def _run(self, paths: list[Path], report: IngestReport, started: float, *, prune: bool, dry_run: bool,
             retry_failed: bool, progress: ProgressFactory | None, cancel: threading.Event | None,
             force: bool) -> IngestReport:
        if not dry_run:
            self._recover()
            self.apply_access()
        found = discover(paths, self._exclude)
        for path, reason in found.problems:
            if prune and reason == "no such file or folder" and next(self._manifest.under(str(path)), None):
                continue  # a known file or folder that is gone: pruned below, not a failure
            report.files.append(FileResult(str(path), "failed", error=reason))
        sizes = {p: file_size(p) for p in found.files}
        bar = progress(sum(sizes.values())) if progress else None
        meter = Meter(bar)
        changed = False
        pending = found.files
        try:
            while pending:
                self._held = []
                for task, result in self._stream(pending, dry_run=dry_run, retry_failed=retry_failed,
                                                 force=force):
                    if self._lease is not None:
                        self._lease.release(result.path)
                    report.files.append(result)
                    meter.done(sizes.get(task, 0), result)
                    changed = changed or result.status in ("added", "updated")
                    if cancel is not None and cancel.is_set():
                        report.interrupted = True
                        self._shutdown_pool(cancel=True)  # what is parsing now is dropped; the next run redoes it
                        break
                pending = [] if report.interrupted else self._wait_for_other_runs(self._held, cancel)
                report.interrupted = report.interrupted or bool(cancel and cancel.is_set())
        except KeyboardInterrupt:
            report.interrupted = True  # what was published stays; the next run resumes with the rest
            self._shutdown_pool(cancel=True)
            raise
        finally:
            self._delete_stale(wait=True)
            if bar is not None:
                bar.close()
        if prune and not report.interrupted:
            changed = self._prune(found, report, dry_run) or changed
        if not dry_run and changed:
            # Qdrant Edge builds its HNSW index only when asked: 48 s for 100k chunks, and queries
            # drop from 44 ms (full scan) to 7 ms (docs/benchmarks.md).
            with self._timed("index"):
                self._store.optimize()
                self._store.flush()
        report.seconds = time.monotonic() - started
        return report

    def _wait_for_other_runs(self, held: list[Path], cancel: threading.Event | None) -> list[Path]:
        """Wait until no live run holds these files, and return them to plan again."""
        if held:
            log.info("waiting for %d file(s) that another ingest run is processing", len(held))
        while held and any(self._manifest.held_by_live(str(p)) for p in held):
            if cancel is not None and cancel.wait(0.5):
                return []
            if cancel is None:
                time.sleep(0.5)
        return held

    def remove(self, path: str) -> FileResult | None:
        """Drop one file's chunks and manifest row (the file itself stays); None when it is not known.
        FileBusy while another ingest run is processing the file (it would publish it again)."""
        if self._manifest.get(path) is None:
            return None
        lease = RunLease(self._manifest)
        lease.start()
        try:
            if not lease.claim(path):
                raise FileBusy(f"{Path(path).name} is being ingested by another run: remove it when that run ends")
            rec = self._manifest.get(path)  # as it is now that no run can change it
            if rec is None:
                return None
            self._store.delete(rec.chunk_ids)
            self._manifest.remove(path)
            self._store.flush()
        finally:
            lease.stop()
        return FileResult(path, "removed", chunks=len(rec.chunk_ids))

    def apply_access(self, rules: AccessRules | None = None, dry_run: bool = False) -> list[AccessChange]:
        """Bring every file's stored groups in line with the rules (new ones, when given): a payload
        update of its chunks, nothing parsed or embedded. Returns what changed."""
        if rules is not None and not dry_run:
            self.access = rules
        access = rules or self.access
        changes = []
        for rec in self._manifest.all():
            groups = access.groups_for(rec.path)
            if rec.status != "ok" or sorted(rec.acl) == groups:
                continue
            changes.append(AccessChange(rec.path, sorted(rec.acl), groups, len(rec.chunk_ids)))
            if not dry_run:
                self._store.set_groups(rec.chunk_ids, groups)
                self._manifest.set_acl(rec.path, groups)
        if changes and not dry_run:
            self._store.flush()
        return changes

    def close(self) -> None:
        self._shutdown_pool(cancel=False)

    # -- the stages ---------------------------------------------------------------------------

    def _stream(self, files: list[Path], *, dry_run: bool,
                retry_failed: bool, force: bool = False) -> Iterator[tuple[Path, FileResult]]:
        """Plan each file, parse the ones that changed in the pool, embed and write them as they come."""
        planned = (self._plan(path, dry_run=dry_run, retry_failed=retry_failed, force=force)
                   for path in files)
        # No more workers than files: each idle one holds ~350 MB of parsers (one big PDF needs one).
        self._pool_workers = max(1, min(self._settings.workers, len(files)))
        if self._pool is not None and self._pool.workers < self._pool_workers:
            self._shutdown_pool(cancel=False)  # nothing is in flight between streams
        # Enough parsed files to fill embedding batches with small files; few enough to bound memory.
        window = 32 + 2 * self._settings.workers
        inflight: dict[Future[ParsedChunks], _Task] = {}
        ready: list[tuple[_Task, ParsedChunks]] = []
        exhausted = False
        while True:
            while not exhausted and len(inflight) + len(ready) < window:
                with self._timed("plan"):
                    item = next(planned, None)
                if item is None:
                    exhausted = True
                elif isinstance(item, _Held):
                    self._held.append(item.path)
                elif isinstance(item, FileResult):
                    yield Path(item.path), item
                elif item.donor is not None:
                    copied = self._copy_from_donor(item)
                    if copied is not None:
                        yield item.path, copied
                    else:  # the donor's chunks are not all there: parse after all
                        inflight[self._submit(item)] = item
                else:
                    inflight[self._submit(item)] = item
            if not inflight and not ready:
                return
            done = [f for f in inflight if f.done()]
            if not done and not ready:
                with self._timed("waiting"):
                    done = list(wait(inflight, return_when=FIRST_COMPLETED).done)
            for future in done:
                task = inflight.pop(future)
                outcome = self._parsed(task, future)
                if isinstance(outcome, FileResult):
                    yield task.path, outcome
                elif outcome is None:  # changed while being read: read it again
                    inflight[self._submit(task)] = task
                else:
                    self._stages["parse"] += outcome.seconds
                    self._stage_cpu["parse"] += outcome.cpu_seconds
                    ready.append((task, outcome))
            if ready:
                batch: list[tuple[_Task, ParsedChunks]] = []
                budget = EMBED_BATCH_CHUNKS
                while ready and (not batch or len(ready[0][1].chunks) <= budget):
                    budget -= len(ready[0][1].chunks)
                    batch.append(ready.pop(0))
                yield from self._embed_and_write(batch)
            self._delete_stale(wait=False)

    def _unchanged(self, old: FileRecord | None, st: os.stat_result, *, retry_failed: bool,
                   force: bool) -> FileResult | None:
        """The file as the manifest has it, when nothing says it must be processed again."""
        if old is None:
            return None
        same_stat = old.size == st.st_size and old.mtime_ns == st.st_mtime_ns
        done = old.status in ("ok", "failed", "skipped")  # not "pending": a crashed run
        # Processed with other settings (chunk size, parser, embedding model) or by another version's parsers
        # (CHUNKING_VERSION): do it again; a file that failed is tried again once, as the change may be what
        # reads it. Groups are not among them: a new rule is a payload update (apply_access), never a re-embedding.
        current = old.config == self.config
        retry = force or (retry_failed and old.status in ("failed", "skipped"))
        if done and same_stat and current and not retry:
            return FileResult(old.path, "unchanged", chunks=len(old.chunk_ids), error=old.error, notes=old.notes,
                              pages=old.pages)
        return None

    def _plan(self, path: Path, *, dry_run: bool, retry_failed: bool,
              force: bool = False) -> FileResult | _Task | _Held:
        key = str(path)
        try:
            st = path.stat()
        except OSError as exc:
            return FileResult(key, "failed", error=f"cannot read: {exc.strerror}")
        old = self._manifest.get(key)
        unchanged = self._unchanged(old, st, retry_failed=retry_failed, force=force)
        if unchanged is not None:
            return unchanged
        if self._lease is not None:
            if not self._lease.claim(key):
                return _Held(path)
            # Read again under the lease: another run may have published the file since.
            old = self._manifest.get(key)
            unchanged = self._unchanged(old, st, retry_failed=retry_failed, force=force)
            if unchanged is not None:
                return unchanged
        if path.suffix.lower() not in SUPPORTED_SUFFIXES:
            return self._record_problem(key, st, "skipped", f"unsupported file type {path.suffix or '(none)'!r}",
                                        old, dry_run)
        if st.st_size > self._settings.max_file_mb * 1024 * 1024:
            return self._record_problem(
                key, st, "skipped", f"larger than ingest.max_file_mb ({self._settings.max_file_mb:g} MB)", old, dry_run)
        try:
            sha = file_sha256(path)
        except OSError as exc:
            return FileResult(key, "failed", error=f"cannot read: {exc.strerror}")
        if old and old.sha256 == sha and old.status == "ok" and old.config == self.config and not force:
            if not dry_run:
                self._manifest.touch(key, st.st_size, st.st_mtime_ns)
            return FileResult(key, "unchanged", chunks=len(old.chunk_ids), notes=old.notes, pages=old.pages)
        status = "updated" if old and old.status == "ok" else "added"
        if dry_run:
            return FileResult(key, status)
        if force:  # new point ids: the published chunks have the ids this content would get again
            return _Task(path, key, st, sha, old, status, salt=f"\x00forced {time.time_ns()}")
        donor = self._manifest.with_content(sha, self.config)
        return _Task(path, key, st, sha, old, status, donor=donor if donor and donor.path != key else None)

    def _parsed(self, task: _Task, future: Future[ParsedChunks]) -> ParsedChunks | FileResult | None:
        """A parse result checked against the file as it is now; None: read it again."""
        try:
            parsed = future.result()
        except Exception as exc:  # a parser failure, crash or timeout on one file never stops the run
            if isinstance(exc, BrokenProcessPool) and task.pool is self._pool:
                self._shutdown_pool(cancel=True)  # the next file gets a fresh pool
            reason = failure_reason(exc, self._settings.file_timeout_s, self._settings.file_memory_mb,
                                    task.pool.killed_for_memory if task.pool else set())
            return self._record_problem(task.key, task.st, "failed", reason, task.old, False, sha=task.sha)
        try:
            now = task.path.stat()
        except OSError:
            return FileResult(task.key, "failed", error="deleted while being read (its old version, if any, is kept "
                                                        "until --prune)")
        if (now.st_size, now.st_mtime_ns) == (task.st.st_size, task.st.st_mtime_ns):
            return parsed
        if task.tries >= CHANGE_RETRIES:
            return FileResult(task.key, "failed", error=f"kept changing while being read ({task.tries + 1} reads); "
                                                        "the next run tries again")
        try:
            task.st, task.sha, task.tries = now, file_sha256(task.path), task.tries + 1
        except OSError:
            return FileResult(task.key, "failed", error="deleted while being read")
        return None

    def _embed_and_write(self, batch: list[tuple[_Task, ParsedChunks]]) -> Iterator[tuple[Path, FileResult]]:
        texts = [embed_input(c, parsed.meta.get("title", "")) for _, parsed in batch for c in parsed.chunks]
        try:
            with self._timed("embed"):
                vectors = self._embed(texts)
        except Exception as exc:  # one batch the model cannot take: each file alone tells which
            if len(batch) == 1:
                task = batch[0][0]
                yield task.path, self._record_problem(task.key, task.st, "failed", f"embedding: {exc}"[:300],
                                                      task.old, False, sha=task.sha)
                return
            for one in batch:
                yield from self._embed_and_write([one])
            return
        at = 0
        for task, parsed in batch:
            mine = vectors[at: at + len(parsed.chunks)]
            at += len(parsed.chunks)
            points = self._points(task, parsed.chunks, mine, parsed)
            try:
                with self._timed("write"):
                    self._write(task, points, parsed.parser, parsed.pages, parsed.notes, parsed.meta)
            except LeaseLost as exc:  # its chunks stay hidden; a later run deletes them
                yield task.path, FileResult(task.key, "skipped", error=str(exc))
                continue
            yield task.path, FileResult(task.key, task.status, chunks=len(points), pages=parsed.pages,
                                        notes=parsed.notes)

    def _embed(self, texts: list[str]) -> list[Any]:
        """Embed, taking repeated texts (boilerplate, copies of a file, a page printed twice) from the run's
        cache: each distinct text (spacing folded) is embedded once, its vector shared by every chunk."""
        keys = [embed_key(t) for t in texts]
        missing = list({k: t for k, t in zip(keys, texts, strict=True) if k not in self._vectors}.items())
        vectors = {k: self._vectors[k] for k in keys if k in self._vectors}  # safe from the eviction below
        if missing:
            fresh = self._embedding.embed([t for _, t in missing])
            for (k, _), vector in zip(missing, fresh, strict=True):
                vectors[k] = self._vectors[k] = vector
            for old in list(self._vectors)[: max(0, len(self._vectors) - VECTOR_CACHE)]:
                del self._vectors[old]  # the oldest first (dicts keep insertion order)
        return [vectors[k] for k in keys]

    def _write(self, task: _Task, points: list[StorePoint], parser: str | None, pages: int | None,
               notes: list[str], meta: dict[str, Any]) -> None:
        ids = [p.id for p in points]
        old = task.old
        published = set(old.chunk_ids) if old and old.status == "ok" else set()
        self._hide_new(task.key, [i for i in ids if i not in published])
        try:
            for start in range(0, len(points), UPSERT_BATCH):
                self._check_alive(task.key)
                self._store.upsert(points[start: start + UPSERT_BATCH])
            self._check_alive(task.key)
            self._publish_written(task, ids, parser, pages, notes, meta)
        except LeaseLost:
            self._withdraw(task.key, [i for i in ids if i not in published])
            raise

    def _hide_new(self, key: str, ids: list[str]) -> None:
        """List the chunks as hidden; a few of them may be in another run's hands for a moment (it is
        deleting a superseded copy with the same id): wait for it."""
        deadline = time.monotonic() + 60
        while busy := self._manifest.hide_new(key, ids, self._owner):
            if time.monotonic() > deadline:
                raise LeaseLost(f"{key}: {len(busy)} of its chunks stayed in another ingest run's hands")
            time.sleep(0.2)

    def _check_alive(self, key: str) -> None:
        if self._lease is not None and not self._lease.healthy():
            raise LeaseLost(f"{key}: this run lost touch with the manifest long enough to be counted dead")

    def _withdraw(self, key: str, ids: list[str]) -> None:
        """After a lost lease: delete what this run wrote, unless another run has published it since
        (the same content gives the same ids) or holds it hidden. Left alone, a chunk that another
        run's recovery deleted and unhid before this run's write landed would be found by searches."""
        rec = self._manifest.get(key)
        kept = set(rec.chunk_ids) if rec else set()
        others = set(self._manifest.hidden_by_others(ids, self._owner))
        mine = [i for i in ids if i not in kept and i not in others]
        if mine:
            self._store.delete(mine)

    def _publish_written(self, task: _Task, ids: list[str], parser: str | None, pages: int | None,
                         notes: list[str], meta: dict[str, Any]) -> None:
        old = task.old
        new = set(ids)
        stale = [i for i in (old.chunk_ids if old else []) if i not in new]
        self._manifest.publish(FileRecord(
            path=task.key, size=task.st.st_size, mtime_ns=task.st.st_mtime_ns, sha256=task.sha, status="ok",
            parser=parser, pages=pages, chunk_ids=ids, acl=self.access.groups_for(task.key, task.st), notes=notes,
            ingested_at=time.time(), config=self.config, meta=meta,
        ), stale, self._owner)
        if stale:
            self._stale.append((time.monotonic(), stale))

    def _copy_from_donor(self, task: _Task) -> FileResult | None:
        """The same content is published under another path: copy its chunks, embedded once."""
        donor = task.donor
        assert donor is not None
        found = {p.id: p for p in self._store.retrieve(donor.chunk_ids)}
        if len(found) != len(donor.chunk_ids):
            return None
        points = []
        doc_id = doc_id_of(task.key)
        now = time.time()
        acl = self.access.groups_for(task.key, task.st)
        meta = renamed(donor.meta, Path(donor.path), task.path)
        for i, old_id in enumerate(donor.chunk_ids):
            p = found[old_id]
            payload = {**p.payload, **meta, "doc_id": doc_id, **placed(task.path, meta), "acl_groups": acl,
                       "ingested_at": now}
            points.append(_point(point_id(task.key, task.sha, self.config + task.salt, i), p.vector, p.text, payload))
        try:
            with self._timed("write"):
                self._write(task, points, donor.parser, donor.pages, donor.notes, meta)
        except LeaseLost as exc:
            return FileResult(task.key, "skipped", error=str(exc))
        return FileResult(task.key, task.status, chunks=len(points), pages=donor.pages, notes=donor.notes)

    def _record_problem(self, key: str, st: os.stat_result, status: str, reason: str, old: FileRecord | None,
                        dry_run: bool, sha: str | None = None) -> FileResult:
        if not dry_run:
            # The file changed into something unreadable: its old chunks go, through the same
            # publish-then-delete order as an update.
            try:
                self._manifest.publish(FileRecord(path=key, size=st.st_size, mtime_ns=st.st_mtime_ns, sha256=sha,
                                                  status="failed" if status == "failed" else "skipped",
                                                  error=reason, config=self.config),
                                       list(old.chunk_ids) if old else [], self._owner)
            except LeaseLost as exc:
                return FileResult(key, "skipped", error=str(exc))
            if old and old.chunk_ids:
                self._stale.append((time.monotonic(), list(old.chunk_ids)))
        return FileResult(key, status, error=reason)

    def _prune(self, found: Discovery, report: IngestReport, dry_run: bool) -> bool:
        present = {str(p) for p in found.files}
        removed = False
        # A root that disappeared entirely is pruned too: everything under it is gone.
        for root in [*found.roots, *(p for p, reason in found.problems if reason == "no such file or folder")]:
            for rec in self._manifest.under(str(root)):
                if rec.path not in present and not Path(rec.path).exists():
                    if not dry_run:
                        if self._lease is not None and not self._lease.claim(rec.path):
                            continue  # another run has it in hand: it or the next run prunes it
                        self._store.delete(rec.chunk_ids)
                        self._manifest.remove(rec.path)
                        if self._lease is not None:
                            self._lease.release(rec.path)
                    removed = True
                    report.files.append(FileResult(rec.path, "removed", chunks=len(rec.chunk_ids)))
        return removed and not dry_run

    @property
    def _owner(self) -> str | None:
        return None if self._lease is None else self._lease.owner

    def _recover(self) -> None:
        """Delete what a killed run left hidden: chunks written but never published, or superseded
        (never those of a live run, which publishes or deletes them itself)."""
        if not self._manifest.orphaned_ids():
            return
        # Taken over first, so that no run writes the same ids again while they are being deleted.
        ids = self._manifest.start_deleting(self._owner)
        if ids:
            self._store.delete(ids)
            self._store.flush()
            self._manifest.unhide(ids, self._owner)

    def _delete_stale(self, *, wait: bool) -> None:
        while self._stale:
            published, ids = self._stale[0]
            left = published + STALE_GRACE_S - time.monotonic()
            if left > 0:
                if not wait:
                    return
                time.sleep(left)
            # Only those no other run has taken over since (a file back to this content has these ids).
            mine = self._manifest.start_deleting(self._owner, ids)
            if mine:
                self._store.delete(mine)
                self._manifest.unhide(mine, self._owner)
            self._stale.pop(0)

    @contextmanager
    def _timed(self, stage: str) -> Iterator[None]:
        started, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self._stages[stage] = self._stages.get(stage, 0.0) + time.perf_counter() - started
            self._stage_cpu[stage] = self._stage_cpu.get(stage, 0.0) + time.process_time() - cpu

    def _submit(self, task: _Task) -> Future[ParsedChunks]:
        task.pool = self._parse_pool()
        return task.pool.submit(task.path)

    def _parse_pool(self) -> ParsePool:
        if self._pool is None:
            s = self._settings
            config = WorkerConfig(
                chunk_tokens=s.chunk_tokens, overlap_tokens=s.chunk_overlap_tokens, pdf_parser=s.pdf_parser,
                ocr=OcrOptions(s.ocr, tuple(s.ocr_languages), s.ocr_dpi), memory_mb=s.file_memory_mb,
                max_unpacked_mb=s.max_unpacked_mb, max_chunks=s.max_chunks_per_file, pdf_tables=s.pdf_tables)
            self._pool = ParsePool(self._pool_workers, config, s.file_timeout_s)
        return self._pool

    def _shutdown_pool(self, *, cancel: bool) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            pool.close(cancel=cancel)

    def _points(self, task: _Task, chunks: list[Chunk], vectors: list[Any],
                parsed: ParsedChunks) -> list[StorePoint]:
        doc_id = doc_id_of(task.key)
        now = time.time()
        acl = self.access.groups_for(task.key, task.st)
        return [
            _point(point_id(task.key, task.sha, self.config + task.salt, chunk.index), [float(x) for x in vector],
                   chunk.text, chunk_payload(task.path, doc_id, task.sha, chunk, acl, parsed.parser, now, parsed.meta,
                                             parsed.pages, parsed.running.get(chunk.page or 0)))
            for chunk, vector in zip(chunks, vectors, strict=True)
        ]
