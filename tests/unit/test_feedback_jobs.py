"""The feedback log (the last rating of each answer wins, exported as JSON lines) and the job board."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import pytest

from appliance.stores.conversations import Conversations, Turn
from appliance.stores.feedback import FeedbackLog
from appliance.stores.jobs import JobBoard


def test_the_last_rating_of_an_answer_is_the_one_exported(tmp_path: Path) -> None:
    log = FeedbackLog(tmp_path / "feedback.jsonl")
    sources = [{"n": 1, "path": "/s/memo.pdf", "page": 1, "doc_id": "d"}]
    log.record("alice", "up", "How many bottles?", "20,000 [1]", sources, conversation="c1", turn=0)
    log.record("alice", "down", "How many bottles?", "20,000 [1]", sources, comment="  wrong\n page ",
               conversation="c1", turn=0)
    log.record("bob", "up", "Where is the VPN desk?", "Floor 3 [1]", sources, conversation="c2", turn=0)
    assert (tmp_path / "feedback.jsonl").stat().st_mode & 0o777 == 0o600
    assert len(log.entries(latest_only=False)) == 3
    latest = log.entries()
    assert [(e["user"], e["rating"]) for e in latest] == [("alice", "down"), ("bob", "up")]
    assert latest[0]["comment"] == "wrong page"
    assert latest[0]["sources"] == sources
    out = io.StringIO()
    assert log.export(out, "down") == 1
    (row,) = [json.loads(line) for line in out.getvalue().splitlines()]
    assert (row["question"], row["answer"], row["turn"]) == ("How many bottles?", "20,000 [1]", 0)
    log.record("bob", "withdrawn", "Where is the VPN desk?", "Floor 3 [1]", sources, conversation="c2", turn=0)
    assert [e["user"] for e in log.entries()] == ["alice"]  # bob took his thumb back
    with log.path.open("a") as f:
        f.write('{"cut short')  # a crash mid-line: skipped, not fatal
    assert [e["user"] for e in log.entries()] == ["alice"]
    with pytest.raises(ValueError, match="rating"):
        log.record("alice", "meh", "q", "a", [])  # type: ignore[arg-type]


def test_no_feedback_yet_exports_nothing(tmp_path: Path) -> None:
    out = io.StringIO()
    assert FeedbackLog(tmp_path / "none.jsonl").export(out) == 0
    assert out.getvalue() == ""


def test_a_job_shows_progress_and_an_eta_while_it_runs() -> None:
    board = JobBoard()
    seen = []
    with board.job("upload", "alice", "a.pdf, b.pdf", forward=lambda total: _Recorder(seen, total)) as bar:
        progress = bar(1000)
        progress.set_postfix_str("2.0 files/s, 1.0 pages/s, a.pdf")
        time.sleep(0.6)
        progress.update(250)
        (row,) = board.running()
        assert (row["kind"], row["by"], row["what"], row["files"], row["current"]) == \
            ("upload", "alice", "a.pdf, b.pdf", 1, "a.pdf")
        assert row["percent"] == 25.0
        assert row["eta_s"] is not None
        assert row["eta_s"] == pytest.approx(3 * row["running_s"], rel=0.3)  # 3/4 left at the same pace
    assert board.running() == []  # gone once the run ends
    assert seen == [("total", 1000), ("postfix", "2.0 files/s, 1.0 pages/s, a.pdf"), ("update", 250)]


class _Recorder:
    def __init__(self, seen: list[tuple[str, object]], total: int) -> None:
        self.seen = seen
        seen.append(("total", total))

    def update(self, n: int) -> None:
        self.seen.append(("update", n))

    def set_postfix_str(self, text: str, refresh: bool = True) -> None:
        self.seen.append(("postfix", text))

    def close(self) -> None:
        pass


def test_regenerating_forgets_only_that_turn_of_the_owner(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "conversations.sqlite")
    cid = store.create("alice", "Leave")
    store.add_turn("alice", cid, Turn("q1", "a1"))
    store.add_turn("alice", cid, Turn("q2", "a2"))
    assert store.drop_turn("bob", cid, 1) is False  # not his
    assert store.drop_turn("alice", cid, 7) is False  # no such turn
    assert store.drop_turn("alice", cid, 1) is True
    conv = store.get("alice", cid)
    assert conv is not None
    assert [t.question for t in conv.turns] == ["q1"]
    store.add_turn("alice", cid, Turn("q2", "a2 again"))
    conv = store.get("alice", cid)
    assert conv is not None
    assert [t.answer for t in conv.turns] == ["a1", "a2 again"]
    store.close()
