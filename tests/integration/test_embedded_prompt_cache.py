"""The embedded model reads the fixed start of an answer prompt once: the next question's prompt finds it in
llama.cpp's KV cache (issue 23; timings in benchmarks/first_token.py, not here)."""

from __future__ import annotations

import pytest

from appliance.backends.llm import build_embedded_llm
from appliance.rag import Source, answer_prompt
from appliance.settings import EmbeddedLLMSettings, Settings

pytestmark = pytest.mark.slow


def _source(text: str) -> Source:
    return Source(number=1, path="/d/a.txt", file_name="a.txt", page=None, page_name=None, section=[], score=1.0,
                  dense_score=0.9, keyword_score=None, text=text)


def test_the_second_question_reuses_the_fixed_prompt_start_from_the_cache() -> None:
    settings = EmbeddedLLMSettings()
    llm = build_embedded_llm(settings, Settings().models_dir)  # the run's cache (tests/conftest.py)
    fixed = llm.count_tokens(f"<|im_start|>system\n{settings.system_prompt}<|im_end|>\n<|im_start|>user\nContext:\n")
    prompts = [answer_prompt(settings.system_prompt, [_source("20,000 bottles of water were delivered.")],
                             "How many bottles of water were delivered?", settings.passage_labels),
               answer_prompt(settings.system_prompt, [_source("rustup is the tool that manages Rust versions.")],
                             "Which tool manages Rust versions?", settings.passage_labels)]
    reads = []
    for messages in prompts:
        assert "".join(r.delta or "" for r in llm.stream_chat(messages, max_tokens=4))
        assert llm.last_prompt is not None
        reads.append(llm.last_prompt)
    assert reads[1].reused >= fixed  # the template, the system prompt and "Context:" were not read again
    assert reads[1].evaluated == reads[1].tokens - reads[1].reused < reads[0].tokens
    # Read on llm.prompt_threads, or on llm.busy_prompt_threads while other jobs load the machine.
    assert {r.threads for r in reads} <= {settings.prompt_threads, settings.busy_prompt_threads}
