"""This ingest run among the others that share its manifest: its heartbeat, its leases, and the
dead runs it reaps (see ingest.manifest for the tables)."""

from __future__ import annotations

import logging
import os
import secrets
import socket
import threading

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

    def start(self) -> None:
        reap_dead(self._manifest, self.host)
        me = psutil.Process()
        self._manifest.register(self.owner, self.host, me.pid, me.create_time())
        self._beat = threading.Thread(target=self._heartbeat, name="ingest-heartbeat", daemon=True)
        self._beat.start()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                self._manifest.heartbeat(self.owner)
            except Exception as exc:  # the database is away for a moment: the next beat may reach it
                log.warning("ingest heartbeat failed (other runs take this run's files after %.0f s "
                            "without one): %s", WORKER_TTL_S, exc)

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None:
            self._beat.join()
        self._manifest.unregister(self.owner)
        self._held.clear()

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
