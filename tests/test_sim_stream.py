"""Streamed answers from the simulator through real ``litellm.acompletion(stream=True)``:
text, tool calls and JSON on every protocol, final usage equal to the bill, the gate
that orders a test around the first chunk, slow and stalled streams, and cut streams,
with what litellm surfaces of a cut stream's usage pinned per protocol.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from types import ModuleType
from typing import Any

import httpx
import jsonschema
import pytest

from amm.sim import ModelProfile, Simulator, count_tokens

# litellm's Gemini types trip a pydantic notice on first use; not ours to fix.
pytestmark = pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning")
aio = pytest.mark.asyncio(loop_scope="module")  # one loop: litellm's clients are cached per loop

PREFIX = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama_chat",
          "google": "gemini"}
PROTOCOLS = tuple(PREFIX)
MODEL = {"openai": "x", "anthropic": "x", "ollama": "x", "google": "gemini-2.0-flash"}
PROMPT = "Explain how streaming answers reach the client."
WEATHER = {"type": "object", "required": ["city", "unit"],
           "properties": {"city": {"type": "string"},
                          "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]}}}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
PERSON = {"type": "object", "required": ["name", "age"], "additionalProperties": False,
          "properties": {"name": {"type": "string"}, "age": {"type": "integer"}}}


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    import litellm

    return litellm


@pytest.fixture(scope="module")
def sim() -> Any:
    with Simulator(default_profile=ModelProfile(latency_ms=0, quality=1.0), seed=9) as sim:
        yield sim


def profile_for(sim: Simulator, protocol: str, **fields: Any) -> None:
    sim.set_profile(MODEL[protocol], ModelProfile(latency_ms=0, quality=1.0, **fields))
    sim.reset()


async def stream(litellm: ModuleType, sim: Simulator, protocol: str, **kw: Any) -> Any:
    return await litellm.acompletion(
        model=f"{PREFIX[protocol]}/{MODEL[protocol]}", api_base=sim.api_base(protocol),
        api_key="sk-test", max_tokens=200, max_retries=0, timeout=5.0, stream=True,
        stream_options={"include_usage": True},
        messages=[{"role": "user", "content": PROMPT}], **kw)


def text_of(chunks: list[Any]) -> str:
    return "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def content_chunks(chunks: list[Any]) -> list[str]:
    return [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]


def finish_reason(chunks: list[Any]) -> str | None:
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    return next((r for r in reversed(reasons) if r), None)


# -- whole streams -------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_text_stream_arrives_in_pieces_with_final_usage_equal_to_the_bill(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    chunks = [chunk async for chunk in await stream(litellm, sim, protocol)]
    assert len(content_chunks(chunks)) >= 5
    text = text_of(chunks)
    assert "streaming" in text and finish_reason(chunks) == "stop"
    usage = chunks[-1].usage
    assert usage.completion_tokens == count_tokens(text)
    assert sim.billed() == {MODEL[protocol]: (usage.prompt_tokens, usage.completion_tokens)}
    assert usage.prompt_tokens == count_tokens(PROMPT)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_streamed_tool_call_is_assembled_by_litellm(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    chunks = [chunk async for chunk in await stream(litellm, sim, protocol, tools=TOOLS)]
    deltas = [d for c in chunks if c.choices for d in c.choices[0].delta.tool_calls or []]
    names = [d.function.name for d in deltas if d.function.name]
    arguments = "".join(d.function.arguments or "" for d in deltas)
    assert names == ["get_weather"]
    assert json.loads(arguments) == {"city": "streaming", "unit": "celsius"}
    assert finish_reason(chunks) == "tool_calls"
    assert sim.billed()[MODEL[protocol]][1] == chunks[-1].usage.completion_tokens


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_streamed_json_answer_validates(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    response_format = {"type": "json_schema",
                       "json_schema": {"name": "person", "schema": PERSON, "strict": True}}
    chunks = [c async for c in await stream(litellm, sim, protocol,
                                            response_format=response_format)]
    jsonschema.validate(json.loads(text_of(chunks)), PERSON)


# -- order and timing ------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_the_client_gets_the_first_chunk_while_the_gate_holds_the_rest(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol)
    gate = sim.stream_gate(MODEL[protocol])
    try:
        chunks = await stream(litellm, sim, protocol)
        first = None
        async for chunk in chunks:
            if content_chunks([chunk]):
                first = chunk
                break
        assert first is not None
        assert gate.closed
        # Set right after the server's write, which may still be a moment behind us.
        assert gate.first_chunk_sent.wait(5)
        gate.release()
        rest = [chunk async for chunk in chunks]
        assert content_chunks(rest) and finish_reason(rest) == "stop"
    finally:
        gate.release()  # a failure here must not hold the next tests' streams


@pytest.mark.parametrize("protocol", PROTOCOLS)
@aio
async def test_a_slow_first_chunk_delays_the_first_content(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, first_chunk_delay_ms=300)
    started = time.monotonic()
    chunks = await stream(litellm, sim, protocol)
    async for chunk in chunks:
        if content_chunks([chunk]):
            break
    assert time.monotonic() - started >= 0.3
    assert finish_reason([c async for c in chunks]) == "stop"


@aio
async def test_a_stalled_stream_pauses_after_its_first_content_chunk(
        litellm: ModuleType, sim: Simulator) -> None:
    profile_for(sim, "openai", stream_stall_s=0.3)
    arrivals = [time.monotonic() async for chunk in await stream(litellm, sim, "openai")
                if content_chunks([chunk])]
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # Margins for the client's own scheduling: the stall is 0.3 s on the server.
    assert gaps[0] >= 0.25 and max(gaps[1:]) < 0.15


# -- cut streams -------------------------------------------------------------------------------

@pytest.mark.parametrize("protocol", ["openai", "ollama", "google"])
@aio
async def test_a_cut_stream_raises_during_iteration_and_bills_what_was_sent(
        litellm: ModuleType, sim: Simulator, protocol: str) -> None:
    profile_for(sim, protocol, stream_cut_after=3)
    chunks = await stream(litellm, sim, protocol)
    received: list[Any] = []
    with pytest.raises(litellm.exceptions.MidStreamFallbackError) as info:
        async for chunk in chunks:
            received.append(chunk)
    text = text_of(received)
    assert len(content_chunks(received)) == 3
    assert info.value.generated_content == text
    assert sim.billed() == {MODEL[protocol]: (count_tokens(PROMPT), count_tokens(text))}
    # litellm strips usage from the chunks it yields; what the provider reported before
    # the cut stays only in the stream wrapper's own list of received chunks.
    assert all(getattr(c, "usage", None) is None for c in received)
    reported = [c.usage for c in chunks.chunks if getattr(c, "usage", None) is not None]
    if protocol == "ollama":  # Ollama reports usage on its last line only
        assert reported == []
    else:
        last = reported[-1]
        assert (last.prompt_tokens, last.completion_tokens) == sim.billed()[MODEL[protocol]]


@aio
async def test_a_cut_anthropic_stream_raises_with_only_the_input_count_reported(
        litellm: ModuleType, sim: Simulator) -> None:
    # Anthropic reports output usage only in message_delta, which every client reads as
    # the end of the message: a cut stream has no delta, so litellm raises, and the only
    # count it saw is message_start's input tokens.
    profile_for(sim, "anthropic", stream_cut_after=3)
    chunks = await stream(litellm, sim, "anthropic")
    received = []
    with pytest.raises(litellm.exceptions.MidStreamFallbackError):
        async for chunk in chunks:
            received.append(chunk)
    assert len(content_chunks(received)) == 3
    billed_in, billed_out = sim.billed()["x"]
    assert billed_out > 0
    usages = [c.usage for c in chunks.chunks if getattr(c, "usage", None) is not None]
    assert all(u.completion_tokens == 0 for u in usages)
    assert all(u.prompt_tokens in (0, billed_in) for u in usages)


@aio
async def test_a_cut_openai_stream_without_include_usage_reports_nothing(
        litellm: ModuleType, sim: Simulator) -> None:
    profile_for(sim, "openai", stream_cut_after=2)
    chunks = await litellm.acompletion(
        model="openai/x", api_base=sim.api_base("openai"), api_key="k", max_retries=0,
        stream=True, messages=[{"role": "user", "content": PROMPT}])
    with pytest.raises(litellm.exceptions.MidStreamFallbackError):
        async for _ in chunks:
            pass
    assert all(getattr(c, "usage", None) is None for c in chunks.chunks)
    assert sim.billed()["x"][1] > 0


# -- the wire itself ---------------------------------------------------------------------------

def test_openai_wire_has_a_role_chunk_a_usage_chunk_and_done(make_simulator: Any) -> None:
    sim = make_simulator({"m": ModelProfile(latency_ms=0)})
    body = {"model": "m", "stream": True, "stream_options": {"include_usage": True},
            "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", sim.api_base("openai") + "/chat/completions", json=body) as answer:
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = [line[6:] for line in answer.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    chunks = [json.loads(e) for e in events[:-1]]
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    assert chunks[-2]["choices"][0]["finish_reason"] == "stop"
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["prompt_tokens"] == 8
    assert {c["object"] for c in chunks} == {"chat.completion.chunk"}


def test_anthropic_wire_names_each_event_in_order(make_simulator: Any) -> None:
    sim = make_simulator({"m": ModelProfile(latency_ms=0)})
    body = {"model": "m", "stream": True, "max_tokens": 50,
            "messages": [{"role": "user", "content": PROMPT}]}
    with httpx.stream("POST", sim.api_base("anthropic") + "/v1/messages", json=body,
                      headers={"anthropic-version": "2023-06-01"}) as answer:
        names = [line[7:] for line in answer.iter_lines() if line.startswith("event: ")]
    assert names[:2] == ["message_start", "content_block_start"]
    assert set(names[2:-3]) == {"content_block_delta"}
    assert names[-3:] == ["content_block_stop", "message_delta", "message_stop"]


def test_a_client_that_leaves_mid_stream_is_billed_for_what_was_sent(make_simulator: Any) -> None:
    sim = make_simulator({"m": ModelProfile(latency_ms=0)})
    body = {"model": "m", "stream": True, "messages": [{"role": "user", "content": PROMPT}]}
    url = sim.base_url + "/api/chat"
    whole = httpx.post(url, json=body).text.splitlines()
    full_output = json.loads(whole[-1])["eval_count"]
    sim.reset()  # the same request index again: the same answer
    gate = sim.stream_gate("m")  # the server waits after the first chunk...
    with httpx.stream("POST", url, json=body) as answer:
        first = json.loads(next(answer.iter_lines()))
    gate.release()  # ...until the client has hung up (a stall raced a slow client)
    deadline = time.monotonic() + 2
    while not sim.billed() and time.monotonic() < deadline:
        time.sleep(0.02)
    # The server notices the hang-up at its next write or the one after: it bills the
    # pieces it wrote until then, never the whole answer.
    billed_in, billed_out = sim.billed()["m"]
    assert billed_in == count_tokens(PROMPT)
    assert count_tokens(first["message"]["content"]) <= billed_out < full_output


@aio
async def test_streams_of_a_gated_model_wait_together_until_release(
        litellm: ModuleType, sim: Simulator) -> None:
    profile_for(sim, "openai")
    gate = sim.stream_gate("x")

    async def consume() -> str:
        return text_of([c async for c in await stream(litellm, sim, "openai")])

    tasks = [asyncio.create_task(consume()) for _ in range(3)]
    try:
        assert await asyncio.to_thread(gate.first_chunk_sent.wait, 5)
        await asyncio.sleep(0.05)
        assert not any(t.done() for t in tasks)
    finally:
        gate.release()
    assert all(await asyncio.gather(*tasks))
