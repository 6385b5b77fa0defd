"""What the real CLI leaves in the data directory is its owner's alone, even when started with the usual
umask 022: the SQLite files and their -wal/-shm companions, the store, logs, uploads, Gradio's cache."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.conftest import ROOT, SAMPLES
from tests.support.servers import appliance_server

INGEST = {
    "appliance ingest": [sys.executable, "-m", "appliance.cli", "ingest"],
    "the ingest script": [sys.executable, "-c", "import sys; from appliance.cli import ingest_main; "
                          "sys.argv[0] = 'ingest'; ingest_main()"],
}


@pytest.fixture
def usual_umask() -> Iterator[None]:
    """This process and the commands it starts create files 0644 and folders 0755 unless they say otherwise."""
    before = os.umask(0o022)
    yield
    os.umask(before)


def open_to_others(root: Path) -> list[str]:
    """Every file and folder under root, root included, with a group or other permission bit."""
    found = []
    for path in [root, *sorted(root.rglob("*"))]:
        mode = path.lstat().st_mode
        if not stat.S_ISLNK(mode) and mode & 0o077:
            found.append(f"{stat.filemode(mode)} {path.relative_to(root)}")
    return found


def documents(tmp_path: Path) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "rust-book-installation.md").write_bytes((SAMPLES / "rust-book-installation.md").read_bytes())
    return docs


@pytest.mark.slow  # the full suite (scripts/test.sh) runs it; plain pytest stays fast
@pytest.mark.usefixtures("usual_umask")
@pytest.mark.parametrize("command", list(INGEST))
def test_ingest_leaves_nothing_other_local_users_can_read(tmp_path: Path, command: str) -> None:
    data = tmp_path / "data"
    subprocess.run([*INGEST[command], str(documents(tmp_path)), "--data-dir", str(data)], check=True, cwd=ROOT,
                   capture_output=True)
    assert (data / "manifest.sqlite").is_file()
    assert (data / "store").is_dir()
    assert open_to_others(data) == []


@pytest.mark.usefixtures("usual_umask")
def test_a_data_directory_an_older_version_left_open_is_made_owner_only(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir(mode=0o755)
    subprocess.run([*INGEST["appliance ingest"], str(documents(tmp_path)), "--data-dir", str(data)], check=True,
                   cwd=ROOT, capture_output=True)
    assert stat.S_IMODE(data.stat().st_mode) == 0o700


@pytest.mark.e2e
@pytest.mark.slow
@pytest.mark.usefixtures("usual_umask")
def test_serving_an_answer_leaves_nothing_other_local_users_can_read(tmp_path: Path) -> None:
    data = tmp_path / "data"
    subprocess.run([*INGEST["appliance ingest"], str(documents(tmp_path)), "--data-dir", str(data)], check=True,
                   cwd=ROOT, capture_output=True)
    with appliance_server(data, tmp_path / "serve.log") as (url, _):
        r = httpx.post(url + "/v1/chat/completions", timeout=300, json={
            "model": "rag-appliance", "max_tokens": 24,
            "messages": [{"role": "user", "content": "How do I install Rust?"}]})
        assert r.status_code == 200, r.text
        assert httpx.get(url + "/", timeout=60).status_code == 200  # the page: Gradio's cache is in data/tmp
        written = {p.name for p in data.rglob("*")}
        assert open_to_others(data) == []  # while the server runs: the -wal files are there now
    assert {"logs", "gradio", "appliance.log", "users.sqlite"} <= written, sorted(written)
    assert [name for name in written if name.endswith("-wal")], sorted(written)
    assert open_to_others(data) == []
