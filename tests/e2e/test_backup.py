"""Backup and restore with the real store, models and CLI: snapshot a populated data directory,
wipe it, restore, and get the same answers, sources, documents and users."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT, SAMPLES

pytestmark = [pytest.mark.e2e]
QUESTIONS = ["How many bottles of water were delivered?", "Which command line tool manages Rust versions?",
             "What activities are planned for the family day?"]


def _cli(data: Path, *args: str, stdin: str | None = None,
         database: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **({"APPLIANCE_DATABASE__URL": database} if database else {})}
    return subprocess.run([sys.executable, "-m", "appliance.cli", *args, "--data-dir", str(data)], cwd=ROOT,
                          capture_output=True, text=True, input=stdin, timeout=600, env=env)


def _answers(data: Path, database: str | None = None) -> list[dict[str, object]]:
    out = []
    for q in QUESTIONS:
        r = _cli(data, "ask", q, "--json", database=database)
        assert r.returncode == 0, r.stderr
        a = json.loads(r.stdout)
        out.append({"answer": a["answer"], "grounded": a["grounded"],
                    "sources": [(s["path"], s["page"], s["text"]) for s in a["sources"]]})
    return out


def test_backup_wipe_restore_gives_the_same_answers(tmp_path: Path) -> None:
    docs, data, saved = tmp_path / "docs", tmp_path / "data", tmp_path / "backup"
    docs.mkdir()
    for name in ("fake-memo.pdf", "rust-book-installation.md", "family-day.eml"):
        shutil.copy(SAMPLES / name, docs / name)
    assert _cli(data, "ingest", str(docs)).returncode == 0
    r = _cli(data, "users", "add", "alice", "--group=hr", "--password-stdin", stdin="Tulip-Harbor-9921\n")
    assert r.returncode == 0, r.stderr
    before = _answers(data)
    assert all(a["grounded"] for a in before)
    documents = _cli(data, "docs", "list", "--json").stdout

    r = _cli(data, "backup", str(saved))
    assert r.returncode == 0, r.stderr
    meta = json.loads((saved / "backup.json").read_text())
    assert meta["points"] > 0
    assert {"points.jsonl", "manifest.sqlite", "users.sqlite"} <= set(meta["files"])

    shutil.rmtree(data)  # the disaster
    r = _cli(data, "restore", str(saved))
    assert r.returncode == 0, r.stderr
    assert f"restored {meta['points']} chunks" in r.stdout
    assert _answers(data) == before
    assert _cli(data, "docs", "list", "--json").stdout == documents
    users = _cli(data, "users", "list").stdout
    assert "alice" in users
    # The restored site is incremental as before: nothing to do for unchanged files.
    again = json.loads(_cli(data, "ingest", str(docs), "--json").stdout)
    assert again["unchanged"] == 3

    # Restoring over documents is refused; so is a changed backup, before anything is touched.
    r = _cli(data, "restore", str(saved))
    assert r.returncode != 0
    assert "already holds documents" in r.stderr
    with (saved / "points.jsonl").open("a") as f:
        f.write("\n")
    r = _cli(tmp_path / "fresh", "restore", str(saved))
    assert r.returncode != 0
    assert "points.jsonl is missing or changed" in r.stderr
    assert not (tmp_path / "fresh" / "manifest.sqlite").exists()
    # A data directory with users of its own is never overwritten.
    other = tmp_path / "other"
    assert _cli(other, "users", "add", "bob", "--password-stdin", stdin="Granite-Falcon-4410\n").returncode == 0
    with (saved / "points.jsonl").open("r+") as f:  # the backup as it was made
        f.seek(0, 2)
        f.truncate(f.tell() - 1)
    r = _cli(other, "restore", str(saved))
    assert r.returncode != 0
    assert "already holds users" in r.stderr
    assert "bob" in _cli(other, "users", "list").stdout


def test_a_backup_moves_between_sqlite_and_the_shared_database(tmp_path: Path, postgres_url: str) -> None:
    """A one-server site's backup restores into PostgreSQL (the move to several replicas), and back."""
    docs, single, shared, back = tmp_path / "docs", tmp_path / "single", tmp_path / "shared", tmp_path / "back"
    docs.mkdir()
    for name in ("fake-memo.pdf", "family-day.eml"):
        shutil.copy(SAMPLES / name, docs / name)
    assert _cli(single, "ingest", str(docs)).returncode == 0
    assert _cli(single, "users", "add", "alice", "--group=hr", "--password-stdin",
                stdin="Tulip-Harbor-9921\n").returncode == 0
    before = _answers(single)
    documents = _cli(single, "docs", "list", "--json").stdout
    assert _cli(single, "backup", str(tmp_path / "b1")).returncode == 0

    r = _cli(shared, "restore", str(tmp_path / "b1"), database=postgres_url)
    assert r.returncode == 0, r.stderr
    assert not (shared / "manifest.sqlite").exists()  # the tables went to PostgreSQL
    assert _answers(shared, postgres_url) == before
    assert _cli(shared, "docs", "list", "--json", database=postgres_url).stdout == documents
    assert "alice" in _cli(shared, "users", "list", database=postgres_url).stdout
    r = _cli(tmp_path / "again", "restore", str(tmp_path / "b1"), database=postgres_url)
    assert r.returncode != 0
    assert "already holds documents" in r.stderr  # the shared database is not overwritten

    r = _cli(shared, "backup", str(tmp_path / "b2"), database=postgres_url)
    assert r.returncode == 0, r.stderr
    r = _cli(back, "restore", str(tmp_path / "b2"))
    assert r.returncode == 0, r.stderr
    assert _cli(back, "docs", "list", "--json").stdout == documents
    assert "alice" in _cli(back, "users", "list").stdout
