"""The MCP tools' arguments are bounded as /v1 bounds them, and a refusal reads as /v1's message."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from appliance.access.limits import RateLimited
from appliance.api.errors import ApiError
from appliance.api.mcp_server import TOOLS, AskArgs, ReadArgs, SearchArgs, _refusal
from appliance.api.schemas import SearchRequest


def test_every_tool_refuses_unknown_arguments_and_publishes_its_bounds() -> None:
    for model, _ in TOOLS.values():
        schema = model.model_json_schema()
        assert schema["additionalProperties"] is False
        with pytest.raises(ValidationError):
            model.model_validate({"nonsense": 1})
    top_k = SearchArgs.model_json_schema()["properties"]["top_k"]
    assert (top_k["minimum"], top_k["maximum"]) == (1, SearchRequest.model_fields["top_k"].metadata[1].le)


def test_oversized_or_hostile_input_is_refused_before_anything_runs() -> None:
    with pytest.raises(ValidationError):
        SearchArgs(query="x", top_k=101)
    with pytest.raises(ValidationError):
        AskArgs(question="x" * 100_001)
    with pytest.raises(ValidationError, match="not an absolute path"):
        SearchArgs.model_validate({"query": "x", "scope": {"folders": ["relative/path"]}})
    with pytest.raises(ValidationError):
        ReadArgs(id="a" * 65)
    with pytest.raises(ValidationError):
        ReadArgs(id="abc", pages=[0])


def test_refusals_read_as_the_api_says_them_and_other_errors_are_not_shown() -> None:
    assert _refusal(ApiError(404, "no document with id 'x'")) == "no document with id 'x'"
    assert _refusal(RateLimited("too many questions: at most 8 a minute", 3)) == \
        "too many questions: at most 8 a minute"
    with pytest.raises(ValidationError) as caught:
        SearchArgs(query="x", top_k=0)
    assert (_refusal(caught.value) or "").startswith("invalid arguments: top_k:")
    assert _refusal(RuntimeError("/srv/secret/path exploded")) is None  # the SDK answers an internal error
