"""The whole SDK over the simulator, observed the way a user observes it: the span
tree, the metric points, the local store, the logs. Real HTTP, real SQLite, the
SDK's own in-memory exporter and metric reader; nothing of amm is mocked."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
from opentelemetry.trace import SpanKind, StatusCode

from amm.models import ModelRequest
from amm.sim import ModelProfile
from telemetry.recorder import Recorder
from telemetry.store import SpanStoreExporter
from tests.fixtures_manager import model_entry

SECRET = "sk-live-DO-NOT-LEAK-0123456789abcdefABCDEF"


def otel(tmp_path, sampler=None):
    spans = InMemorySpanExporter()
    tracer = TracerProvider(sampler=sampler) if sampler else TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    store = SpanStoreExporter(tmp_path / "spans.db")
    tracer.add_span_processor(SimpleSpanProcessor(store))
    reader = InMemoryMetricReader()
    meter = MeterProvider(metric_readers=[reader])
    return Recorder(tracer_provider=tracer, meter_provider=meter), spans, reader, store


def metric_points(reader: InMemoryMetricReader) -> dict[str, list[Any]]:
    points: dict[str, list[Any]] = {}
    data = reader.get_metrics_data()
    for rm in data.resource_metrics:
        for sm in rm.scope_metrics:
            for metric in sm.metrics:
                points.setdefault(metric.name, []).extend(metric.data.data_points)
    return points


async def test_a_request_that_fails_over_once_is_one_span_tree_with_every_named_attribute(
        tmp_path, build_manager):
    recorder, spans, reader, _ = otel(tmp_path)
    manager, _, _ = build_manager(
        {"first": ModelProfile(error_rate=1.0, latency_ms=1),
         "second": ModelProfile(latency_ms=1, quality=1.0)},
        [model_entry("first", cost_in=0.0001, cost_out=0.0001),
         model_entry("second", provider="anthropic", cost_in=0.003, cost_out=0.015)],
        recorder=recorder,
    )
    request = ModelRequest(prompt="Explain what a hash map is.", parameters={"temperature": 0.0},
                           task_id="t-e2e", agent_type="research", max_tokens=150)
    async with manager:
        response = await manager.complete(request)
    assert response.model_id == "second"

    finished = spans.get_finished_spans()
    by_name = {}
    for s in finished:
        by_name.setdefault(s.name, []).append(s)
    root = by_name["invoke_agent research"][0]
    assert root.attributes["gen_ai.operation.name"] == "invoke_agent"
    assert root.attributes["gen_ai.agent.name"] == "research"
    assert root.attributes["amm.task_id"] == "t-e2e"
    assert root.attributes["amm.cache.hit"] is False
    children = [s for s in finished
                if s.parent is not None and s.parent.span_id == root.context.span_id]
    assert {s.name for s in children} >= {"amm.select", "chat first", "chat second", "amm.evaluate"}

    select = by_name["amm.select"][0]
    assert select.attributes["amm.selection.chosen"] == "first"
    assert select.attributes["amm.selection.propensity"] == 1.0
    candidates = json.loads(select.attributes["amm.selection.candidates"])
    assert [c["probability"] for c in candidates if c["model"] == "second"] == [0.0]
    assert "highest score" in select.attributes["amm.selection.reason"]

    failed, ok = by_name["chat first"][0], by_name["chat second"][0]
    assert failed.kind is SpanKind.CLIENT and ok.kind is SpanKind.CLIENT
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.attributes["error.type"] == "503"
    attrs = ok.attributes
    assert attrs["gen_ai.operation.name"] == "chat"
    assert attrs["gen_ai.provider.name"] == "anthropic"
    assert attrs["gen_ai.request.model"] == "second"
    assert attrs["gen_ai.response.model"] == "second"
    assert attrs["gen_ai.usage.input_tokens"] == response.token_usage.input_tokens
    assert attrs["gen_ai.usage.output_tokens"] == response.token_usage.output_tokens
    assert attrs["gen_ai.request.max_tokens"] == 150
    assert attrs["gen_ai.request.temperature"] == 0.0
    assert tuple(attrs["gen_ai.response.finish_reasons"]) == ("stop",)
    assert attrs["server.address"] == "127.0.0.1"
    assert attrs["amm.cost_usd"] == pytest.approx(response.cost)
    assert attrs["amm.cache.hit"] is False
    assert attrs["amm.attempt"] == 1
    evaluations = {
        e.attributes["gen_ai.evaluation.name"]: e.attributes["gen_ai.evaluation.score.value"]
        for e in ok.events if e.name == "gen_ai.evaluation.result"}
    assert set(evaluations) == {"overall", "completeness", "relevance", "coherence"}
    assert evaluations["overall"] == pytest.approx(response.metadata["quality"])
    failover = [e for e in root.events if e.name == "amm.failover"]
    assert [(e.attributes["amm.failover.from"], e.attributes["amm.failover.to"])
            for e in failover] == [("first", "second")]

    points = metric_points(reader)
    for name in ("gen_ai.client.operation.duration", "gen_ai.client.token.usage", "amm.cost",
                 "amm.failovers", "amm.cache.requests", "amm.quality.score"):
        assert points.get(name), f"no points for {name}"
    tokens = {p.attributes["gen_ai.token.type"]: p.sum for p in points["gen_ai.client.token.usage"]}
    assert tokens == {"input": response.token_usage.input_tokens,
                      "output": response.token_usage.output_tokens}
    assert sum(p.value for p in points["amm.failovers"]) == 1
    assert sum(p.value for p in points["amm.cost"]) == pytest.approx(response.cost)


async def test_no_api_key_appears_in_any_span_metric_log_line_or_store_row(
        tmp_path, build_manager, caplog):
    from amm.api_key_manager import APIKeyManager

    recorder, spans, reader, _ = otel(tmp_path)
    caplog.set_level(logging.DEBUG)
    manager, _, _ = build_manager(
        {"guarded": ModelProfile(api_key="a-different-key"), "open": ModelProfile()},
        [model_entry("guarded", cost_in=0.00001, cost_out=0.00001),
         model_entry("open", provider="anthropic")],
        recorder=recorder,
    )
    keys = APIKeyManager()
    keys.add_key("openai", SECRET)  # rejected with 401 by "guarded", then disabled
    keys.add_key("anthropic", "sk-ant-other-key-0123456789abcdef")
    manager.api_client._keys = keys  # the secret is the only key the client holds
    async with manager:
        for i in range(3):  # 401 from "guarded", then failover to "open"
            await manager.complete(ModelRequest(prompt=f"question {i}", task_id=f"k{i}",
                                                agent_type="research", max_tokens=50))
    manager.flush()
    dumped = [json.dumps(dict(s.attributes), default=str) + json.dumps(
        [dict(e.attributes) for e in s.events], default=str) for s in spans.get_finished_spans()]
    dumped.append(reader.get_metrics_data().to_json())
    dumped += [r.getMessage() + str(r.exc_info) for r in caplog.records]
    for db in (tmp_path / "spans.db", tmp_path / "data" / "amm.db"):
        with sqlite3.connect(db) as conn:
            tables = [t for (t,) in
                      conn.execute("SELECT name FROM sqlite_master WHERE type='table'")]
            for table in tables:
                dumped += [repr(row) for row in conn.execute(f"SELECT * FROM {table}")]
    assert any("authentication" in d for d in dumped), "the 401 should have been recorded"
    assert not [d for d in dumped if SECRET in d or SECRET[:20] in d]
    assert SECRET not in repr(keys) and SECRET not in repr(manager.api_client)


async def test_selection_moves_away_from_a_model_that_got_slower_with_tracing_sampled_off(
        tmp_path, build_manager):
    recorder, spans, _, _ = otel(tmp_path, sampler=ALWAYS_OFF)
    manager, sim, _ = build_manager(
        {"a": ModelProfile(latency_ms=1), "b": ModelProfile(latency_ms=60)},
        [model_entry("a", latency_ms=500), model_entry("b", latency_ms=500)],
        recorder=recorder,
    )

    async def batch(start: int, n: int) -> list[str]:
        out = []
        for i in range(start, start + n):
            r = await manager.complete(ModelRequest(
                prompt=f"Explain how a hash map handles collisions (case {i}).",
                task_id=f"s{i}", agent_type="research", max_tokens=120))
            out.append(r.model_id)
        return out

    async with manager:
        # Both models are tried while the statistics warm up; "a" is measured faster.
        warm = await batch(0, 12)
        assert warm[-1] == "a"
        sim.set_profile("a", ModelProfile(latency_ms=250))  # "a" degrades
        await batch(12, 16)
        after = await batch(28, 6)
    assert spans.get_finished_spans() == ()  # nothing sampled, yet selection learned
    assert after.count("b") >= 5


async def test_two_hundred_concurrent_requests_lose_nothing_and_respect_the_limit(build_manager):
    manager, sim, _ = build_manager(
        {"limited": ModelProfile(latency_ms=2), "failing": ModelProfile(error_rate=1.0),
         "steady": ModelProfile(latency_ms=2)},
        [model_entry("limited", cost_in=0.00005, cost_out=0.00005, rpm=30),
         model_entry("failing", cost_in=0.00001, cost_out=0.00001),
         model_entry("steady", cost_in=0.001, cost_out=0.002)],
    )
    requests = [ModelRequest(prompt=f"task {i}: summarise the report", task_id=f"c{i}",
                             agent_type="research", max_tokens=40) for i in range(200)]
    async with manager:
        results = await asyncio.gather(*(manager.complete(r) for r in requests),
                                       return_exceptions=True)
    assert len(results) == 200
    assert all(not isinstance(r, BaseException) for r in results), [
        r for r in results if isinstance(r, BaseException)][:3]
    assert sim.request_count("limited") <= 27  # 90% of 30 per minute, never more
    assert sim.status_counts("limited").get(429, 0) == 0
    manager.cost_tracker.flush()
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        booked = dict(((m, (i, o)) for m, i, o in conn.execute(
            "SELECT model_id, SUM(input_tokens), SUM(output_tokens) FROM amm_cost_ledger"
            " GROUP BY model_id")))
    billed = {m: t for m, t in sim.billed().items() if t != (0, 0)}
    assert booked == billed


def test_two_managers_on_two_data_dirs_keep_their_spans_apart(tmp_path, make_simulator):
    import subprocess
    import sys
    import textwrap

    sim = make_simulator({"m": ModelProfile(latency_ms=1)})
    config = tmp_path / "registry.json"
    config.write_text(json.dumps({"models": [model_entry("m", api_base=sim.api_base("openai"))]}))
    script = textwrap.dedent(f"""
        import asyncio
        from amm import ModelManager, ModelRequest, APIKeyManager

        async def run(data_dir, agent):
            keys = APIKeyManager()
            keys.add_key("openai", "sk-two-stores-0123456789abcdef")
            m = ModelManager.from_config({str(config)!r}, data_dir=data_dir, key_manager=keys,
                                         start_health_checks=False)
            async with m:
                await m.complete(ModelRequest(prompt="Explain a queue.", task_id=agent,
                                              agent_type=agent, max_tokens=40))

        asyncio.run(run({str(tmp_path / "a")!r}, "alpha"))
        asyncio.run(run({str(tmp_path / "b")!r}, "beta"))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         timeout=120, cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    for store, mine, other in (("a", "alpha", "beta"), ("b", "beta", "alpha")):
        with sqlite3.connect(tmp_path / store / "amm.db") as conn:
            names = {n for (n,) in conn.execute("SELECT SpanName FROM otel_traces")}
        assert f"invoke_agent {mine}" in names, names
        assert f"invoke_agent {other}" not in names, names
