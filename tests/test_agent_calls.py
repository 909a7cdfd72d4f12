"""Agent calls through the whole managed path, over real HTTP through litellm to the
simulator, on each of the four wire protocols: tool-calling loops, streaming (order,
failover before the first chunk, interruption after it, cancellation), structured
output, and the ledger against what the simulator billed.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from typing import Any

import pytest

from amm.decorator import managed_model
from amm.errors import (
    ConfigurationError,
    FailoverError,
    ModelUnavailableError,
    StreamInterruptedError,
)
from amm.models import ModelRequest
from amm.sim import ModelProfile
from amm.sim.streams import TOKENS_PER_PIECE
from telemetry.events import AttemptEvent, QualityEvent, SelectionEvent
from tests.fixtures_manager import model_entry

PROTOCOLS = ["openai", "anthropic", "google", "ollama"]

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string"}, "unit": {"type": "string", "enum": ["c", "f"]}},
        "required": ["city", "unit"]}}}
TIME = {"type": "function", "function": {
    "name": "get_time", "description": "Local time of a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}},
                   "required": ["city"]}}}
REPORT_SCHEMA = {"type": "object", "properties": {
    "severity": {"type": "string", "enum": ["low", "high"]}, "team": {"type": "string"}},
    "required": ["severity", "team"], "additionalProperties": False}
REPORT_FORMAT = {"type": "json_schema", "json_schema": {"name": "triage", "schema": REPORT_SCHEMA}}


def agent_model(model_id: str, provider: str, **options: Any) -> dict[str, Any]:
    """A registry entry of a model that does tools, schemas and streaming unless told."""
    flags = {k: options.pop(k) for k in list(options) if k.startswith("supports_")}
    entry = model_entry(model_id, provider=provider, **options)
    entry.update({"supports_tools": True, "supports_response_schema": True,
                  "supports_streaming": True, **flags})
    return entry


def ledger_by_model(manager: Any) -> dict[str, tuple[int, int]]:
    manager.cost_tracker.flush()
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        rows = conn.execute("SELECT model_id, SUM(input_tokens), SUM(output_tokens) "
                            "FROM amm_cost_ledger GROUP BY model_id").fetchall()
    return {m: (int(i), int(o)) for m, i, o in rows}


def billed(sim: Any) -> dict[str, tuple[int, int]]:
    return {m: t for m, t in sim.billed().items() if t != (0, 0)}


async def booked(manager: Any, log: Any) -> None:
    """Wait for a stream the caller left to be booked: its drain starts once the loop's
    generator is finalised (a few loop turns after a ``break``), then reads to the end."""
    for _ in range(200):
        if manager.stream_drains.pending or log.of(AttemptEvent):
            break
        await asyncio.sleep(0.005)
    assert await manager.drain_streams(timeout_s=10.0)


# -- tools ---------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_tool_calling_loop_of_three_turns_through_managed_model(build_manager, protocol):
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1, tool_rounds=2)},
                                      [agent_model("m", protocol)])

    @managed_model(agent_type="ops", manager=manager)
    async def ops(question: str, *, llm: Any) -> tuple[list[Any], str]:
        messages: list[dict[str, Any]] = [{"role": "user", "content": question}]
        replies = []
        for _ in range(3):
            reply = await llm.complete(messages, tools=[WEATHER, TIME], max_tokens=200)
            replies.append(reply)
            if not reply.tool_calls:
                return replies, reply.content
            messages.append(reply.assistant_message())
            for call in reply.tool_calls:
                with llm.tool(call.name, call_id=call.id, arguments=call.arguments) as span:
                    result = json.dumps({"ok": True, "args": call.parsed()})
                    span.set_result(result)
                messages.append({"role": "tool", "tool_call_id": call.id, "content": result})
        raise AssertionError("no final answer after three turns")

    async with manager:
        replies, answer = await ops("What is the weather in Paris?")
    assert len(replies) == 3
    for reply in replies[:2]:
        assert reply.finish_reason == "tool_calls"
        assert [c.name for c in reply.tool_calls] == ["get_weather"]
        args = reply.tool_calls[0].parsed()
        assert set(args) >= {"city", "unit"} and args["unit"] in ("c", "f")
    assert answer and not replies[2].tool_calls
    qualities = [q.overall for q in log.of(QualityEvent)]
    assert len(qualities) == 3 and min(qualities[:2]) == 1.0  # valid calls: not empty answers
    assert ledger_by_model(manager) == billed(sim)


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_parallel_tool_calls_keep_the_providers_order(build_manager, protocol):
    manager, _, _ = build_manager({"m": ModelProfile(latency_ms=1, parallel_tool_calls=True)},
                                  [agent_model("m", protocol)])
    request = ModelRequest(prompt="Weather and time in Oslo", task_id="p1", agent_type="ops",
                           tools=[WEATHER, TIME])
    async with manager:
        reply = await manager.complete(request)
    assert [c.name for c in reply.tool_calls] == ["get_weather", "get_time"]
    assert len({c.id for c in reply.tool_calls}) == 2


async def test_a_tool_only_reply_is_never_scored_empty_and_never_demotes(build_manager):
    manager, _, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                    [agent_model("m", "openai")], evaluation_window=3)
    async with manager:
        for i in range(12):
            reply = await manager.complete(ModelRequest(
                prompt=f"weather {i}", task_id=f"t{i}", agent_type="ops", tools=[WEATHER]))
            assert reply.tool_calls and not reply.content
    assert {q.overall for q in log.of(QualityEvent)} == {1.0}
    assert manager.demoted_models() == {}


async def test_tools_never_reach_a_model_without_tool_support_and_the_span_says_why(build_manager):
    manager, sim, log = build_manager(
        {"plain": ModelProfile(latency_ms=1), "tooled": ModelProfile(latency_ms=1)},
        [agent_model("plain", "openai", supports_tools=False, cost_in=0.0),
         agent_model("tooled", "openai")])
    async with manager:
        reply = await manager.complete(ModelRequest(prompt="weather", task_id="x",
                                                    agent_type="ops", tools=[WEATHER]))
    assert reply.model_id == "tooled" and sim.request_count("plain") == 0
    excluded = log.of(SelectionEvent)[0].excluded
    assert "supports_tools" in excluded["plain"]


async def test_failover_to_another_provider_keeps_the_tools(build_manager):
    manager, sim, _ = build_manager(
        {"down": ModelProfile(error_rate=1.0), "up": ModelProfile(latency_ms=1)},
        [agent_model("down", "openai", cost_in=0.0, cost_out=0.0),
         agent_model("up", "anthropic")], retries_per_model=0)
    async with manager:
        reply = await manager.complete(ModelRequest(prompt="weather in Rome", task_id="f",
                                                    agent_type="ops", tools=[WEATHER]))
    assert reply.model_id == "up" and reply.tool_calls[0].name == "get_weather"
    assert sim.request_count("down") == 1


# -- structured output ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_json_schema_answer_validates_and_scores_as_valid(build_manager, protocol):
    # litellm sends Gemini the schema only for model names it knows.
    name = "gemini-2.0-flash" if protocol == "google" else "m"
    manager, _, log = build_manager({name: ModelProfile(latency_ms=1)},
                                    [agent_model(name, protocol)])
    async with manager:
        reply = await manager.complete(ModelRequest(
            prompt="Triage: the login page is down", task_id="j", agent_type="triage",
            response_format=REPORT_FORMAT))
    data = json.loads(reply.content)
    assert data["severity"] in ("low", "high") and isinstance(data["team"], str)
    assert log.of(QualityEvent)[0].overall == 1.0


async def test_response_format_never_reaches_a_model_without_schema_support(build_manager):
    manager, sim, log = build_manager(
        {"prose": ModelProfile(latency_ms=1, json_support=False),
         "json": ModelProfile(error_rate=1.0)},
        [agent_model("prose", "openai", supports_response_schema=False, cost_in=0.0),
         agent_model("json", "openai")], retries_per_model=0)
    async with manager:
        with pytest.raises((FailoverError, ModelUnavailableError)):
            await manager.complete(ModelRequest(prompt="Triage it", task_id="r",
                                                agent_type="triage", response_format=REPORT_FORMAT))
    assert sim.request_count("prose") == 0
    assert "supports_response_schema" in log.of(SelectionEvent)[0].excluded["prose"]


async def test_an_invalid_json_answer_fails_over_when_the_request_says_so(build_manager):
    manager, sim, log = build_manager(
        {"liar": ModelProfile(latency_ms=1, json_support=False),
         "honest": ModelProfile(latency_ms=1)},
        [agent_model("liar", "openai", cost_in=0.0, cost_out=0.0), agent_model("honest", "openai")])
    request = ModelRequest(prompt="Triage it", task_id="o", agent_type="triage",
                           response_format=REPORT_FORMAT, on_invalid="failover")
    async with manager:
        reply = await manager.complete(request)
        kept = await manager.complete(ModelRequest(prompt="Triage it", task_id="o2",
                                                   agent_type="triage",
                                                   response_format=REPORT_FORMAT))
    assert reply.model_id == "honest" and json.loads(reply.content)
    assert sim.request_count("liar") == 2  # the second request kept the invalid answer
    assert kept.model_id == "liar"
    assert min(q.overall for q in log.of(QualityEvent)) == 0.0  # prose for JSON: a failure
    assert ledger_by_model(manager) == billed(sim)  # the invalid answers are billed too


# -- streaming ------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_stream_chunks_reach_the_caller_before_the_provider_finishes(build_manager, protocol):
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", protocol)])
    gate = sim.stream_gate("m")
    deltas: list[str] = []

    @managed_model(agent_type="chat", manager=manager)
    async def chat(question: str, *, llm: Any) -> Any:
        stream = llm.stream(question, max_tokens=120)
        async for chunk in stream:
            if not deltas:
                # The provider is held after its first chunk: it cannot have finished.
                assert await asyncio.to_thread(gate.first_chunk_sent.wait, 5.0)
                assert chunk.delta
                gate.release()
            deltas.append(chunk.delta)
        return stream.response

    async with manager:
        response = await chat("Explain how a bloom filter answers membership queries")
    assert len(deltas) > 1
    assert response.content == "".join(deltas)
    assert response.model_id == "m"
    usage = response.token_usage
    assert (usage.input_tokens, usage.output_tokens) == sim.billed()["m"]
    assert ledger_by_model(manager) == billed(sim)
    attempt = log.of(AttemptEvent)[0]
    assert attempt.stream and attempt.success and attempt.time_to_first_chunk_s > 0
    assert not attempt.usage_estimated
    assert len(log.of(QualityEvent)) == 1  # evaluated once, on the whole answer


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_that_fails_before_its_first_chunk_fails_over(build_manager, protocol):
    manager, sim, _ = build_manager(
        {"down": ModelProfile(error_rate=1.0), "up": ModelProfile(latency_ms=1)},
        [agent_model("down", protocol, cost_in=0.0, cost_out=0.0), agent_model("up", protocol)],
        retries_per_model=0)
    request = ModelRequest(prompt="Summarise the incident", task_id="s", agent_type="chat")
    async with manager:
        stream = manager.stream(request)
        text = "".join([c.delta async for c in stream])
    assert sim.request_count("down") == 1
    assert stream.response.model_id == "up" and text == stream.response.content


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_cut_mid_way_raises_with_the_partial_text_and_is_billed(build_manager,
                                                                               protocol):
    manager, sim, log = build_manager(
        {"cut": ModelProfile(latency_ms=1, stream_cut_after=3), "spare": ModelProfile()},
        [agent_model("cut", protocol, cost_in=0.0), agent_model("spare", protocol)])
    received: list[str] = []
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain consistent hashing in depth",
                                             task_id="c", agent_type="chat", max_tokens=300))
        with pytest.raises(StreamInterruptedError) as info:
            async for chunk in stream:
                received.append(chunk.delta)
    err = info.value
    assert err.model_id == "cut" and err.partial_text == "".join(received) and received
    assert sim.request_count("spare") == 0  # no failover once the caller has text
    attempt = [e for e in log.of(AttemptEvent) if e.model_id == "cut"][-1]
    assert not attempt.success and attempt.output_tokens > 0
    if protocol in ("ollama", "anthropic"):  # no output usage before the end: estimated
        assert err.usage_estimated and attempt.usage_estimated
        if protocol == "anthropic":  # the input count came with message_start: exact
            assert err.usage.input_tokens == sim.billed()["cut"][0]
    else:
        assert not err.usage_estimated
        assert (err.usage.input_tokens, err.usage.output_tokens) == sim.billed()["cut"]
        assert ledger_by_model(manager) == billed(sim)


@pytest.mark.parametrize("on_cancel", ["drain", "close"])
async def test_a_cancelled_stream_releases_its_rate_limit_reservation(build_manager, on_cancel):
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", "openai", tpm=20_000)],
                                      daily_budget=10.0, on_cancel=on_cancel)
    gate = sim.stream_gate("m")
    limiter = manager.rate_limiter
    async with manager:
        before = (await limiter.check_rate_limit("m", 0)).tokens_remaining
        stream = manager.stream(ModelRequest(prompt="Tell a long story", task_id="k",
                                             agent_type="chat", max_tokens=4000))
        first = await stream.__anext__()
        assert first.delta
        during = (await limiter.check_rate_limit("m", 0)).tokens_remaining
        assert manager.cost_tracker.reserved() > 0
        await stream.aclose()
        # Right after the cancel returns (the provider is still held at the gate): the
        # 4,000-token reservation and the budget hold are gone; what was used so far
        # (amm's estimate: the prompt and the chunk read) still counts.
        released = (await limiter.check_rate_limit("m", 0)).tokens_remaining
        assert before - 20 <= released < before
        assert manager.cost_tracker.reserved() == 0.0
        gate.release()
        assert await manager.drain_streams(timeout_s=10.0)
        after = (await limiter.check_rate_limit("m", 0)).tokens_remaining
    assert during <= before - 4000  # the reservation holds the estimate while streaming
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and not attempt.success
    assert attempt.usage_estimated == (on_cancel == "close")
    # the window counts what was billed, once: the provider's report under "drain"
    assert after == before - (attempt.input_tokens + attempt.output_tokens)
    if on_cancel == "drain":
        assert (attempt.input_tokens, attempt.output_tokens) == sim.billed()["m"]


async def test_a_cached_answer_is_streamed(build_manager):
    manager, sim, _ = build_manager({"m": ModelProfile(latency_ms=1)}, [agent_model("m", "openai")])
    request = ModelRequest(prompt="Define idempotency", task_id="h", agent_type="chat",
                           temperature=0.0)
    async with manager:
        first = await manager.complete(request)
        stream = manager.stream(request)
        text = "".join([c.delta async for c in stream])
    assert sim.request_count("m") == 1
    assert text == first.content and stream.response.metadata.get("cache_hit")


def test_a_sync_agent_streams_with_a_plain_for_loop(build_manager):
    manager, sim, _ = build_manager({"m": ModelProfile(latency_ms=1)},
                                    [agent_model("m", "anthropic")])

    @managed_model(agent_type="chat", manager=manager)
    def chat(question: str, *, llm: Any) -> tuple[str, Any]:
        stream = llm.stream(question)
        return "".join(chunk.delta for chunk in stream), stream.response

    text, response = chat("Explain backpressure")
    manager.close()
    assert text and text == response.content
    usage = response.token_usage
    assert (usage.input_tokens, usage.output_tokens) == sim.billed()["m"]


def ledger_rows(manager: Any) -> list[tuple[str, str, int, int, str]]:
    """(model, task_id, input, output, source) of every ledger row."""
    manager.cost_tracker.flush()
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        return conn.execute("SELECT model_id, task_id, input_tokens, output_tokens, source "
                            "FROM amm_cost_ledger").fetchall()


async def mixed_run(manager: Any, sim: Any, protocol: str) -> list[str]:
    """Plain, tool, streamed, cancelled (break, aclose, the task cancelled; once the
    provider has finished and while it still generates) and cut requests on one protocol's
    three models; returns the task ids, each of which leads its request's prompt."""
    from amm.models import SelectionConstraints

    def on(kind: str) -> SelectionConstraints:
        return SelectionConstraints(only_models=frozenset({f"{protocol}-{kind}"}))

    def ask(task_id: str, **fields: Any) -> ModelRequest:
        return ModelRequest(prompt=f"[{task_id}] Explain how {task_id} queues retry work",
                            task_id=task_id, agent_type="chat", max_tokens=300, **fields)

    async def provider_finished(task_id: str) -> None:
        while not any(f"[{task_id}]" in b.prompt for b in sim.bills()):
            await asyncio.sleep(0.005)

    async def read(task_id: str, kind: str, stop_after: int | None = None, how: str = "break",
                   **fields: Any) -> None:
        stream = manager.stream(ask(task_id, **fields), on(kind))
        n = 0
        try:
            async for _ in stream:
                n += 1
                if n == stop_after:
                    if kind == "main":  # cancel once the provider has sent it all
                        await provider_finished(task_id)
                    if how == "aclose":
                        await stream.aclose()
                    break
        except StreamInterruptedError:
            pass

    async def cancel_task(task_id: str, kind: str) -> None:
        first = asyncio.Event()

        async def reader() -> None:
            async for _ in manager.stream(ask(task_id), on(kind)):
                first.set()

        task = asyncio.create_task(reader())
        await first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    p = protocol[:2]
    await manager.complete(ask(f"{p}-plain"), on("main"))
    await manager.complete(ask(f"{p}-tool", tools=[WEATHER]), on("main"))
    await read(f"{p}-streamed", "main")
    await read(f"{p}-streamed-tool", "main", tools=[WEATHER])
    await read(f"{p}-break-after-finish", "main", 2)
    await read(f"{p}-aclose-at-tool-call", "main", 1, how="aclose", tools=[WEATHER])
    # The "slow" model stalls after its first chunk: these leave while it still generates.
    await read(f"{p}-break-mid-way", "slow", 1)
    await read(f"{p}-aclose-mid-way", "slow", 1, how="aclose")
    await cancel_task(f"{p}-task-cancelled-mid-way", "slow")
    await read(f"{p}-cut", "cut")
    await read(f"{p}-cut-tool", "cut", tools=[WEATHER])  # Gemini, Ollama: one chunk, whole
    return [f"{p}-{name}" for name in (
        "plain", "tool", "streamed", "streamed-tool", "break-after-finish",
        "aclose-at-tool-call", "break-mid-way", "aclose-mid-way", "task-cancelled-mid-way",
        "cut", "cut-tool")]


def mixed_run_models() -> tuple[dict[str, ModelProfile], list[dict[str, Any]]]:
    """Per protocol: "main" answers at once, "slow" stalls after its first chunk, "cut"
    drops the connection after two."""
    profiles, models = {}, []
    for protocol in PROTOCOLS:
        for kind, profile in (("main", ModelProfile(latency_ms=1)),
                              ("slow", ModelProfile(latency_ms=1, stream_stall_s=1.0)),
                              ("cut", ModelProfile(latency_ms=1, stream_cut_after=2))):
            profiles[f"{protocol}-{kind}"] = profile
            models.append(agent_model(f"{protocol}-{kind}", protocol))
    return profiles, models


ESTIMATED = ("an-cut", "an-cut-tool", "ol-cut")
"""Task ids of the mixed run's rows no client can bill exactly: cut Anthropic and Ollama
streams (they count the output only at the end, and the connection dropped before it).
Every cancelled row is exact, those left while the provider still generated too: the
manager reads the provider's stream to its end (``on_cancel="drain"``)."""


async def test_the_ledger_equals_the_billed_tokens_over_a_mixed_run(build_manager):
    # Every ledger row against its own request's bill, on all four protocols: exact
    # wherever the provider reported the usage (every cancel included), flagged an
    # estimate within a bound only where a cut stream left it no report.
    manager, sim, log = build_manager(*mixed_run_models())
    async with manager:
        runs = await asyncio.gather(*(mixed_run(manager, sim, p) for p in PROTOCOLS))
        task_ids = [t for run in runs for t in run]
        assert manager.cost_tracker.reserved() == 0.0  # the cancels' holds went with them
        assert await manager.drain_streams(timeout_s=30.0)
        assert manager.stream_drains.pending == 0
    every_bill, every_row = sim.bills(), ledger_rows(manager)
    assert len(every_bill) == len(every_row) == len(task_ids)  # one row per billed request
    bills = {t: b for t in task_ids for b in every_bill if f"[{t}]" in b.prompt}
    rows = {task: (model, i, o, source) for model, task, i, o, source in every_row}
    assert sorted(rows) == sorted(bills) == sorted(task_ids)
    cancelled = {e.task_id for e in log.of(AttemptEvent) if e.error_type == "cancelled"}
    assert cancelled == {t for t in task_ids if "cancel" in t or "break" in t or "aclose" in t}
    for task in task_ids:
        model, tokens_in, tokens_out, source = rows[task]
        bill = bills[task]
        assert model == bill.model
        # No stream was left unread: the provider finished every cancelled one.
        assert bill.ended in ("complete", "cut"), (task, bill)
        assert bill.ended == "complete" or task.endswith(("-cut", "-cut-tool")), (task, bill)
        if source == "attempt":
            assert not task.endswith(ESTIMATED), task
            assert (tokens_in, tokens_out) == (bill.input_tokens, bill.output_tokens), task
            continue
        assert source == "attempt:estimated", task
        assert task.endswith(ESTIMATED), task
        # amm estimates ceil(chars / 4) where the simulator counts words and marks, and
        # cannot see the chunk the provider generated after the client left.
        for estimate, billed in ((tokens_in, bill.input_tokens), (tokens_out, bill.output_tokens)):
            assert abs(estimate - billed) <= TOKENS_PER_PIECE + billed // 2, (task, bill)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_closed_after_the_provider_finished_is_billed_its_own_report(
        build_manager, protocol):
    # The caller leaves after one chunk; the provider had sent it all: amm reads the rest
    # through to the provider's usage report (passing none of it on) and bills that.
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", protocol)])
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain how a ring buffer wraps",
                                             task_id="done", agent_type="chat"))
        first = await stream.__anext__()
        while not sim.bills():
            await asyncio.sleep(0.005)
        await stream.aclose()
    (bill,) = sim.bills()
    assert bill.ended == "complete"
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and not attempt.usage_estimated
    assert (attempt.input_tokens, attempt.output_tokens) == (bill.input_tokens,
                                                             bill.output_tokens)
    assert ledger_by_model(manager) == billed(sim)
    assert first.delta and stream.response is None  # the caller got only what it read


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_a_stream_left_while_the_provider_generates_returns_at_once_and_is_billed_exactly(
        build_manager, protocol):
    # The caller's close returns while the provider is held at the gate (it cannot have
    # finished); the manager reads the rest in the background and books the provider's
    # own final report once the provider ends.
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", protocol)])
    gate = sim.stream_gate("m")
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain how a ring buffer wraps",
                                             task_id="left", agent_type="chat"))
        first = await stream.__anext__()
        await stream.aclose()
        assert gate.closed and not sim.bills()  # the provider is still generating
        assert manager.stream_drains.pending == 1 and not log.of(AttemptEvent)
        gate.release()
        assert await manager.drain_streams(timeout_s=10.0)
        assert manager.stream_drains.pending == 0
    (bill,) = sim.bills()
    assert bill.ended == "complete"
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and not attempt.usage_estimated
    assert (attempt.input_tokens, attempt.output_tokens) == (bill.input_tokens,
                                                             bill.output_tokens)
    assert [(r[1], r[2], r[3], r[4]) for r in ledger_rows(manager)] == [
        ("left", bill.input_tokens, bill.output_tokens, "attempt")]
    assert first.delta and stream.response is None  # the caller got only what it read


async def release_once_the_client_left(gate, sim) -> None:
    """Wait until the simulator saw the client close the stream held at ``gate`` (so
    its next write fails), release the gate, and wait for the stream's bill."""
    async with asyncio.timeout(10):
        while not gate.client_gone.is_set():
            await asyncio.sleep(0.005)
    gate.release()
    async with asyncio.timeout(10):
        while not sim.bills():
            await asyncio.sleep(0.005)

@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_on_cancel_close_stops_the_provider_and_books_a_flagged_estimate(
        build_manager, protocol):
    # What the provider generated after the caller left reaches no client: the row says so.
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", protocol)], on_cancel="close")
    gate = sim.stream_gate("m")
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain how a ring buffer wraps",
                                             task_id="left", agent_type="chat"))
        await stream.__anext__()
        await stream.aclose()
        assert manager.stream_drains.pending == 0
        assert log.of(AttemptEvent)[-1].usage_estimated  # booked by the close itself
        await release_once_the_client_left(gate, sim)
    (bill,) = sim.bills()
    assert bill.ended == "client_left"
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and attempt.usage_estimated
    rows = ledger_rows(manager)
    assert [(r[1], r[4]) for r in rows] == [("left", "attempt:estimated")]
    if protocol in ("anthropic", "google"):  # they count the input in-band, at the start
        assert rows[0][2] == bill.input_tokens
    # amm's estimate of what arrived; the chunk the provider wrote on noticing never did.
    assert rows[0][3] > 0 and abs(rows[0][3] - bill.output_tokens) <= TOKENS_PER_PIECE + 4


async def test_a_drain_past_its_bound_closes_and_books_a_flagged_estimate(build_manager):
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", "openai")], cancel_drain_timeout_s=0.1)
    gate = sim.stream_gate("m")
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain how a ring buffer wraps",
                                             task_id="slow", agent_type="chat"))
        await stream.__anext__()
        await stream.aclose()
        assert await manager.drain_streams(timeout_s=10.0)  # the bound, not the gate, ends it
        assert gate.closed
        await release_once_the_client_left(gate, sim)
    (bill,) = sim.bills()
    assert bill.ended == "client_left"
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and attempt.usage_estimated
    assert [(r[1], r[4]) for r in ledger_rows(manager)] == [("slow", "attempt:estimated")]


@pytest.mark.parametrize("provider_ends", [True, False])
async def test_stopping_the_manager_books_a_pending_drain_never_loses_it(
        build_manager, monkeypatch, provider_ends):
    # stop() gives pending drains DRAIN_GRACE_S: one the provider ends in time is booked
    # exactly, one it does not is closed and booked as a flagged estimate.
    import amm.manager

    monkeypatch.setattr(amm.manager, "DRAIN_GRACE_S", 3.0 if provider_ends else 0.3)
    stall = 0.05 if provider_ends else 10.0
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1, stream_stall_s=stall)},
                                      [agent_model("m", "openai")])
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain how a ring buffer wraps",
                                             task_id="shut", agent_type="chat"))
        await stream.__anext__()
        await stream.aclose()
        assert manager.stream_drains.pending == 1
    assert manager.stream_drains.pending == 0
    (attempt,) = log.of(AttemptEvent)
    assert attempt.error_type == "cancelled"
    rows = ledger_rows(manager)
    assert len(rows) == 1 and rows[0][1] == "shut"
    if provider_ends:
        (bill,) = sim.bills()
        assert rows[0][2:] == (bill.input_tokens, bill.output_tokens, "attempt")
    else:
        assert attempt.usage_estimated and rows[0][4] == "attempt:estimated"
        assert rows[0][3] > 0


def test_a_loop_that_ends_with_a_drain_pending_books_it_and_leaves_no_task(build_manager,
                                                                           caplog):
    # asyncio.run (as pytest-asyncio's runner) cancels what is left when its loop ends: the
    # drain books amm's estimate, flagged, closes its connection and ends quietly.
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", "openai")])
    gate = sim.stream_gate("m")

    async def leave_a_stream() -> None:
        await manager.start()
        stream = manager.stream(ModelRequest(prompt="Explain how a ring buffer wraps",
                                             task_id="end", agent_type="chat"))
        await stream.__anext__()
        await stream.aclose()
        assert manager.stream_drains.pending == 1

    asyncio.run(leave_a_stream())
    assert manager.stream_drains.pending == 0
    manager.close()
    gate.release()
    (attempt,) = log.of(AttemptEvent)
    assert attempt.error_type == "cancelled" and attempt.usage_estimated
    assert [(r[1], r[4]) for r in ledger_rows(manager)] == [("end", "attempt:estimated")]
    assert "destroyed but it is pending" not in caplog.text
    assert "never retrieved" not in caplog.text


@pytest.mark.parametrize(("setting", "value"), [("on_cancel", "abandon"),
                                                ("on_cancel", None),
                                                ("cancel_drain_timeout_s", 0),
                                                ("cancel_drain_timeout_s", float("nan"))])
def test_a_bad_stream_cancel_setting_is_a_configuration_error_naming_it(
        build_manager, setting, value):
    from amm.manager import ManagerSettings

    with pytest.raises(ConfigurationError) as info:
        build_manager({"m": ModelProfile()}, [agent_model("m", "openai")], **{setting: value})
    assert info.value.field == setting and repr(value) in str(info.value)
    with pytest.raises(ConfigurationError):
        ManagerSettings(**{setting: value})


async def test_cancelling_the_callers_task_mid_stream_cancels_the_provider_call(build_manager):
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", "openai", tpm=20_000)])
    gate = sim.stream_gate("m")
    got_first = asyncio.Event()

    async def reader() -> None:
        stream = manager.stream(ModelRequest(prompt="Tell a long story", task_id="x",
                                             agent_type="chat", max_tokens=4000))
        async for _ in stream:
            got_first.set()

    async with manager:
        before = (await manager.rate_limiter.check_rate_limit("m", 0)).tokens_remaining
        task = asyncio.create_task(reader())
        await got_first.wait()
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert manager.cost_tracker.reserved() == 0.0  # released with the cancel
        gate.release()
        assert await manager.drain_streams(timeout_s=10.0)
        after = (await manager.rate_limiter.check_rate_limit("m", 0)).tokens_remaining
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and not attempt.usage_estimated
    # The read the cancel interrupted went on: the provider's own report is the bill.
    assert (attempt.input_tokens, attempt.output_tokens) == sim.billed()["m"]
    assert after == before - (attempt.input_tokens + attempt.output_tokens)
    assert manager.cost_tracker.reserved() == 0.0


async def test_breaking_out_of_the_loop_cancels_the_provider_call(build_manager):
    manager, sim, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", "openai", tpm=20_000)])
    gate = sim.stream_gate("m")
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Tell a long story", task_id="b",
                                             agent_type="chat", max_tokens=4000))
        async for chunk in stream:
            assert chunk.delta
            break
        # The generator's finaliser runs on the next loop turns; it settles the holds at
        # once, while the provider is still held at the gate.
        for _ in range(100):
            if manager.cost_tracker.reserved() == 0.0:
                break
            await asyncio.sleep(0.01)
        assert manager.cost_tracker.reserved() == 0.0 and gate.closed
        gate.release()
        await booked(manager, log)
    attempt = log.of(AttemptEvent)[-1]
    assert attempt.error_type == "cancelled" and stream.response is None
    assert (attempt.input_tokens, attempt.output_tokens) == sim.billed()["m"]


async def test_streams_the_caller_cancels_count_neither_against_health_nor_statistics(
        build_manager):
    manager, _, log = build_manager({"m": ModelProfile(latency_ms=1)},
                                      [agent_model("m", "openai")])
    async with manager:
        for i in range(4):  # more cancels than the health checker's failure threshold
            stream = manager.stream(ModelRequest(prompt=f"Tell story {i}", task_id=f"x{i}",
                                                 agent_type="chat", max_tokens=400))
            async for _ in stream:
                break
            await stream.aclose()
        status = manager.health_checker.get_model_status("m")
        snapshot = manager.performance_monitor.snapshot("m", "chat")
    assert [e.error_type for e in log.of(AttemptEvent)] == ["cancelled"] * 4
    assert status.is_available and status.consecutive_failures == 0
    assert snapshot is None  # a caller's cancel says nothing of the model's speed or success


def traced_manager(build_manager, otel, protocol: str):
    """One model ``m`` on ``protocol`` whose spans go to ``otel``'s in-memory exporter."""
    from telemetry.recorder import Recorder

    return build_manager(
        {"m": ModelProfile(latency_ms=1)}, [agent_model("m", protocol)],
        recorder=Recorder(tracer_provider=otel.tracer_provider,
                          meter_provider=otel.meter_provider))


async def test_breaking_out_of_the_loop_ends_the_streams_agent_span_as_cancelled(
        build_manager, otel, caplog):
    # The loop's generator is closed by its finaliser, in a task and context of its own.
    manager, _, log = traced_manager(build_manager, otel, "openai")
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Tell a long story", task_id="sp",
                                             agent_type="chat"))
        async for _ in stream:
            break
        await booked(manager, log)
    span = otel.span("invoke_agent chat")
    assert span.attributes["error.type"] == "cancelled"
    assert "never retrieved" not in caplog.text


async def test_a_drained_attempts_chat_span_ends_when_it_is_booked_with_the_exact_usage(
        build_manager, otel):
    # The agent span ends when the caller leaves; the chat span of the attempt, its child,
    # when the drain books it (after its parent, as OpenTelemetry allows).
    manager, sim, log = traced_manager(build_manager, otel, "anthropic")
    gate = sim.stream_gate("m")
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Tell a long story", task_id="sp",
                                             agent_type="chat"))
        async for _ in stream:
            break
        for _ in range(100):
            if any(s.name == "invoke_agent chat" for s in otel.spans()):
                break
            await asyncio.sleep(0.01)
        agent = otel.span("invoke_agent chat")
        assert agent.attributes["error.type"] == "cancelled"
        assert not any(s.name.startswith("chat ") for s in otel.spans())  # still draining
        gate.release()
        await booked(manager, log)
    (bill,) = sim.bills()
    chat = otel.span("chat m")
    assert chat.parent.span_id == agent.context.span_id and chat.end_time >= agent.end_time
    assert chat.attributes["error.type"] == "cancelled"
    assert (chat.attributes["gen_ai.usage.input_tokens"],
            chat.attributes["gen_ai.usage.output_tokens"]) == (bill.input_tokens,
                                                               bill.output_tokens)
    assert "amm.usage.estimated" not in chat.attributes


async def test_a_stream_never_leaves_its_agent_span_current_in_the_callers_context(
        build_manager, otel):
    # The caller's own spans, in the loop's body and after a break, are the caller's:
    # amm's invoke_agent span is current only while amm works (opening, reading, closing).
    from opentelemetry import trace

    manager, _, log = traced_manager(build_manager, otel, "openai")
    tracer = otel.tracer_provider.get_tracer("caller")
    async with manager:
        with tracer.start_as_current_span("caller") as outer:
            stream = manager.stream(ModelRequest(prompt="Tell a long story", task_id="cur",
                                                 agent_type="chat"))
            async for _ in stream:
                assert trace.get_current_span() is outer  # in the loop's body
                with tracer.start_as_current_span("body"):
                    pass
                break
            assert trace.get_current_span() is outer  # after the break
            with tracer.start_as_current_span("after"):
                pass
            await booked(manager, log)
        assert trace.get_current_span() is not outer
    caller, agent = otel.span("caller"), otel.span("invoke_agent chat")
    assert otel.span("body").parent.span_id == caller.context.span_id
    assert otel.span("after").parent.span_id == caller.context.span_id
    assert agent.parent.span_id == caller.context.span_id
    chat = next(s for s in otel.spans() if s.name.startswith("chat "))
    assert chat.parent.span_id == agent.context.span_id
    assert agent.attributes["error.type"] == "cancelled"


async def test_a_streams_ledger_row_is_committed_when_its_loop_ends(build_manager):
    manager, _, _ = build_manager({"m": ModelProfile(latency_ms=1)}, [agent_model("m", "openai")])
    async with manager:
        stream = manager.stream(ModelRequest(prompt="Explain idempotency keys", task_id="dur",
                                             agent_type="chat"))
        async for _ in stream:
            pass
        # Read by another connection, with no flush: the row is on disk already.
        with sqlite3.connect(manager.cost_tracker.db_path) as conn:
            rows = conn.execute("SELECT COUNT(*) FROM amm_cost_ledger WHERE task_id = 'dur'"
                                ).fetchone()[0]
    assert rows == 1
