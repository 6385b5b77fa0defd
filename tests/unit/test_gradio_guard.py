"""The chat page's Gradio guard: which files an event may name, who owns a page session, and that
Gradio's own path check is in force once mounted (issue 17, finding 1)."""

from __future__ import annotations

from pathlib import Path

import pytest

from appliance.api.gradio_guard import SessionOwners, blocked_paths, file_references, inside, session_keys


def test_every_shape_of_file_reference_is_found() -> None:
    fd = {"path": "/etc/hostname", "meta": {"_type": "gradio.FileData"}}
    payload = {"data": [fd, [fd], [{"role": "assistant", "content": [{"type": "file", "file": {"path": "/a"}}]}],
                        "text", {"nested": {"deeper": [{"path": "/b"}]}}]}
    assert sorted(file_references(payload)) == ["/a", "/b", "/etc/hostname", "/etc/hostname"]
    assert file_references({"data": ["just text", 3, None]}) == []


def test_only_files_inside_the_upload_cache_are_accepted(tmp_path: Path) -> None:
    cache = tmp_path / "tmp" / "gradio"
    (cache / "abc").mkdir(parents=True)
    uploaded = cache / "abc" / "report.pdf"
    uploaded.write_bytes(b"%PDF")
    secret = tmp_path / "server.json"
    secret.write_text("{}")
    (cache / "abc" / "link").symlink_to(secret)
    assert inside(str(uploaded), cache)
    for path in (str(secret), f"{cache}/abc/../../../server.json", str(cache / "abc" / "link"), str(cache),
                 "http://169.254.169.254/latest", "", f"{uploaded}\x00.txt"):
        assert not inside(path, cache), path


def test_session_hashes_and_event_ids_are_found_where_gradio_reads_them() -> None:
    assert session_keys("GET", "/gradio_api/queue/data", b"session_hash=abc", None) == ["abc"]
    assert session_keys("GET", "/gradio_api/heartbeat/abc", b"", None) == ["abc"]
    assert session_keys("GET", "/gradio_api/call/respond/ev1", b"", None) == ["ev1"]
    assert session_keys("POST", "/gradio_api/call/respond", b"", {"data": []}) == []
    assert session_keys("POST", "/gradio_api/call/v2/respond", b"", {"data": []}) == []
    assert session_keys("POST", "/gradio_api/cancel", b"", {"session_hash": "abc", "event_id": "ev1"}) == ["abc", "ev1"]


def test_the_first_user_to_name_a_session_owns_it() -> None:
    owners = SessionOwners(most=2)
    assert owners.claim("s1", "alice")
    assert owners.claim("s1", "alice")
    assert not owners.claim("s1", "bob")
    owners.claim("s2", "bob")
    owners.claim("s3", "bob")  # s1 was used least recently: forgotten
    assert owners.claim("s1", "bob")


def test_gradio_blocks_the_data_directory_but_its_own_cache(tmp_path: Path) -> None:
    from appliance.settings import load_settings

    settings = load_settings(overrides={"data_dir": tmp_path / "data"})
    cache = settings.data_dir.absolute() / "tmp" / "gradio"
    cache.mkdir(parents=True)
    (settings.data_dir / "tmp" / "other").mkdir()
    blocked = blocked_paths(settings, cache)
    data = settings.data_dir.absolute()
    for name in ("server.json", "users.sqlite", "store", "uploads", "audit", "tmp/other"):
        assert str(data / name) in blocked, name
    assert not any(cache.is_relative_to(b) for b in blocked)


def test_gradio_checks_paths_itself_once_mounted(tmp_path: Path) -> None:
    """Gradio skips its own check until launch() ran; mounted, it must refuse a path outside its cache."""
    from gradio import processing_utils
    from gradio.context import LocalContext
    from gradio.exceptions import InvalidPathError

    from appliance.api.app import create_app
    from appliance.services import build_services
    from appliance.settings import load_settings

    services = build_services(load_settings(overrides={"data_dir": tmp_path / "data"}))
    try:
        blocks = create_app(services).state.gradio_blocks
        assert blocks.has_launched
        token = LocalContext.blocks.set(blocks)
        try:
            for path in ("/etc/hostname", str(services.settings.data_dir.absolute() / "server.json")):
                with pytest.raises(InvalidPathError):
                    processing_utils._check_allowed(path, True)
        finally:
            LocalContext.blocks.reset(token)
    finally:
        services.close()
