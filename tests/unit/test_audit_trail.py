"""The audit trail under hostile input and long use: bounded lines, a chain no line length breaks, and
rotation that never deletes evidence (real files in tmp_path)."""

from __future__ import annotations

import hashlib
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from appliance.access.audit import CURRENT, MAX_LINE_BYTES, AuditError, AuditLog, _hash

ROOT = Path(__file__).resolve().parents[2]


def _lines(log: AuditLog) -> list[bytes]:
    return [line for path in log.files() for line in path.read_bytes().splitlines() if line.strip()]


def _append_raw(log: AuditLog, **fields: Any) -> None:
    """A chained line as an earlier version wrote it: verbatim, however long."""
    last = _lines(log)[-1] if log.files() else None
    prev = json.loads(last)["hash"] if last else "0" * 64
    entry = {"ts": "2026-01-01T00:00:00.000+00:00", "event": "question", "actor": "old", **fields, "prev": prev}
    entry["hash"] = _hash(prev, entry)
    with (log.folder / CURRENT).open("a", encoding="utf-8") as out:
        out.write(json.dumps(entry, ensure_ascii=False) + "\n")


def test_a_100k_character_question_is_logged_as_its_length_and_hash_and_the_chain_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    question = "why " * 25_000
    log.record("question", "mallory", question=question)
    log.record("search", "alice", query="band E4")
    log.record("sign_in", "alice")

    result = log.verify()
    assert result.ok, result.problems
    assert result.lines == 3
    assert all(len(line) < MAX_LINE_BYTES for line in _lines(log))
    first = next(log.entries())
    assert first["question"]["chars"] == 100_000
    assert first["question"]["sha256"] == hashlib.sha256(question.encode()).hexdigest()
    assert first["question"]["prefix"] == question[:200]


def test_lines_of_200_kb_from_an_earlier_version_do_not_break_the_chain(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    log.record("sign_in", "alice")
    for i in range(3):
        _append_raw(log, question=f"{i}" + "x" * 200_000)  # each line is three 64 KiB blocks and more
        log.record("search", "alice", query=f"after {i}")

    result = log.verify()
    assert result.ok, result.problems
    assert result.lines == 7


def test_huge_lists_and_nested_strings_keep_every_line_under_the_byte_bound(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", include_text=True)
    sources: list[dict[str, Any]] = [{"path": f"/share/{i}/" + "p" * 5_000, "page": i, "text": "t" * 20_000}
                                     for i in range(5_000)]
    log.record("question", "mallory", question="q" * 1_000_000, sources=sources, answer="a" * 50_000,
               comment={"deep": [[["c" * 3_000]]]})
    log.record("upload", "mallory", files=[{"path": f"/u/{i}.pdf", "status": "ok"} for i in range(1_000)])

    assert log.verify().ok
    assert all(len(line) < MAX_LINE_BYTES for line in _lines(log))
    question, upload = log.entries()
    assert question["sources_omitted"] == 4_900
    assert len([s for s in question["sources"] if "path" in s]) == 100
    assert question["sources"][0]["path"]["chars"] == len(sources[0]["path"])
    assert upload["files_omitted"] == 900
    assert upload["files"][99]["path"] == "/u/99.pdf"  # short values stay verbatim
    assert len(sources[0]["text"]) == 20_000  # the caller's data is not changed


def test_text_stays_out_unless_include_text_and_stays_verbatim_under_it(tmp_path: Path) -> None:
    passage, answer = "p" * 3_000, "a" * 5_000  # past MAX_CHARS, within the text bound
    quiet = AuditLog(tmp_path / "quiet")
    quiet.record("question", "alice", sources=[{"path": "/a", "text": passage}], answer=answer)
    assert "ppp" not in (tmp_path / "quiet" / CURRENT).read_text()
    loud = AuditLog(tmp_path / "loud", include_text=True)
    loud.record("question", "alice", sources=[{"path": "/a", "text": passage}], answer=answer)
    (entry,) = loud.entries()
    assert entry["sources"][0]["text"] == passage
    assert entry["answer"] == answer


def test_a_torn_last_line_does_not_swallow_the_next_record(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    log.record("sign_in", "alice")
    with (log.folder / CURRENT).open("a", encoding="utf-8") as out:
        out.write('{"ts": "2026-01-01", "event": "quest')  # a crash mid-write
    log.record("search", "alice", query="after the crash")

    assert [e["event"] for e in log.entries()] == ["sign_in", "search"]
    assert [p.split(": ", 1)[1] for p in log.verify().problems] == ["not JSON"]


def test_a_lone_surrogate_in_a_question_is_logged_escaped(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit")
    log.record("question", "alice", question="half \ud800 pair")  # valid in JSON input, not in UTF-8

    (entry,) = log.entries()
    assert entry["question"] == "half \\ud800 pair"
    assert log.verify().ok


def test_rotation_past_keep_files_deletes_nothing_warns_and_archive_moves_the_rotated_files(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = AuditLog(tmp_path / "audit", max_bytes=2_048, keep=2)
    log.record("search", "alice", query="the evidence")
    with caplog.at_level(logging.WARNING, logger="appliance.access.audit"):
        for i in range(19):
            log.record("question", "mallory", question=f"{i} " + "q" * 900)

    assert next(log.entries())["query"] == "the evidence"
    assert len(log.files()) > 2 + 1
    assert log.over_quota
    assert any("keep_files" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert log.verify().ok

    rotated = log.files()[:-1]
    archived = log.archive(tmp_path / "vault" / "2026", actor="admin")
    vault = tmp_path / "vault" / "2026"
    assert [p.name for p in archived] == [p.name for p in rotated]
    assert all(not p.exists() for p in rotated)
    assert vault.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in archived)
    assert AuditLog(vault).verify().ok
    assert json.loads(next(p for p in archived).read_text().splitlines()[0])["query"] == "the evidence"
    remaining = log.verify()
    assert remaining.ok, remaining.problems
    assert not log.over_quota
    assert log.search(event="audit_archive")[0]["files"] == [p.name for p in rotated]
    assert log.archive(vault) == []  # nothing rotated since


def test_verify_reports_the_oldest_files_removed_after_an_archive(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", max_bytes=1_024, keep=1)
    for i in range(12):
        log.record("question", "alice", question=f"{i} " + "q" * 600)
    log.archive(tmp_path / "vault")
    for i in range(12):
        log.record("question", "alice", question=f"later {i} " + "q" * 600)
    assert log.verify().ok

    log.files()[0].unlink()  # what rotation used to do, now only tampering
    assert any("last archive" in p for p in log.verify().problems)


def test_archive_refuses_a_broken_chain_and_moves_nothing(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", max_bytes=1_024, keep=1)
    for i in range(8):
        log.record("question", "alice", question=f"{i} " + "q" * 600)
    victim = log.files()[0]
    victim.write_text(victim.read_text().replace('"alice"', '"bob"', 1))
    before = log.files()

    with pytest.raises(AuditError, match="does not verify"):
        log.archive(tmp_path / "vault")
    assert log.files() == before


def test_the_doctor_warns_with_the_folder_and_the_archive_command_when_over_keep_files(tmp_path: Path) -> None:
    from appliance.ops.doctor import _audit
    from tests.conftest import make_services

    services = make_services(tmp_path / "data", audit={"keep_files": 1})
    try:
        assert _audit(services)[0] == "ok"
        small = AuditLog(services.settings.audit_dir, max_bytes=1_024, keep=1)
        for i in range(8):
            small.record("question", "alice", question=f"{i} " + "q" * 600)
        status, detail, fix = _audit(services)
        assert status == "warn"
        assert str(services.settings.audit_dir) in detail + fix
        assert "appliance audit archive" in fix
    finally:
        services.close()


def test_the_archive_command_moves_the_rotated_files_and_says_how_many(tmp_path: Path) -> None:
    data = tmp_path / "data"
    log = AuditLog(data / "audit", max_bytes=1_024, keep=1)
    for i in range(8):
        log.record("question", "alice", question=f"{i} " + "q" * 600)
    rotated = len(log.files()) - 1

    done = subprocess.run([sys.executable, "-m", "appliance.cli", "audit", "archive", str(tmp_path / "vault"),
                           "--data-dir", str(data)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{rotated} files moved" in done.stdout
    assert len(log.files()) == 1
    assert log.verify().ok
