"""Users, sessions, ACL rules, the audit chain, conversations, upload sniffing and secret checks."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from appliance.access.acl import AccessRules
from appliance.access.audit import AuditLog
from appliance.access.auth import EVERYONE, AuthError, Users
from appliance.access.limits import RateLimiter, SignInThrottle
from appliance.access.secrets_check import refuse_weak_secrets, weak_secrets
from appliance.settings import AclRule, Settings, SettingsError, load_settings
from appliance.stores.conversations import Conversations, Turn
from ingest.sniff import mismatch
from tests.conftest import SAMPLES

PASSWORD = "Tulip-Harbor-9921"


def test_passwords_are_hashed_checked_and_policed(tmp_path: Path) -> None:
    users = Users(tmp_path / "users.sqlite")
    alice = users.add("Alice", PASSWORD, ["hr", "hr"])
    assert alice.name == "alice"
    assert alice.groups == ["hr"]
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("users.sqlite*"))  # the WAL too
    assert PASSWORD.encode() not in raw
    assert b"$argon2id$" in raw
    assert users.verify_password("alice", PASSWORD) is not None
    assert users.verify_password("ALICE ", PASSWORD) is not None  # names are case-insensitive
    assert users.verify_password("alice", PASSWORD + "x") is None
    assert users.verify_password("nobody", PASSWORD) is None
    for weak, why in (("short", "at least 12"), ("alice-is-great-2027", "too easy"), ("aaaaaaaaaaaaaaa", "too easy"),
                      ("Password", "at least 12"), ("1111122222333", "too easy")):
        with pytest.raises(AuthError, match=why):
            users.set_password("alice", weak)
    with pytest.raises(AuthError, match="exists"):
        users.add("alice", PASSWORD)
    with pytest.raises(AuthError, match="user name"):
        users.add("../root", PASSWORD)
    with pytest.raises(AuthError, match="each user's own"):
        users.add("mallory", PASSWORD, ["user:alice"])
    assert (tmp_path / "users.sqlite").stat().st_mode & 0o077 == 0


def test_principal_reads_its_groups_everyone_and_its_own() -> None:
    from appliance.access.auth import User

    p = User("alice", ["hr"], False, "local", False, 0.0).principal()
    assert p.reads == sorted(["hr", EVERYONE, "user:alice"])
    assert p.can_read(["hr"])
    assert p.can_read([EVERYONE])
    assert not p.can_read(["engineering"])
    assert not p.can_read([])  # a chunk nobody was granted is readable by nobody


def test_sessions_expire_end_on_sign_out_password_change_and_disable(tmp_path: Path) -> None:
    users = Users(tmp_path / "users.sqlite", idle_s=3600, max_age_s=7200)
    users.add("alice", PASSWORD)
    token = users.start_session("alice")
    session = users.session(token)
    assert session is not None
    assert session.user.name == "alice"
    assert session.csrf
    assert users.session("forged") is None
    assert users.end_session(token) == "alice"
    assert users.session(token) is None
    token = users.start_session("alice")
    users.set_password("alice", "Another-Harbor-7712")
    assert users.session(token) is None
    token = users.start_session("alice")
    users.update("alice", disabled=True)
    assert users.session(token) is None
    assert users.verify_password("alice", "Another-Harbor-7712") is None
    users.update("alice", disabled=False)
    token = users.start_session("alice")
    short = Users(tmp_path / "users.sqlite", idle_s=0.5, max_age_s=7200)
    time.sleep(0.6)
    assert short.session(token) is None  # idle too long


def test_most_specific_rule_wins(tmp_path: Path) -> None:
    rules = AccessRules([
        AclRule(path="/srv/share", groups=["staff"]),
        AclRule(path="/srv/share/hr", groups=["hr"]),
        AclRule(path="/srv/share/hr/*.public.pdf", groups=["staff", "hr"]),
        AclRule(path="/srv/share/hr/board/minutes.docx", groups=["board"]),
    ], default_groups=[EVERYONE], upload_dir=tmp_path / "uploads")
    assert rules.groups_for("/srv/share/eng/a.md") == ["staff"]
    assert rules.groups_for("/srv/share/hr/salaries.xlsx") == ["hr"]
    assert rules.groups_for("/srv/share/hr/deep/x.md") == ["hr"]
    assert rules.groups_for("/srv/share/hr/holidays.public.pdf") == ["hr", "staff"]
    assert rules.groups_for("/srv/share/hr/board/minutes.docx") == ["board"]
    assert rules.groups_for("/srv/share-other/x.md") == [EVERYONE]  # a sibling with a common prefix
    assert rules.groups_for("/elsewhere/x.md") == [EVERYONE]
    assert rules.groups_for(str(tmp_path / "uploads" / "alice" / "x.pdf")) == ["user:alice"]
    assert rules.groups_for(str(tmp_path / "uploads" / "x.pdf")) == [EVERYONE]
    with pytest.raises(ValueError, match="nobody could read"):
        AclRule(path="/srv", groups=[])
    with pytest.raises(ValueError, match="absolute"):
        AclRule(path="share", groups=["x"])


def test_posix_permissions_name_the_readers(tmp_path: Path) -> None:
    import grp
    import pwd

    f = tmp_path / "f.txt"
    f.write_text("x")
    rules = AccessRules([AclRule(path=str(tmp_path), posix=True)], [EVERYONE])
    owner = pwd.getpwuid(os.getuid())[0]
    group = grp.getgrgid(os.getgid())[0]
    f.chmod(0o640)
    assert rules.groups_for(str(f)) == sorted([f"user:{owner}", group])
    f.chmod(0o600)
    assert rules.groups_for(str(f)) == [f"user:{owner}"]
    f.chmod(0o644)
    assert EVERYONE in rules.groups_for(str(f))


def test_audit_trail_is_chained_and_tamper_evident(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", max_bytes=600, keep=100)
    for i in range(12):
        log.record("question", f"user{i % 2}", question=f"q{i}",
                   sources=[{"path": "/a.pdf", "page": 1, "text": "SECRET PASSAGE"}], answer="SECRET ANSWER")
    assert len(log.files()) > 2  # rotated by size
    assert log.verify().ok
    assert log.verify().lines == 12
    text = "".join(p.read_text() for p in log.files())
    assert "SECRET" not in text  # document text stays out unless audit.include_text
    assert [e["question"] for e in log.search(actor="user1")][:2] == ["q11", "q9"]
    assert len(log.search("q1", limit=100)) == 3  # q1, q10, q11
    assert (tmp_path / "audit" / "audit.jsonl").stat().st_mode & 0o077 == 0
    # Edit a line: its hash no longer matches.
    victim = log.files()[1]
    lines = victim.read_text().splitlines()
    entry = json.loads(lines[0])
    entry["actor"] = "someone-else"
    victim.write_text("\n".join([json.dumps(entry), *lines[1:]]) + "\n")
    problems = log.verify().problems
    assert any("changed" in p for p in problems)
    # Remove a line: the next one no longer follows.
    victim.write_text("\n".join(lines[1:]) + "\n")
    assert any("does not follow" in p for p in log.verify().problems)


def test_audit_can_keep_text_when_configured(tmp_path: Path) -> None:
    log = AuditLog(tmp_path / "audit", include_text=True)
    log.record("question", "alice", sources=[{"path": "/a", "text": "the passage"}], answer="the answer")
    (entry,) = log.search()
    assert entry["answer"] == "the answer"
    assert entry["sources"][0]["text"] == "the passage"


def test_conversations_belong_to_their_owner(tmp_path: Path) -> None:
    store = Conversations(tmp_path / "c.sqlite")
    cid = store.create("alice", "What does band E4 pay?")
    assert store.add_turn("alice", cid, Turn("q", "a", [{"path": "/x"}]))
    assert not store.add_turn("bob", cid, Turn("q", "a"))
    assert store.get("bob", cid) is None
    assert store.list("bob") == []
    assert not store.rename("bob", cid, "mine")
    assert not store.delete("bob", cid)
    got = store.get("alice", cid)
    assert got is not None
    assert got.turns[0].sources == [{"path": "/x"}]
    assert len(cid) == 32
    assert store.create("alice", "x") != cid


def test_upload_content_must_match_its_extension(tmp_path: Path) -> None:
    for name in ("fake-memo.pdf", "simple.docx", "vodafone.xlsx", "fake.odt", "sample-presentation.pptx",
                 "family-day.eml", "rust-book-installation.md", "fake-doc-emphasized-text.doc", "fake-doc.rtf"):
        assert mismatch(SAMPLES / name) is None, name
    exe = tmp_path / "invoice.pdf"
    exe.write_bytes(b"MZ\x90\x00" + b"\x00" * 200)
    assert mismatch(exe) == "invoice.pdf is not a PDF: it is a Windows executable"
    zipped = tmp_path / "notes.docx"
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:
        z.writestr("payload.bin", b"x")
    assert "zip archive, not a .docx" in (mismatch(zipped) or "")
    text = tmp_path / "readme.txt"
    text.write_bytes(b"\x7fELF\x02\x01")
    assert "not a text file: it is a Linux executable" in (mismatch(text) or "")


def test_weak_secrets_and_open_servers_refuse_to_start(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("Q3v9-xT2w-Lp8m-Zr4k-Hs6d\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"store: {{provider: qdrant, url: 'http://q:6333', api_key: 'file:{secret}'}}\n")
    s = load_settings(cfg)
    assert s.store.api_key is not None
    assert s.store.api_key.get_secret_value() == "Q3v9-xT2w-Lp8m-Zr4k-Hs6d"
    assert "Q3v9" not in repr(s)
    assert weak_secrets(s) == []
    cfg.write_text("store: {provider: qdrant, url: 'http://q:6333', api_key: changeme}\n"
                   "server: {host: 0.0.0.0}\nauth: {required: false}\n")
    s = load_settings(cfg)
    with pytest.raises(SettingsError, match=r"store.api_key: weak.*auth.required is false"):
        refuse_weak_secrets(s)
    s.auth.dev_mode = True
    refuse_weak_secrets(s)  # dev mode: a warning only
    cfg.write_text(f"store: {{provider: qdrant, url: 'http://q', api_key: 'file:{tmp_path / 'none'}'}}\n")
    with pytest.raises(SettingsError, match="cannot read the secret file"):
        load_settings(cfg)
    assert Settings().auth.required is None


def test_rate_limits_and_sign_in_throttle() -> None:
    limiter = RateLimiter(3)
    assert [limiter.hit("alice") for _ in range(3)] == [None, None, None]
    wait = limiter.hit("alice")
    assert wait is not None
    assert 0 < wait <= 60
    assert limiter.hit("bob") is None  # per user
    throttle = SignInThrottle(2)
    throttle.failed("user:alice", "ip:1")
    assert not throttle.blocked("user:alice")
    throttle.failed("user:alice", "ip:2")
    assert throttle.blocked("user:alice")
    assert not throttle.blocked("ip:1")
    throttle.succeeded("user:alice")
    assert not throttle.blocked("user:alice")


def test_upload_names_with_invisible_formatting_are_refused() -> None:
    """The external attack run: U+202E made `report\u202efdp.exe` show as `reportexe.pdf` in the admin's list."""
    import pytest

    from appliance.uploads import UploadRefused, safe_name

    for name in ("report\u202efdp.exe.pdf", "\u200bnote.md", "a\u2066b.txt"):
        with pytest.raises(UploadRefused, match="invisible formatting"):
            safe_name(name)
    assert safe_name("Rapport d’activité 2024.pdf") == "Rapport d’activité 2024.pdf"


def test_macro_enabled_office_files_are_not_taken_as_uploads() -> None:
    """Readers may download an upload's original: an employee must not hand colleagues macros through it.
    The same files are ingested from administrators' folders, and their macro-free variants are uploaded."""
    import pytest

    from appliance.uploads import UploadRefused, check_names
    from ingest.parse import SUPPORTED_SUFFIXES
    from ingest.sniff import MACRO_ENABLED

    assert MACRO_ENABLED <= SUPPORTED_SUFFIXES
    for suffix in sorted(MACRO_ENABLED):
        with pytest.raises(UploadRefused, match="macro-enabled") as caught:
            check_names([f"budget{suffix.upper()}"])
        assert caught.value.status == 415
    assert check_names(["deck.ppsx", "letter.dotx", "plan.xltx"]) == ["deck.ppsx", "letter.dotx", "plan.xltx"]


def test_an_upload_holding_macros_is_refused_whatever_its_name(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """The outside attack run: a .docm's bytes named .docx, .doc or .dotx were taken (201) and readers could
    download them with their macros."""
    import zipfile

    import pytest

    from appliance.settings import Settings
    from appliance.uploads import UploadRefused, check_content
    from tests.conftest import SAMPLES

    settings = Settings()
    macro_docx = tmp_path / "macro.bin"
    with zipfile.ZipFile(SAMPLES / "simple.docx") as src, zipfile.ZipFile(macro_docx, "w") as dst:
        for info in src.infolist():
            data = src.read(info)
            if info.filename == "[Content_Types].xml":
                data = data.replace(b"application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml",
                                    b"application/vnd.ms-word.document.macroEnabled.main+xml")
                assert b"macroEnabled" in data
            dst.writestr(info, data)
        dst.writestr("word/vbaProject.bin", b"\xd0\xcf\x11\xe0 a VBA project")
    for name in ("report.docx", "report.doc", "letter.dotx", "m16.DOCM.docx"):
        with pytest.raises(UploadRefused, match="holds macros") as caught:
            check_content(macro_docx, name, settings)
        assert caught.value.status == 415
    legacy = tmp_path / "legacy.xls"  # an Excel 97-2003 file with its macros' stream
    legacy.write_bytes(bytes.fromhex("d0cf11e0a1b11ae1") + b"\x00" * 504 + "_VBA_PROJECT_CUR".encode("utf-16-le"))
    with pytest.raises(UploadRefused, match="holds macros"):
        check_content(legacy, "budget.xls", settings)
    for plain in ("simple.docx", "vodafone.xlsx", "tests-example.xls", "fake-doc-emphasized-text.doc"):
        check_content(SAMPLES / plain, plain, settings)  # no macros: taken


def test_reasons_shown_to_an_uploader_name_no_server_folder() -> None:
    """Issue 17, finding 10: a parser's message named the server's folders in the upload's error."""
    from appliance.uploads import without_paths

    reason = "BadZipFile: [Errno 2] No such file or directory: '/srv/appliance/data/uploads/bob/.a1.part'"
    assert without_paths(reason) == "BadZipFile: [Errno 2] No such file or directory: '.a1.part'"
    assert without_paths("ratio 1/2 and/or 3/4") == "ratio 1/2 and/or 3/4"
    assert without_paths(None) is None
