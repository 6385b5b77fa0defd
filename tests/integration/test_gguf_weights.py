"""The shipped Q4_1 chat model is re-stored once as Q8_0 (llm.shipped_weights), with llama.cpp's own quantizer,
and loads and answers as the embedded model; where it cannot be written the shipped file is used."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import pytest

from appliance.backends.gguf_weights import q8_path, q8_weights
from appliance.backends.llm import SMOLLM2_FILE, build_embedded_llm, default_gguf_path, embedded_model_file
from appliance.settings import EmbeddedLLMSettings

pytestmark = pytest.mark.slow

LLAMA_FTYPE_MOSTLY_Q8_0 = 7
LLAMA_FTYPE_MOSTLY_Q4_1 = 3


def _file_type(path: Path) -> int:
    from llama_cpp import Llama

    vocab = Llama(model_path=str(path), vocab_only=True, verbose=False)
    try:
        return int(vocab.metadata["general.file_type"])
    finally:
        vocab.close()


def test_the_shipped_model_is_converted_once_to_q8_0_and_answers(tmp_path: Path) -> None:
    shipped = default_gguf_path()
    made = embedded_model_file(EmbeddedLLMSettings(), tmp_path)
    assert made == q8_path(shipped, tmp_path)
    assert made.parent == tmp_path
    assert _file_type(shipped) == LLAMA_FTYPE_MOSTLY_Q4_1
    assert _file_type(made) == LLAMA_FTYPE_MOSTLY_Q8_0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".converting-")]  # no temporary left

    stamp = made.stat().st_mtime_ns
    assert q8_weights(shipped, tmp_path) == made
    assert made.stat().st_mtime_ns == stamp

    llm = build_embedded_llm(EmbeddedLLMSettings(), tmp_path)
    assert llm.model_name == f"{SMOLLM2_FILE} read as Q8_0"
    assert llm.model_path == made
    reply = llm.complete("The capital of France is", max_tokens=4).text
    assert reply.strip(), "the converted model produced no text"


def test_as_shipped_and_a_given_model_path_are_loaded_as_they_are(tmp_path: Path) -> None:
    assert embedded_model_file(EmbeddedLLMSettings(shipped_weights="as_shipped"), tmp_path) == default_gguf_path()
    given = tmp_path / "mine.gguf"
    assert embedded_model_file(EmbeddedLLMSettings(model_path=given), tmp_path) == given
    assert not any(tmp_path.glob("*Q8_0*"))


def test_a_folder_it_cannot_write_falls_back_to_the_shipped_file(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    blocked = tmp_path / "a-file"
    blocked.write_text("not a folder")  # no one, root included, can make a folder under a file
    with caplog.at_level(logging.WARNING):
        assert q8_weights(default_gguf_path(), blocked / "models") == default_gguf_path()
    assert "kept as shipped" in caplog.text


def test_a_file_llama_cpp_refuses_falls_back_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    broken = tmp_path / "broken.gguf"
    broken.write_bytes(b"GGUF" + b"\0" * 64)
    with caplog.at_level(logging.WARNING):
        assert q8_weights(broken, tmp_path / "models") == broken
    assert "converting to Q8_0 failed" in caplog.text
    assert not list((tmp_path / "models").iterdir())  # nothing half-written left behind


def test_a_new_version_of_the_shipped_file_replaces_the_old_copy(tmp_path: Path) -> None:
    source = tmp_path / "model.gguf"
    source.write_bytes(default_gguf_path().read_bytes())
    first = q8_weights(source, tmp_path / "models")
    os.utime(source, ns=(source.stat().st_atime_ns, source.stat().st_mtime_ns + 10**9))  # "upgraded"
    second = q8_weights(source, tmp_path / "models")
    assert second != first
    assert [p.name for p in (tmp_path / "models").iterdir()] == [second.name]
