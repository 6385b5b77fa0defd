"""This ingest run among the others that share its manifest: its heartbeat, its leases, and the
dead runs it reaps (see ingest.manifest for the tables)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

import psutil

from ingest.manifest import WORKER_TTL_S, Manifest

log = logging.getLogger("ingest")
HEARTBEAT_S = WORKER_TTL_S / 6


class RunLease:
    """Registers the run, renews it until stop(), and claims files for it."""

    def __init__(self, manifest: Manifest) -> None:
        self._manifest = manifest
        self.host = socket.gethostname()
        self.owner = f"{self.host}:{os.getpid()}:{secrets.token_hex(4)}"
        self._held: set[str] = set()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None
        self._last_beat = time.monotonic()
        self.lost = False  # reaped by another run (thought dead): nothing more may be written

    def start(self) -> None:
        reap_dead(self._manifest, self.host)
        me = psutil.Process()
        self._manifest.register(self.owner, self.host, me.pid, me.create_time())
        self._last_beat = time.monotonic()
        self._beat = threading.Thread(target=self._heartbeat, name="ingest-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if self._manifest.heartbeat(self.owner):
                    self._last_beat = time.monotonic()
                else:
                    self.lost = True
                    log.error("this ingest run was counted dead by another (no heartbeat for %.0f s): it stops "
                              "writing; the files it had not published are left to the other runs", WORKER_TTL_S)
                    return
            except Exception as exc:  # the database is away for a moment: the next beat may reach it
                log.warning("ingest heartbeat failed (other runs take this run's files after %.0f s "
                            "without one): %s", WORKER_TTL_S, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._manifest.unregister(self.owner)
        self._held.clear()

    def healthy(self) -> bool:
        """Whether this run may still write: not reaped, and renewed well within the time-to-live (a run
        paused or cut off from the database longer than that may already be counted dead)."""
        return not self.lost and time.monotonic() - self._last_beat < WORKER_TTL_S / 2

    def claim(self, path: str) -> bool:
        if path in self._held:
            return True
        if self._manifest.claim(path, self.owner):
            self._held.add(path)
            return True
        return False

    def release(self, path: str) -> None:
        if path in self._held:
            self._held.discard(path)
            self._manifest.release(path, self.owner)


def reap_dead(manifest: Manifest, host: str) -> None:
    """Runs of this machine whose process is gone are dead now, not WORKER_TTL_S from now."""
    dead = []
    for w in manifest.workers():
        if w.host != host:
            continue
        try:
            alive = abs(psutil.Process(w.pid).create_time() - w.started) < 1.0
        except psutil.NoSuchProcess:
            alive = False
        except psutil.Error:  # a process we may not inspect: left to its heartbeat
            alive = True
        if not alive:
            dead.append(w.owner)
    manifest.reap(dead)
