"""The embedded model answers a prompt the same way whatever it was asked before: the same question asked
again (all but its last token still in llama.cpp's KV cache) once got another answer with Q8_0 weights,
"10,000 blankets" for "20,000 bottles" (issue 23; LlamaCppLLM reads every prompt whole)."""

from __future__ import annotations

import pytest

from appliance.backends.llm import build_embedded_llm
from appliance.rag import Source, answer_prompt
from appliance.settings import EmbeddedLLMSettings, Settings

pytestmark = pytest.mark.slow

MEMO = ("MEMORANDUM To: All Staff From: Logistics Re: Relief shipment. The warehouse delivered 20,000 bottles of "
        "water, 10,000 blankets and 200 laptops to the shelters on Monday, in 3 trucks.")


def _source(text: str) -> Source:
    return Source(number=1, path="/d/a.txt", file_name="a.txt", page=None, page_name=None, section=[], score=1.0,
                  dense_score=0.9, keyword_score=None, text=text)


@pytest.mark.parametrize("weights", ["q8_0", "as_shipped"])
def test_the_same_question_gets_the_same_answer_again_and_after_another(weights: str) -> None:
    settings = EmbeddedLLMSettings(shipped_weights=weights)
    llm = build_embedded_llm(settings, Settings().models_dir)  # the run's cache (tests/conftest.py)

    def ask(question: str) -> str:
        messages = answer_prompt(settings.system_prompt, [_source(MEMO)], question, settings.passage_labels)
        return "".join(r.delta or "" for r in llm.stream_chat(messages, max_tokens=24))

    question = "How many bottles of water were delivered?"
    first = ask(question)
    assert first.strip()
    assert ask(question) == first  # everything but the last token was in the KV cache
    ask("How many trucks were used?")
    assert ask(question) == first  # after another question sharing the start of the prompt
    read = llm.last_prompt
    assert read is not None
    assert read.evaluated >= read.tokens  # read whole (the count may include the first sampled token)
    # Read on llm.prompt_threads, or on llm.busy_prompt_threads while other jobs load the machine.
    assert read.threads in {settings.prompt_threads, settings.busy_prompt_threads}
