"""Copy a collection from one store to another (embedded to a Qdrant server, or back).

Points travel as they were written: id, dense vector, payload and text. The target's ``upsert``
recomputes the BM25 vector from the text, so the sparse side follows the target's own IDF. Ids are
kept, so a re-run (after a killed one, say) overwrites instead of duplicating.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from appliance.backends.store import ChunkStore, StorePoint


class PointSource(Protocol):
    """What a copy reads from: a store, or a backup's points file (appliance.ops.backup)."""

    def scroll(self, batch: int = 256) -> Iterator[list[StorePoint]]: ...
    def count(self) -> int: ...


class MigrationError(RuntimeError):
    """The copy finished but the target does not hold what the source does."""


def migrate(source: PointSource, target: ChunkStore, progress: Callable[[int], object] | None = None,
            batch: int = 256) -> int:
    """Copy every point of `source` into `target`; return how many were copied.

    `progress`, if given, is called after each batch is written with the number of points in that
    batch (an increment, as a click progress bar's ``update`` takes; the total is ``source.count()``).
    Raises MigrationError when the counts differ afterwards: the target held other points before,
    or the source changed during the copy (stop ingestion and re-run).
    """
    if batch < 1:
        raise ValueError(f"batch must be at least 1, not {batch}")
    copied = 0
    for points in source.scroll(batch):
        target.upsert(points)
        copied += len(points)
        if progress is not None:
            progress(len(points))
    # As after an ingest: the embedded engine builds its HNSW index only when asked.
    target.optimize()
    target.flush()
    expected, found = source.count(), target.count()
    if found != expected:
        raise MigrationError(
            f"copied {copied} points, but the target holds {found} and the source {expected}: either the "
            "target held other points before (migrate into an empty collection) or the source changed "
            "during the copy (stop ingestion and re-run)")
    return copied
