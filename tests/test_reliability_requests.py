"""Bad requests get an InvalidRequestError naming what is wrong, before any network
call, and change nothing: not the model's health, not the ledger."""

from __future__ import annotations

from typing import Any

import pytest

from amm.decorator import managed_model
from amm.errors import InvalidRequestError
from amm.models import ModelRequest
from amm.sim import ModelProfile
from tests.fixtures_manager import model_entry

BAD_REQUESTS: list[tuple[dict[str, Any], str]] = [
    ({"prompt": b"bytes"}, "prompt"),
    ({"prompt": 42}, "prompt"),
    ({"prompt": {"text": "hi"}}, "prompt"),
    ({"prompt": "   \n\t"}, "whitespace"),
    ({"prompt": "lone \ud800 surrogate"}, "Unicode"),
    ({"prompt": "hi", "parameters": ["temperature", 1]}, "parameters"),
    ({"messages": [{"role": None, "content": "hi"}]}, "role"),
    ({"messages": [{"role": "wizard", "content": "hi"}]}, "role"),
    ({"messages": [{"role": "user", "content": None}]}, "content"),
    ({"messages": [{"role": "user", "content": 7}]}, "content"),
    ({"messages": [{"role": "tool", "content": "42"}]}, "tool_call_id"),
    ({"messages": "hello"}, "messages"),
    ({"prompt": "hi", "parameters": {"stop": 123}}, "stop"),
    ({"prompt": "hi", "max_tokens": 10**12}, "max_tokens"),
    ({"prompt": "hi", "tools": [{"type": "function"}]}, "tools"),
    ({"prompt": "hi", "tool_choice": "required"}, "tool_choice"),
    ({"prompt": "hi", "response_format": {"type": "yaml"}}, "response_format"),
    ({"prompt": "hi", "timeout_s": -1}, "timeout"),
]


@pytest.mark.parametrize(("fields", "named"), BAD_REQUESTS,
                         ids=[f"{i}-{n}" for i, (_, n) in enumerate(BAD_REQUESTS)])
def test_a_bad_request_is_refused_at_construction_naming_the_field(fields, named):
    with pytest.raises(InvalidRequestError, match=named):
        ModelRequest(task_id="t", agent_type="a", **fields)


def test_the_full_openai_chat_shape_is_accepted():
    ModelRequest(messages=[
        {"role": "system", "content": "be brief"},
        {"role": "user", "content": [{"type": "text", "text": "weather?"},
                                     {"type": "image_url", "image_url": {"url": "https://x/y.png"}}]},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "c1", "type": "function", "function": {"name": "w", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "c1", "content": "sunny"},
    ])


async def test_bad_input_through_managed_model_is_typed_and_never_reaches_a_model(build_manager):
    manager, sim, _ = build_manager({"m": ModelProfile(latency_ms=1)}, [model_entry("m")])

    @managed_model(agent_type="general", manager=manager)
    async def agent(prompt: Any, *, llm: Any) -> Any:
        return await llm.complete(prompt)

    async with manager:
        for prompt in (42, {"a": 1}, b"x", [{"role": "user"}], "  "):
            with pytest.raises(InvalidRequestError):
                await agent(prompt)
        assert manager.health_checker.is_model_available("m")
        reply = await agent("a valid request still works")
    assert reply.model_id == "m" and sim.request_count() == 1


async def test_a_prompt_no_context_window_holds_is_an_invalid_request(build_manager):
    manager, sim, _ = build_manager({"m": ModelProfile(latency_ms=1)},
                                    [model_entry("m", context=8000)])
    async with manager:
        with pytest.raises(InvalidRequestError, match="context window") as info:
            await manager.complete(ModelRequest(prompt="x" * 10_000_000, task_id="big",
                                                agent_type="general"))
    assert not info.value.is_retryable and sim.request_count() == 0
