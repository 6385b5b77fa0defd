from __future__ import annotations

from pathlib import Path

import pytest

from appliance.settings import EmbeddedStoreSettings, QdrantServerStoreSettings, SettingsError, load_settings


def test_defaults_are_the_embedded_appliance(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("APPLIANCE_CONFIG", raising=False)
    s = load_settings()
    assert s.data_dir == Path("data")
    assert (s.server.host, s.server.port) == ("127.0.0.1", 7860)
    assert isinstance(s.store, EmbeddedStoreSettings)
    assert s.llm.provider == "embedded"
    assert s.ingest.default_groups == ["everyone"]


def test_precedence_defaults_yaml_env_flags(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "appliance.yaml"
    cfg.write_text("server:\n  port: 8000\n  host: 0.0.0.0\nretrieval:\n  top_k: 7\ningest:\n  chunk_tokens: 128\n")
    monkeypatch.setenv("APPLIANCE_SERVER__PORT", "9000")
    monkeypatch.setenv("APPLIANCE_RETRIEVAL__TOP_K", "5")
    s = load_settings(cfg, {"retrieval": {"top_k": 3}})
    assert s.ingest.chunk_tokens == 128  # YAML over default
    assert s.server.host == "0.0.0.0"  # YAML, untouched by env
    assert s.server.port == 9000  # env over YAML
    assert s.retrieval.top_k == 3  # CLI flag over env


def test_config_from_environment_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("data_dir: /srv/appliance\n")
    monkeypatch.setenv("APPLIANCE_CONFIG", str(cfg))
    assert load_settings().data_dir == Path("/srv/appliance")


def test_store_is_a_discriminated_union(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("store:\n  provider: qdrant\n  url: https://qdrant.internal:6333\n  api_key: s3cret\n")
    s = load_settings(cfg)
    assert isinstance(s.store, QdrantServerStoreSettings)
    assert s.store.api_key is not None
    assert s.store.api_key.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(s)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("server:\n  port: seventy\n", "server.port"),
        ("nonsense_key: 1\n", "nonsense_key"),
        ("store:\n  provider: mongo\n", "store"),
        ("server: [unclosed\n", "cannot read settings"),
    ],
)
def test_bad_settings_give_one_clear_error(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(text)
    with pytest.raises(SettingsError, match=expected.replace(".", r"\.")):
        load_settings(cfg)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="config file not found"):
        load_settings(tmp_path / "nope.yaml")


def test_a_misspelt_nested_key_is_an_error(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("retrieval:\n  topk: 8\n")
    with pytest.raises(SettingsError, match=r"retrieval\.topk"):
        load_settings(cfg)


def test_the_answer_reserve_must_leave_room_for_passages(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text("llm:\n  context_window: 1024\n  max_answer_tokens: 900\n")
    with pytest.raises(SettingsError, match="max_answer_tokens"):
        load_settings(cfg)
