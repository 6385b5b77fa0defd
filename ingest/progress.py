"""An ingest run's progress bar: bytes for the ETA, files/s and pages/s beside the file being done."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingest.report import FileResult

ProgressFactory = Callable[[int], Any]  # total bytes -> object with update(n), set_postfix_str(s), close()


class Meter:
    """Drives the progress bar: bytes for the ETA, files/s and pages/s beside the file name."""

    def __init__(self, bar: Any) -> None:
        self._bar = bar
        self._started = time.monotonic()
        self.files = 0
        self.pages = 0

    def done(self, size: int, result: FileResult) -> None:
        self.files += 1
        if result.status in ("added", "updated"):
            self.pages += result.pages or 1
        if self._bar is None:
            return
        rate = max(time.monotonic() - self._started, 1e-6)
        self._bar.set_postfix_str(f"{self.files / rate:.1f} files/s, {self.pages / rate:.1f} pages/s, "
                                  f"{Path(result.path).name[:32]}", refresh=False)
        self._bar.update(size)
