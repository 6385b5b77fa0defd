"""Our `appliance ingest` beside the baseline on the same files, alternating in one run.

    .venv/bin/python -m benchmarks.run --only versus_baseline [--versus-target PATH ...] [--versus-rounds 2]

Each round runs ours, then the baseline (`../shared/bench/baseline_ingest.py`, PrivateGPT 0.6.2's way,
from `.venv-baseline`, made by `benchmarks/setup_baseline.sh`), each as a fresh process on a fresh data
folder, so that both see the same machine load; the rows give the medians over the rounds and the ratios
baseline / ours (above 1: the baseline takes more). A run's wall time includes start-up; its CPU time is
user + system of the whole process tree: the child's rusage from wait4 (its waited descendants
included) plus that of the descendants orphaned when it exits (ours' forkserver and its parse workers,
which Python 3.11 never waits for), caught by making this process their subreaper (Linux). Its memory is
the peak of the tree's summed resident memory, sampled every 0.2 s, as benchmarks/scale.py measures it.
A file target reaches the baseline (which takes a folder) as a folder holding one link to it.
"""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.scale import BASELINE, BASELINE_PYTHON, ROOT, SHARED, Row, _pages

DEFAULT_TARGET = SHARED / "corpus" / "unstructured-example-docs" / "pdf" / "DA-619p.pdf"
PR_SET_CHILD_SUBREAPER = 36
ORPHAN_WAIT_S = 30.0  # how long to wait for the orphaned descendants to exit after the child did


@dataclass
class Measured:
    """One command's whole process tree: wall seconds, CPU seconds (user + system), peak MB of summed RSS."""

    wall: float
    cpu: float
    peak_mb: float
    stdout: str
    stderr: str
    returncode: int
    processes: int  # distinct processes seen in the tree (the child included)
    orphans: int  # descendants reaped here after the child exited
    sampled_cpu: float  # psutil's last look at each process's own CPU time: a lower bound, for a check


def _set_subreaper(on: bool) -> bool:
    """Orphaned descendants are re-parented to this process (so wait4 can count them) while on."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return bool(libc.prctl(PR_SET_CHILD_SUBREAPER, int(on), 0, 0, 0) == 0)
    except (OSError, AttributeError):
        return False


def _cpu(usage: Any) -> float:
    return float(usage.ru_utime + usage.ru_stime)


def run_measured(args: list[str], env: dict[str, str] | None = None) -> Measured:
    """Run `args` from the repository root; measure its tree (see the module's docstring)."""
    subreaper = _set_subreaper(True)
    try:
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            started = time.perf_counter()
            proc = subprocess.Popen(args, cwd=ROOT, stdout=out, stderr=err, stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})})
            peak, seen, usage = _wait_sampling(proc)
            wall = time.perf_counter() - started
            cpu, orphans = _cpu(usage), 0
            deadline = time.monotonic() + ORPHAN_WAIT_S
            while subreaper and time.monotonic() < deadline:
                try:
                    pid, _, usage = os.wait4(-1, os.WNOHANG)
                except ChildProcessError:
                    break  # none left
                if pid == 0:
                    time.sleep(0.05)
                    continue
                cpu += _cpu(usage)
                orphans += 1
            out.seek(0)
            err.seek(0)
            return Measured(wall, cpu, peak / 2**20, out.read().decode(errors="replace"),
                            err.read().decode(errors="replace"), proc.returncode, len(seen), orphans,
                            sum(seen.values()))
    finally:
        if subreaper:
            _set_subreaper(False)


def _wait_sampling(proc: subprocess.Popen[bytes]) -> tuple[int, dict[int, float], Any]:
    """Wait for `proc` with wait4: (peak bytes of the tree's summed RSS, sampled every 0.2 s meanwhile; each
    process's own CPU seconds at the last look; the rusage of `proc` and its waited descendants)."""
    import psutil

    peak = 0
    seen: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        try:
            root = psutil.Process(proc.pid)
        except psutil.Error:
            return
        while not done.wait(0.2):
            try:
                tree = [root, *root.children(recursive=True)]
            except psutil.Error:
                continue
            rss = 0
            for p in tree:
                try:
                    with p.oneshot():
                        rss += p.memory_info().rss
                        times = p.cpu_times()
                    seen[p.pid] = max(seen.get(p.pid, 0.0), times.user + times.system)
                except psutil.Error:
                    continue
            peak = max(peak, rss)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        _, status, usage = os.wait4(proc.pid, 0)
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        done.set()
        sampler.join()
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
    return peak, seen, usage


def _last_json(measured: Measured, who: str, ok: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """The last stdout line as JSON, or a RuntimeError that says why not (with stderr's last line)."""
    try:
        report: dict[str, Any] = json.loads(measured.stdout.strip().splitlines()[-1])
        if measured.returncode in ok:
            return report
    except (ValueError, IndexError):
        pass
    tail = (measured.stderr.strip().splitlines() or ["no stderr"])[-1]
    raise RuntimeError(f"{who} exited {measured.returncode}: {tail}"[:300])


def _ours(target: Path, data: Path) -> tuple[Measured, dict[str, Any]]:
    m = run_measured([sys.executable, "-m", "appliance.cli", "ingest", str(target), "--json", "--no-progress",
                      "--data-dir", str(data)])
    return m, _last_json(m, "ours", ok=(0, 1))  # 1: some files failed, each named in the report (the corpus)


def _baseline(folder: Path, data: Path) -> tuple[Measured, dict[str, Any]]:
    m = run_measured([str(BASELINE_PYTHON), str(BASELINE), str(folder), "--data-dir", str(data), "--queries", "0",
                      "--json"])
    return m, _last_json(m, "baseline")


def _label(target: Path) -> str:
    try:
        return str(target.relative_to(SHARED.resolve()))
    except ValueError:
        return str(target)


def bench_versus_baseline(targets: list[Path] | None = None, rounds: int = 2) -> list[Row]:
    """Rounds of (ours, baseline) on each target; ratios baseline / ours of the medians."""
    rows: list[Row] = []
    for target in [t.resolve() for t in (targets or [DEFAULT_TARGET])]:
        name = f"versus baseline: {_label(target)}"
        if not target.exists():
            rows.append((name, "skipped", f"{target} not found (../shared?)"))
        elif not BASELINE_PYTHON.exists() or not BASELINE.exists():
            rows.append((name, "not run", f"needs benchmarks/setup_baseline.sh ({BASELINE_PYTHON}) and {BASELINE}"))
        else:
            rows += _compare(name, target, max(1, rounds))
    return rows


def _compare(name: str, target: Path, rounds: int) -> list[Row]:
    runs: dict[str, list[Measured]] = {"ours": [], "baseline": []}
    reports: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="versus-") as tmp:
        folder = target
        if target.is_file():  # the baseline ingests a folder
            folder = Path(tmp) / "target"
            folder.mkdir()
            (folder / target.name).symlink_to(target)
        pages = _pages(folder)
        files = sum(1 for p in folder.rglob("*") if p.is_file())
        for r in range(rounds):
            for who, run, path in (("ours", _ours, target), ("baseline", _baseline, folder)):
                data = Path(tmp) / f"{who}-{r + 1}"
                try:
                    measured, reports[who] = run(path, data)
                except RuntimeError as exc:
                    return [(name, "failed", f"round {r + 1}: {exc}")]
                finally:
                    shutil.rmtree(data, ignore_errors=True)  # the baseline's JSON stores are big
                runs[who].append(measured)
    ours, base = runs["ours"], runs["baseline"]
    about = (f"{pages:,} pages, {files:,} file(s); ours {reports['ours']['chunks']:,} chunks "
             f"({reports['ours']['failed']} failed), baseline {reports['baseline']['chunks']:,} nodes "
             f"({reports['baseline']['failed_files']} failed); {rounds} round(s), ours first in each")

    def row(what: str, unit: str, fmt: str, get: Callable[[Measured], float], note: str = "") -> Row:
        o, b = statistics.median(get(m) for m in ours), statistics.median(get(m) for m in base)
        per_run = "; ".join(f"{who} {', '.join(format(get(m), fmt) for m in ms)}" for who, ms in runs.items())
        return (f"{name}, {what}", f"{b / o:.2f}x (baseline / ours)" if o else "n/a",
                f"median ours {o:{fmt}} {unit}, baseline {b:{fmt}} {unit}; per run: {per_run}{note}; {about}")

    counted = "; ".join(f"{who}: {' / '.join(f'{m.processes} process(es), {m.orphans} reaped as orphans' for m in ms)}"
                        for who, ms in runs.items())
    return [
        row("wall", "s", ",.1f", lambda m: m.wall),
        row("CPU user+sys, process tree", "s", ",.1f", lambda m: m.cpu, f"; {counted}"),
        row("peak RSS, process tree", "MB", ",.0f", lambda m: m.peak_mb),
    ]
