"""Micro-benchmarks: selection over large registries, a cache hit, the recorder, ``import amm``.

Each returns plain numbers (microseconds or milliseconds) for the report.
"""

from __future__ import annotations

import gc
import statistics
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path as FsPath
from typing import Any

from benchmarks.amm_env import AGENT_TYPE, AmmBench
from benchmarks.paths import MAX_TOKENS, prompt
from benchmarks.stats import percentile

__all__ = [
    "bench_cache_hit",
    "bench_import_amm",
    "bench_recorder",
    "bench_reservation",
    "bench_select_model",
    "synthetic_models",
    "time_async",
]

_REPO_ROOT = FsPath(__file__).resolve().parents[1]
_PROVIDERS = ("openai", "anthropic", "google", "ollama")
_CAPABILITY_SETS = (
    ["text-generation", "summarization"],
    ["text-generation", "code-generation", "analysis"],
    ["text-generation", "reasoning", "analysis"],
    ["code-generation"],  # no text-generation: filtered out by the benchmark's request
)


async def time_async(fn: Callable[[], Awaitable[Any]], *, iterations: int,
                     warmup: int = 50) -> dict[str, float]:
    """p50/p99/mean in microseconds of ``await fn()`` over ``iterations`` runs."""
    for _ in range(warmup):
        await fn()
    gc.collect()
    samples: list[float] = []
    for _ in range(iterations):
        start = time.perf_counter()
        await fn()
        samples.append((time.perf_counter() - start) * 1e6)
    return _summary_us(samples, iterations)


def _summary_us(samples: list[float], iterations: int) -> dict[str, float]:
    """p50/p99/mean of ``samples`` (microseconds; sorts them in place)."""
    samples.sort()
    return {"p50_us": round(percentile(samples, 50), 2),
            "p99_us": round(percentile(samples, 99), 2),
            "mean_us": round(sum(samples) / len(samples), 2), "iterations": iterations}


async def _time_inner(fn: Callable[[], Awaitable[tuple[int, int]]], *, iterations: int,
                      warmup: int) -> dict[str, float]:
    """Like :func:`time_async`, for an ``fn`` that times its own step: it returns (the
    step's ns, the whole call's ns); p50/p99/mean of the step, p50 of the whole call."""
    for _ in range(warmup):
        await fn()
    gc.collect()
    inner: list[float] = []
    outer: list[float] = []
    for _ in range(iterations):
        step_ns, call_ns = await fn()
        inner.append(step_ns / 1000.0)
        outer.append(call_ns / 1000.0)
    outer.sort()
    return {**_summary_us(inner, iterations),
            "with_caller_p50_us": round(percentile(outer, 50), 2)}


def synthetic_models(count: int) -> list[Any]:
    """``count`` varied models (four providers, four capability sets, every tenth disabled)."""
    from amm.models import ModelMetadata, RateLimits

    return [ModelMetadata(
        id=f"model-{n:04d}", provider=_PROVIDERS[n % 4], name=f"Model {n}",
        capabilities=list(_CAPABILITY_SETS[(n // 4) % 4]),
        cost_per_1k_input_tokens=0.0001 * (1 + n % 37),
        cost_per_1k_output_tokens=0.0003 * (1 + n % 41),
        rate_limits=RateLimits(requests_per_minute=10_000, tokens_per_minute=10_000_000),
        context_window=8192 * (1 + n % 16), average_response_time_ms=300.0 + 17 * (n % 53),
        enabled=n % 10 != 9,
    ) for n in range(count)]


async def bench_select_model(bench: AmmBench, sizes: tuple[int, ...], *,
                             iterations: dict[int, int]) -> dict[str, Any]:
    """``select_model`` over registries of each size, wired like the manager wires it.

    The selector gets real components built on the synthetic registry and the
    manager's real recorder (so each selection also builds its ``amm.select`` span);
    a second measurement with no event sink isolates selection itself.

    ``_softmax_traffic`` is the exploring policy again after every model has had traffic
    (:func:`_traffic`): the state a running service selects in, where each candidate's
    statistics and rate window are real reads rather than "nothing observed".

    Each call runs as the manager runs it, inside its own ``invoke_agent`` span, and
    ``p50_us``/``p99_us``/``mean_us`` time the ``select_model`` call alone: building the
    request and opening and ending the agent span are the caller's, the same whatever
    the selector does. ``with_caller_p50_us`` is the whole iteration (request, agent
    span and selection: what these rows measured before, about 35 us more).
    """
    from amm.health_checker import HealthChecker
    from amm.models import ModelRequest, SelectionConstraints
    from amm.performance_monitor import PerformanceMonitor
    from amm.rate_limiter import RateLimiter
    from amm.registry import ModelRegistry
    from amm.selector import ModelSelector

    recorder = bench.manager.recorder
    constraints = SelectionConstraints(required_capabilities=["text-generation"])
    out: dict[str, Any] = {}
    for size in sizes:
        registry = ModelRegistry.from_models(synthetic_models(size))
        health = HealthChecker(registry)
        limiter = RateLimiter(registry)
        perf = PerformanceMonitor(bench.data_dir / f"select-{size}.db")
        try:
            # The exploring policy (softmax with a floor) chooses among the same scores.
            softmax = {"kind": "softmax", "temperature": 0.1, "floor": 0.01, "seed": 7}
            for label, events, policy in (("", recorder, None), ("_no_events", None, None),
                                          ("_softmax", recorder, softmax),
                                          ("_softmax_traffic", recorder, softmax)):
                kwargs: dict[str, Any] = {"events": events} if events is not None else {}
                if policy is not None:
                    kwargs["policy"] = policy
                if label == "_softmax_traffic":  # as after a minute of traffic
                    _traffic(registry, perf, limiter)
                selector = ModelSelector(registry, health, limiter, perf, **kwargs)
                counter = iter(range(10**9))

                async def once(selector: Any = selector, counter: Any = counter,
                               size: int = size) -> tuple[int, int]:
                    clock = time.perf_counter_ns
                    began = clock()
                    n = next(counter)
                    request = ModelRequest(prompt=prompt(n), task_id=f"sel-{n}",
                                           agent_type=AGENT_TYPE, max_tokens=MAX_TOKENS)
                    with recorder.agent_span(AGENT_TYPE, request.task_id):
                        start = clock()
                        selection = await selector.select_model(request, AGENT_TYPE, constraints)
                        took = clock() - start
                    if selection is None:
                        raise RuntimeError(f"no model selected among {size}")
                    return took, clock() - began

                out[f"select_model_{size}{label}"] = await _time_inner(
                    once, iterations=iterations[size], warmup=min(50, iterations[size]))
        finally:
            perf.close()
    return out


def _traffic(registry: Any, perf: Any, limiter: Any) -> None:
    """Give every model what a minute of traffic leaves: measured statistics for the
    benchmark's agent type (40 attempts, 40 quality scores) and a rate-limit window with
    20 settled requests, so selection reads real snapshots and windows, not the priors."""
    import random

    from telemetry.events import AttemptEvent, QualityEvent

    rng = random.Random(7)
    for model in registry.models():
        for k in range(40):
            perf.record(AttemptEvent(model.id, model.provider, AGENT_TYPE, f"warm-{k}", 1,
                                     200.0 + rng.random() * 300.0, rng.random() < 0.95,
                                     100, 50, 0.001))
            q = 0.5 + rng.random() / 2
            perf.record(QualityEvent(model.id, AGENT_TYPE, f"warm-{k}", q, q, q, q))
        for _ in range(20):
            reservation = limiter.acquire(model.id, 300)
            if reservation is not None:
                reservation.settle(250)
    perf.flush()  # its rows written now, not by the store's thread while selection is timed
    gc.collect()


async def bench_cache_hit(bench: AmmBench, *, iterations: int) -> dict[str, Any]:
    """``llm.complete`` answered from the cache, inside one ``@managed_model`` agent call."""
    from opentelemetry import trace

    from amm.decorator import managed_model

    result: dict[str, Any] = {}
    traces: list[int] = []

    @managed_model(agent_type=AGENT_TYPE, manager=bench.manager)
    async def repeat(*, llm: Any) -> None:
        traces.append(trace.get_current_span().get_span_context().trace_id)
        text = "What is the capital of France? Answer in one word."
        first = await llm.complete(text, max_tokens=MAX_TOKENS, temperature=0.0)  # fills the cache

        async def hit() -> None:
            reply = await llm.complete(text, max_tokens=MAX_TOKENS, temperature=0.0)
            if reply.content != first.content or not reply.metadata.get("cache_hit"):
                raise RuntimeError("the benchmark's cache hit was not a hit")

        result.update(await time_async(hit, iterations=iterations))

    await repeat()
    # Provider attempts in this agent call's trace (``chat`` spans), less the fill: not a
    # count over all traces, where other sections' spans still ending would show up.
    calls = bench.spans.chat_by_trace[traces[0]]
    if calls < 1:
        raise RuntimeError("the cache fill's chat span was not seen: nothing to count against")
    result["provider_calls_during_hits"] = calls - 1
    return result


async def bench_recorder(bench: AmmBench, *, iterations: int) -> dict[str, Any]:
    """What recording one request costs: replay the events of one real call.

    The events of a real ``complete`` are captured, then replayed inside an agent
    span through (a) the manager's recorder (spans, metrics and every listener:
    ledger, performance monitor, health, rate limiter) and (b) a recorder with
    spans and metrics only.
    """
    from amm.models import ModelRequest

    captured: list[Any] = []

    class Capture:
        """Keeps the events of one call; off afterwards (the recorder has no remove)."""

        active = True

        def record(self, event: Any) -> None:
            if self.active:
                captured.append(event)

    recorder = bench.manager.recorder
    capture = Capture()
    recorder.add_listener(capture)
    n = 10**8  # outside the runner's prompt numbers
    await bench.manager.complete(ModelRequest(prompt=prompt(n), task_id="rec-capture",
                                              agent_type=AGENT_TYPE, max_tokens=MAX_TOKENS,
                                              temperature=0.0))
    capture.active = False
    events = tuple(captured)
    spans_only = bench.manager.telemetry.recorder()
    out: dict[str, Any] = {"events_per_request": len(events),
                           "event_types": sorted({type(e).__name__ for e in events})}
    for label, rec in (("recorder_full", recorder), ("recorder_spans_metrics_only", spans_only)):
        async def replay(rec: Any = rec) -> None:
            with rec.agent_span(AGENT_TYPE, "rec-replay"):
                for event in events:
                    rec.record(event)

        out[label] = await time_async(replay, iterations=iterations)
    return out


def bench_reservation(bench: AmmBench, *, iterations: int) -> dict[str, Any]:
    """What the budget reservation costs per call: ``CostTracker.reserve`` + ``settle``
    on the manager's own tracker (the manager does both once per attempt)."""
    tracker = bench.manager.cost_tracker
    estimate = 0.0001
    for _ in range(min(200, iterations)):
        tracker.reserve(estimate).settle(estimate)
    gc.collect()
    samples: list[float] = []
    clock = time.perf_counter
    for _ in range(iterations):
        start = clock()
        tracker.reserve(estimate).settle(estimate)
        samples.append((clock() - start) * 1e6)
    return _summary_us(samples, iterations)


def bench_import_amm(*, runs: int = 5) -> dict[str, Any]:
    """``import amm`` in a fresh interpreter, median of ``runs`` (seconds -> ms)."""
    code = "import time; t=time.perf_counter(); import amm; print(time.perf_counter()-t)"
    times = []
    for _ in range(runs):
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              cwd=_REPO_ROOT, check=True)
        times.append(float(done.stdout.strip()) * 1000.0)
    return {"median_ms": round(statistics.median(times), 2),
            "runs_ms": [round(t, 2) for t in times]}
