"""The simulator as an agent's model: tool calls, JSON output and the non-streamed
fault modes, through real ``litellm.acompletion`` on every protocol.

Streaming is in ``test_sim_stream.py``. What litellm does with each answer is
pinned here because ``amm``'s client code is written against it.
"""

from __future__ import annotations

import json
from types import ModuleType
from typing import Any

import httpx
import jsonschema
import pytest

from amm.errors import ConfigurationError
from amm.sim import ModelProfile, Simulator, count_tokens
from amm.sim.schema import instance_of

# litellm's Gemini types trip a pydantic notice on first use; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")
aio = pytest.mark.asyncio(loop_scope="module")  # one loop: litellm's clients are cached per loop

PREFIX = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama_chat",
          "google": "gemini"}
PROTOCOLS = tuple(PREFIX)
# litellm sends a Gemini JSON schema only for model names it knows support one.
MODEL = {"openai": "x", "anthropic": "x", "ollama": "x", "google": "gemini-2.0-flash"}
PROMPT = "What is the weather in Paris today?"

WEATHER = {"type": "object", "required": ["city", "unit", "days"],
           "properties": {"city": {"type": "string"},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                          "days": {"type": "integer", "minimum": 1, "maximum": 7},
                          "where": {"type": "object", "required": ["lat"],
                                    "properties": {"lat": {"type": "number"}}}}}
TIME = {"type": "object", "required": ["tz"], "properties": {"tz": {"type": "string"}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather.",
                                           "parameters": WEATHER}},
         {"type": "function", "function": {"name": "get_time", "parameters": TIME}}]
PERSON = {"type": "object", "additionalProperties": False, "required": ["name", "age", "tags"],
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"},
                         "tags": {"type": "array", "items": {"type": "string"}}}}
JSON_SCHEMA = {"type": "json_schema",
               "json_schema": {"name": "person", "schema": PERSON, "strict": True}}


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    import litellm

    return litellm


@pytest.fixture(scope="module")
def sim() -> Any:
    with Simulator(default_profile=ModelProfile(latency_ms=0, quality=1.0), seed=3) as sim:
        yield sim


async def call(litellm: ModuleType, sim: Simulator, protocol: str,
               messages: list[Any] | None = None, model: str | None = None, **kw: Any) -> Any:
    return await litellm.acompletion(
        model=f"{PREFIX[protocol]}/{model or MODEL[protocol]}", api_base=sim.api_base(protocol),
        api_key="sk-test", max_tokens=200, max_retries=0, timeout=5.0,
        messages=messages or [{"role": "user", "content": PROMPT}], **kw)


def profile_for(sim: Simulator, protocol: str, **fields: Any) -> None:
    sim.set_profile(MODEL[protocol], ModelProfile(latency_ms=0, quality=1.0, **fields))
    sim.reset()


# -- tool calls ------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_declared_tools_get_a_tool_call_that_litellm_parses(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    response = await call(litellm, sim, protocol, tools=TOOLS)
    choice = response.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert not choice.message.content
    (tool_call,) = choice.message.tool_calls
    assert tool_call.function.name == "get_weather"
    arguments = json.loads(tool_call.function.arguments)
    jsonschema.validate(arguments, WEATHER)
    assert arguments["unit"] == "celsius" and arguments["city"] in ("weather", "paris")
    if protocol == "openai":
        assert tool_call.id.startswith("call_")
    if protocol == "anthropic":
        assert tool_call.id.startswith("toolu_01")
    billed_output = count_tokens("get_weather") + count_tokens(json.dumps(arguments))
    assert response.usage.completion_tokens == billed_output
    assert sim.billed() == {MODEL[protocol]: (response.usage.prompt_tokens, billed_output)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_second_turn_with_the_tool_result_gets_text_that_mentions_it(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    first = await call(litellm, sim, protocol, tools=TOOLS)
    tool_call = first.choices[0].message.tool_calls[0]
    messages = [{"role": "user", "content": PROMPT},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": tool_call.id, "type": "function",
                     "function": {"name": tool_call.function.name,
                                  "arguments": tool_call.function.arguments}}]},
                {"role": "tool", "tool_call_id": tool_call.id, "content": "sunny, 21 degrees"}]
    second = await call(litellm, sim, protocol, messages, tools=TOOLS)
    assert second.choices[0].finish_reason == "stop"
    assert not second.choices[0].message.tool_calls
    assert "sunny, 21 degrees" in second.choices[0].message.content


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_parallel_tool_calls_call_every_tool_once_in_declaration_order(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, parallel_tool_calls=True)
    response = await call(litellm, sim, protocol, tools=TOOLS)
    calls = response.choices[0].message.tool_calls
    assert [c.function.name for c in calls] == ["get_weather", "get_time"]
    assert len({c.id for c in calls}) == 2
    jsonschema.validate(json.loads(calls[1].function.arguments), TIME)


@pytest.mark.parametrize("protocol", ["openai", "anthropic", "google"])
@aio
async def test_tool_choice_forces_the_named_tool_and_none_turns_tools_off(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    # Ollama's API has no tool choice; litellm drops it.
    profile_for(sim, protocol)
    forced = await call(litellm, sim, protocol, tools=TOOLS,
                        tool_choice={"type": "function", "function": {"name": "get_time"}})
    assert [c.function.name for c in forced.choices[0].message.tool_calls] == ["get_time"]
    off = await call(litellm, sim, protocol, tools=TOOLS, tool_choice="none")
    assert off.choices[0].finish_reason == "stop" and off.choices[0].message.content


@aio
async def test_tool_rounds_keeps_calling_until_that_many_tool_result_turns(
        litellm: ModuleType, sim: Simulator) -> None:
    profile_for(sim, "openai", tool_rounds=2, parallel_tool_calls=True)
    messages: list[Any] = [{"role": "user", "content": PROMPT}]
    finishes = []
    for _ in range(3):
        response = await call(litellm, sim, "openai", messages, tools=TOOLS)
        message = response.choices[0].message
        finishes.append(response.choices[0].finish_reason)
        if not message.tool_calls:
            break
        messages.append(message.model_dump(exclude_none=True))
        # Two results of one parallel turn count as one tool-result turn.
        messages.extend({"role": "tool", "tool_call_id": c.id, "content": f"result of {c.id}"}
                        for c in message.tool_calls)
    assert finishes == ["tool_calls", "tool_calls", "stop"]


# -- JSON output -------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_json_schema_request_gets_a_document_valid_against_it(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    response = await call(litellm, sim, protocol, response_format=JSON_SCHEMA)
    content = response.choices[0].message.content
    jsonschema.validate(json.loads(content), PERSON)
    assert response.choices[0].finish_reason == "stop"
    assert not response.choices[0].message.tool_calls  # Anthropic's json_tool_call is unwrapped
    assert sim.billed()[MODEL[protocol]][1] == response.usage.completion_tokens


@pytest.mark.parametrize("protocol", ["openai", "ollama", "google"])
@aio
async def test_a_json_object_request_gets_a_generic_object(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    # litellm sends nothing for Anthropic json_object: that model answers prose.
    profile_for(sim, protocol)
    response = await call(litellm, sim, protocol, model="x",
                          response_format={"type": "json_object"})
    document = json.loads(response.choices[0].message.content)
    assert isinstance(document, dict) and document["topics"][:2] == ["weather", "paris"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_model_without_json_support_answers_prose(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, json_support=False)
    response = await call(litellm, sim, protocol, response_format=JSON_SCHEMA)
    content = response.choices[0].message.content
    with pytest.raises(json.JSONDecodeError):
        json.loads(content)
    assert "weather" in content


def test_schema_instances_cover_refs_unions_formats_and_bounds() -> None:
    schema = {
        "$defs": {"Item": {"type": "object", "required": ["id", "when"],
                           "properties": {"id": {"type": "integer", "exclusiveMinimum": 5},
                                          "when": {"type": "string", "format": "date-time"}}}},
        "type": "object", "required": ["items", "note", "kind", "flag", "code"],
        "properties": {"items": {"type": "array", "items": {"$ref": "#/$defs/Item"},
                                 "minItems": 2},
                       "note": {"anyOf": [{"type": "null"}, {"type": "string", "maxLength": 3}]},
                       "kind": {"const": "k"}, "flag": {"type": "boolean"},
                       "code": {"type": ["string", "null"], "minLength": 12}},
    }
    value = instance_of(schema, ["alpha"])
    jsonschema.validate(value, schema)
    assert value["items"][0] == {"id": 6, "when": "2026-01-01T00:00:00Z"}
    assert value["note"] == "alp" and len(value["code"]) == 12
    assert instance_of({"type": "OBJECT", "properties": {"n": {"type": "NUMBER"}}}) == {"n": 1.0}


# -- non-streamed fault modes ------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_empty_answers_bill_the_input_only_and_litellm_passes_them_on(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, empty_choices_rate=1.0)
    response = await call(litellm, sim, protocol)
    if protocol in ("openai", "google"):
        assert response.choices == []
    else:  # Anthropic (no content block) and Ollama (empty message) get one empty choice
        assert not response.choices[0].message.content
    assert response.usage.completion_tokens == 0
    assert sim.billed() == {MODEL[protocol]: (count_tokens(PROMPT), 0)}


# protocol -> what litellm does with a 200 without usage, as observed: an exception
# class name, or the usage it reports (Ollama's is litellm's own token estimate).
MISSING_USAGE: dict[str, str | tuple[int, int]] = {
    "openai": (0, 0), "anthropic": "APIConnectionError", "ollama": (15, 32),
    "google": "BadRequestError"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_answers_without_usage_are_still_billed(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, missing_usage_rate=1.0)
    expected = MISSING_USAGE[protocol]
    if isinstance(expected, str):
        with pytest.raises(Exception) as info:
            await call(litellm, sim, protocol)
        assert type(info.value).__name__ == expected
    else:
        response = await call(litellm, sim, protocol)
        assert (response.usage.prompt_tokens, response.usage.completion_tokens) == expected
    billed_in, billed_out = sim.billed()[MODEL[protocol]]
    assert billed_in == count_tokens(PROMPT) and billed_out > 0


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_truncated_body_makes_litellm_raise(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, truncated_body_rate=1.0)
    # The JSON decoder's complaint depends on where the cut falls.
    with pytest.raises(Exception, match=r"Unterminated|Expecting") as info:
        await call(litellm, sim, protocol)
    assert type(info.value).__module__.startswith("litellm")


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_careless_providers_echo_the_key_and_prompt_in_error_messages(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, api_key="the-right-key", echo_key=True, echo_prompt=True)
    with pytest.raises(litellm.AuthenticationError) as info:
        await call(litellm, sim, protocol)
    assert "sk-test" in str(info.value) and PROMPT in str(info.value)


def test_raw_fault_bodies_are_empty_usage_free_or_cut(make_simulator: Any) -> None:
    sim = make_simulator({"empty": ModelProfile(latency_ms=0, empty_choices_rate=1.0),
                          "bare": ModelProfile(latency_ms=0, missing_usage_rate=1.0),
                          "cut": ModelProfile(latency_ms=0, truncated_body_rate=1.0)})
    url = sim.api_base("openai") + "/chat/completions"

    def post(model: str) -> httpx.Response:
        return httpx.post(url, json={"model": model, "messages": [{"role": "user",
                                                                     "content": PROMPT}]})

    assert post("empty").json()["choices"] == []
    assert "usage" not in post("bare").json()
    cut = post("cut")
    assert cut.status_code == 200 and cut.text.startswith('{"id": "chatcmpl-')
    with pytest.raises(json.JSONDecodeError):
        json.loads(cut.text)


@pytest.mark.parametrize(("field", "value"), [
    ("tool_rounds", -1), ("tool_rounds", 1.5), ("parallel_tool_calls", "yes"),
    ("json_support", 1), ("first_chunk_delay_ms", -5), ("stream_cut_after", -1),
    ("stream_stall_s", -0.1), ("empty_choices_rate", 2.0), ("missing_usage_rate", -0.5),
    ("truncated_body_rate", 1.1), ("echo_key", None), ("echo_prompt", "no"),
])
def test_new_profile_fields_are_validated_naming_the_field(field: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=field) as info:
        ModelProfile(**{field: value})
    assert info.value.field == field
