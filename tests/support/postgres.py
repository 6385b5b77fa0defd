"""A throwaway PostgreSQL server for the tests: Debian's postgresql package, on a Unix socket only
(no TCP port, nothing to reach beyond the machine), one fresh database per test."""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(os.path.realpath(found)).parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(versions[-1]).parent if versions else None


@dataclass
class PgServer:
    socket_dir: Path
    user: str
    _count: int = 0

    def url(self, database: str) -> str:
        return f"postgresql://{self.user}@/{database}?host={self.socket_dir}"

    def new_database(self) -> str:
        """A new empty database; its URL."""
        import psycopg

        self._count += 1
        name = f"t{os.getpid()}_{self._count}"
        with psycopg.connect(host=str(self.socket_dir), user=self.user, dbname="postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)


@contextlib.contextmanager
def running_postgres(durable: bool = False) -> Iterator[PgServer | None]:
    """A throwaway server until the block ends; None where PostgreSQL is not installed. Not durable
    (no fsync) unless asked: the tests need speed, the benchmarks a real server's costs."""
    bin_dir = _binaries()
    if bin_dir is None:
        yield None
        return
    root = Path(tempfile.mkdtemp(prefix="appliance-pg-"))
    data, sockets = root / "data", root / "run"
    sockets.mkdir()
    # initdb refuses to run as root: the cluster belongs to the postgres user then.
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
        shutil.chown(sockets, "postgres")
        root.chmod(0o755)
        as_user, user = ["runuser", "-u", "postgres", "--"], "postgres"
    else:
        import getpass

        user = getpass.getuser()
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-U", user, "--auth=trust",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True)
    log = root / "server.log"
    if os.geteuid() == 0:
        log.touch()
        shutil.chown(log, "postgres")
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                    "-o", f"-c listen_addresses='' -k {sockets} -c max_connections=200"
                          + ("" if durable else " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"),
                    "start"],
                   check=True, capture_output=True)
    try:
        yield PgServer(sockets, user)
    finally:
        subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PgServer]:
    with running_postgres() as server:
        if server is None:
            pytest.skip("PostgreSQL is not installed (Debian's postgresql package; scripts/setup.sh test installs it)")
        yield server


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> str:
    """The URL of a new, empty database on the tests' PostgreSQL server."""
    return postgres_server.new_database()
