"""The SDK as a user calls it: per-call control, errors that say why, keys, nested and
sync agents, cache coherence, failover that respects demotion. Real manager, real
HTTP through litellm to the simulator.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from typing import Any

import pytest

from amm.api_key_manager import APIKeyManager
from amm.decorator import managed_model
from amm.errors import FailoverError, InvalidRequestError, ModelUnavailableError
from amm.manager import ACTIVE_AGENT, ModelManager
from amm.models import ModelRequest, SelectionConstraints
from amm.sim import ModelProfile
from telemetry.events import AttemptEvent, FailoverEvent
from tests.fixtures_manager import model_entry

FAST = ModelProfile(latency_ms=1)


def trio(build_manager: Any, **kwargs: Any) -> Any:
    return build_manager(
        {"a": FAST, "b": FAST, "c": FAST},
        [model_entry("a", cost_in=0.0001, cost_out=0.0001),
         model_entry("b", cost_in=0.001, cost_out=0.001),
         model_entry("c", provider="anthropic", cost_in=0.01, cost_out=0.01)], **kwargs)


async def test_model_pins_the_call_and_the_span_shows_it(build_manager):
    manager, sim, log = trio(build_manager)

    @managed_model(agent_type="general", manager=manager)
    async def agent(*, llm: Any) -> Any:
        return await llm.complete("Explain caching", model="c")

    async with manager:
        reply = await agent()
    assert reply.model_id == "c" and sim.request_count("c") == 1
    assert sim.request_count("a") == sim.request_count("b") == 0
    assert [e.model_id for e in log.of(AttemptEvent)] == ["c"]


async def test_a_pinned_model_fails_over_only_to_its_fallbacks(build_manager):
    manager, sim, _ = build_manager(
        {"down": ModelProfile(error_rate=1.0), "cheap": FAST, "spare": FAST},
        [model_entry("down"), model_entry("cheap", cost_in=0.0, cost_out=0.0),
         model_entry("spare", cost_in=0.01, cost_out=0.01)], retries_per_model=0)
    async with manager:
        with pytest.raises(FailoverError) as info:
            await manager.complete(ModelRequest(prompt="x", task_id="p", agent_type="g",
                                                model="down"))
        assert info.value.attempted_models == ["down"]
        reply = await manager.complete(ModelRequest(prompt="y", task_id="q", agent_type="g",
                                                    model="down", fallbacks=["spare"]))
    assert reply.model_id == "spare" and sim.request_count("cheap") == 0


async def test_exclude_models_and_providers_narrow_the_candidates(build_manager):
    manager, sim, _ = trio(build_manager)
    async with manager:
        r1 = await manager.complete(ModelRequest(prompt="1", task_id="e1", agent_type="g",
                                                 exclude_models=["a"]))
        r2 = await manager.complete(ModelRequest(prompt="2", task_id="e2", agent_type="g",
                                                 providers=["anthropic"]))
    assert r1.model_id == "b" and r2.model_id == "c" and sim.request_count("a") == 0


async def test_timeout_bounds_the_whole_call_including_failover(build_manager):
    manager, _, _ = build_manager(
        {"hung": ModelProfile(timeout_rate=1.0, hang_s=30), "also": ModelProfile(timeout_rate=1.0,
                                                                                hang_s=30)},
        [model_entry("hung"), model_entry("also")], retries_per_model=3)
    async with manager:
        started = time.monotonic()
        with pytest.raises((FailoverError, InvalidRequestError, ModelUnavailableError)) as info:
            await manager.complete(ModelRequest(prompt="x", task_id="t", agent_type="g",
                                                timeout_s=1.0))
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, elapsed
    assert info.value.attempted_models


async def test_max_retries_and_cache_false_change_what_the_provider_receives(build_manager):
    manager, sim, _ = build_manager({"flaky": ModelProfile(error_rate=1.0), "ok": FAST},
                                    [model_entry("flaky", cost_in=0.0, cost_out=0.0),
                                     model_entry("ok")], retries_per_model=2)
    request = dict(prompt="same words", agent_type="g", temperature=0.0)
    async with manager:
        await manager.complete(ModelRequest(task_id="m", max_retries=0, **request))
        assert sim.request_count("flaky") == 1  # no retry on the same model
        await manager.complete(ModelRequest(task_id="n", cache=False, exclude_models=["flaky"],
                                            **request))
        await manager.complete(ModelRequest(task_id="o", cache=False, exclude_models=["flaky"],
                                            **request))
    assert sim.request_count("ok") == 3  # cache=False: every call reaches the provider


async def test_an_unknown_parameter_raises_before_any_request(build_manager):
    manager, sim, _ = trio(build_manager)

    @managed_model(agent_type="general", manager=manager)
    async def agent(*, llm: Any) -> Any:
        return await llm.complete("hi", num_retries=3)

    async with manager:
        with pytest.raises(InvalidRequestError, match="num_retries"):
            await agent()
        with pytest.raises(InvalidRequestError, match="not in the registry: nope"):
            await manager.complete(ModelRequest(prompt="x", task_id="u", agent_type="g",
                                                model="nope"))
    assert sim.request_count() == 0


async def test_no_match_names_every_models_reason_and_is_permanent(build_manager):
    manager, sim, _ = trio(build_manager)
    constraints = SelectionConstraints(required_capabilities=["code-generation"],
                                       excluded_providers=["anthropic"], max_cost_per_request=1e-9)
    async with manager:
        with pytest.raises(ModelUnavailableError) as info:
            await manager.complete(ModelRequest(prompt="write code", task_id="n", agent_type="g"),
                                   constraints)
    err = info.value
    assert set(err.failure_reasons) == {"a", "b", "c"}
    assert "provider anthropic excluded" in err.failure_reasons["c"]
    assert "estimated cost" in err.failure_reasons["a"]
    assert "a: estimated cost" in str(err) and not err.is_retryable
    from amm.selector import Exclusion
    assert err.failure_reasons["c"].code is Exclusion.PROVIDER_EXCLUDED
    assert err.failure_reasons["a"].code is Exclusion.COST and not Exclusion.COST.temporary
    assert sim.request_count() == 0


async def test_an_unknown_capability_says_so_and_suggests_the_closest(build_manager):
    manager, _, _ = trio(build_manager)
    async with manager:
        with pytest.raises(InvalidRequestError, match="did you mean 'code-generation'"):
            await manager.complete(ModelRequest(prompt="x", task_id="c", agent_type="g"),
                                   SelectionConstraints(required_capabilities=["code-generaton"]))


async def test_models_whose_provider_has_no_key_are_skipped_with_the_reason(tmp_path,
                                                                           make_simulator):
    sim = make_simulator({"keyed": FAST, "local": FAST})
    models = [model_entry("keyed", cost_in=0.0, cost_out=0.0),
              model_entry("local", provider="ollama")]
    for m in models:
        m["api_base"] = sim.api_base(m["provider"])
    config = tmp_path / "registry.json"
    config.write_text(json.dumps({"models": models}))
    manager = ModelManager.from_config(config, data_dir=tmp_path / "data", telemetry=False,
                                       key_manager=APIKeyManager(), start_health_checks=False)
    async with manager:
        reply = await manager.complete(ModelRequest(prompt="x", task_id="k", agent_type="g"))
        reasons = manager.selector.exclusions(ModelRequest(prompt="x"), "g")
    assert reply.model_id == "local" and sim.request_count("keyed") == 0
    assert reasons["keyed"] == "no usable API key for provider openai"


async def test_a_demoted_model_is_never_a_failover_alternative(build_manager):
    manager, sim, log = build_manager(
        {"first": ModelProfile(error_rate=1.0), "demoted": FAST, "fine": FAST},
        [model_entry("first", cost_in=0.0, cost_out=0.0),
         model_entry("demoted", cost_in=0.00001, cost_out=0.00001),
         model_entry("fine", cost_in=0.01, cost_out=0.01)], retries_per_model=0)
    manager._demoted[("g", "demoted")] = manager._clock() + 600
    async with manager:
        reply = await manager.complete(ModelRequest(prompt="x", task_id="d", agent_type="g"))
    assert reply.model_id == "fine" and sim.request_count("demoted") == 0
    assert [e.to_model for e in log.of(FailoverEvent)] == ["fine"]


async def test_a_nested_agent_inherits_its_callers_task_id(build_manager):
    manager, _, log = trio(build_manager)
    seen = []

    @managed_model(agent_type="inner", manager=manager)
    async def inner(*, llm: Any) -> str:
        seen.append(ACTIVE_AGENT.get())
        return (await llm.complete("inner work")).content

    @managed_model(agent_type="outer", manager=manager)
    async def outer(*, llm: Any) -> str:
        await llm.complete("outer work")
        return await inner()

    async with manager:
        await outer(task_id="T-42")
    assert seen == [("inner", "T-42")]
    assert {e.task_id for e in log.of(AttemptEvent)} == {"T-42"}


async def test_a_sync_agent_inside_a_running_loop_raises_a_typed_error(build_manager):
    manager, sim, _ = trio(build_manager)

    @managed_model(agent_type="sync", manager=manager)
    def agent(*, llm: Any) -> str:
        return llm.complete("hi").content

    with pytest.raises(InvalidRequestError, match=r"asyncio\.to_thread") as info:
        agent()
    assert info.value.error_type == "sync_in_async"
    assert await asyncio.to_thread(agent)  # the way the error points to works
    await manager.stop()
    assert sim.request_count() == 1


async def test_a_cached_answer_from_a_model_no_longer_enabled_is_a_miss(build_manager):
    manager, sim, _ = trio(build_manager)
    request = ModelRequest(prompt="define a cache", task_id="c1", agent_type="g", temperature=0.0)
    async with manager:
        first = await manager.complete(request)
        old = manager.registry.get_model(first.model_id)
        manager.registry.update_model(first.model_id, dataclasses.replace(old, enabled=False))
        again = await manager.complete(request)
    assert again.model_id != first.model_id
    assert sim.request_count(first.model_id) == 1 and sim.request_count(again.model_id) == 1


async def test_rate_limit_headroom_is_what_the_selector_scores(build_manager):
    manager, _, _ = build_manager({"m": FAST}, [model_entry("m", rpm=100)])
    limiter = manager.rate_limiter
    assert limiter.headroom("m") == 1.0
    async with manager:
        for i in range(9):
            await manager.complete(ModelRequest(prompt=f"q{i}", task_id=f"h{i}", agent_type="g"))
    assert limiter.headroom("m") == pytest.approx(1 - 9 / 90, abs=0.02)  # 90 % line: 90 admitted


async def test_metadata_reaches_the_spans_and_the_session_groups_them(build_manager):
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    from telemetry.recorder import Recorder

    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    manager, _, _ = trio(build_manager, recorder=Recorder(tracer_provider=tracer))

    @managed_model(agent_type="chat", manager=manager)
    async def agent(*, llm: Any) -> Any:
        return await llm.complete("hello", metadata={"session_id": "s-9", "tenant": "acme"})

    async with manager:
        await agent()
        await manager.complete(ModelRequest(prompt="direct", task_id="d", agent_type="g",
                                            metadata={"user.id": "u-1"}))
    by_name = {}
    for span in spans.get_finished_spans():
        by_name.setdefault(span.name, []).append(span)
    chat_agent, direct = by_name["invoke_agent chat"][0], by_name["invoke_agent g"][0]
    assert chat_agent.attributes["amm.metadata.tenant"] == "acme"
    assert chat_agent.attributes["session.id"] == "s-9"
    assert direct.attributes["user.id"] == "u-1"
    assert all(s.attributes.get("user.id") == "u-1" for s in spans.get_finished_spans()
               if s.context.trace_id == direct.context.trace_id)


def test_start_warms_litellm_in_the_background_so_the_first_call_does_not_import_it(tmp_path):
    import subprocess
    import sys

    code = f"""
import asyncio, json, sys
from amm.manager import ModelManager
from pathlib import Path
config = Path({str(tmp_path)!r}) / "r.json"
config.write_text(json.dumps({{"models": [{{"id": "m", "provider": "ollama", "name": "m",
    "api_base": "http://127.0.0.1:9", "capabilities": ["text-generation"],
    "cost_per_1k_input_tokens": 0, "cost_per_1k_output_tokens": 0,
    "rate_limits": {{"requests_per_minute": 10, "tokens_per_minute": 1000}},
    "context_window": 1000, "average_response_time_ms": 10}}]}}))
async def main():
    manager = ModelManager.from_config(config, data_dir={str(tmp_path / "d")!r},
                                       telemetry=False, start_health_checks=False)
    before = "litellm" in sys.modules
    async with manager:
        ready = await manager.warmed(timeout_s=60)
        print(json.dumps([before, ready, "litellm" in sys.modules,
                          "litellm.proxy._types" in sys.modules]))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, timeout=120,
                         env={**__import__("os").environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"})
    # Not loaded by building the manager; loaded, lazily imported modules included, once
    # start() has warmed it.
    assert json.loads(out.stdout.strip().splitlines()[-1]) == [False, True, True, True]
