"""ModelManager over the simulator: the whole request path, real HTTP, real SQLite."""

from __future__ import annotations

import asyncio
import sqlite3

import pytest

from amm.errors import BudgetExceededError, FailoverError
from amm.manager import BudgetPolicy
from amm.models import ModelRequest, SelectionConstraints
from amm.sim import ModelProfile
from telemetry.events import (
    AttemptEvent,
    CacheEvent,
    FailoverEvent,
    ModelDemotedEvent,
    SelectionEvent,
)
from tests.fixtures_manager import model_entry

GOOD = ModelProfile(latency_ms=1, quality=1.0)


def request(i: int = 0, *, agent: str = "implementation", temperature: float = 0.7,
            prompt: str | None = None) -> ModelRequest:
    return ModelRequest(
        prompt=prompt or f"Write a Python function that adds two numbers (case {i}).",
        parameters={"temperature": temperature}, task_id=f"task-{i}", agent_type=agent,
        max_tokens=120,
    )


def ledger(manager) -> tuple[int, int, float]:
    manager.cost_tracker.flush()
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        row = conn.execute("SELECT COALESCE(SUM(input_tokens),0), COALESCE(SUM(output_tokens),0),"
                           " COALESCE(SUM(cost_usd),0) FROM amm_cost_ledger").fetchone()
    return int(row[0]), int(row[1]), float(row[2])


async def test_complete_returns_a_response_and_books_exactly_the_billed_tokens(build_manager):
    manager, sim, log = build_manager(
        {"cheap": GOOD, "pricey": GOOD},
        [model_entry("cheap", cost_in=0.0005, cost_out=0.001),
         model_entry("pricey", cost_in=0.01, cost_out=0.03)],
    )
    async with manager:
        responses = [await manager.complete(request(i)) for i in range(5)]
    assert all(r.content for r in responses)
    assert {r.model_id for r in responses} == {"cheap"}  # same capability, far cheaper
    billed_in = sum(i for i, _ in sim.billed().values())
    billed_out = sum(o for _, o in sim.billed().values())
    tokens_in, tokens_out, cost = ledger(manager)
    assert (tokens_in, tokens_out) == (billed_in, billed_out)
    assert cost == pytest.approx(sum(r.cost for r in responses))
    assert len(log.of(SelectionEvent)) == 5


async def test_a_failing_model_fails_over_to_another_and_says_why(build_manager):
    manager, _, log = build_manager(
        {"broken": ModelProfile(error_rate=1.0, latency_ms=1), "backup": GOOD},
        [model_entry("broken", cost_in=0.0001, cost_out=0.0001), model_entry("backup")],
    )
    async with manager:
        response = await manager.complete(request())
    assert response.model_id == "backup"
    failovers = log.of(FailoverEvent)
    assert [(f.from_model, f.to_model) for f in failovers] == [("broken", "backup")]
    failed = [a for a in log.of(AttemptEvent) if not a.success]
    assert failed and all(a.model_id == "broken" for a in failed)


async def test_when_every_model_fails_the_error_lists_each_model_and_reason(build_manager):
    manager, _, _ = build_manager(
        {"a": ModelProfile(error_rate=1.0), "b": ModelProfile(forbidden=True)},
        [model_entry("a"), model_entry("b")],
    )
    async with manager:
        with pytest.raises(FailoverError) as info:
            await manager.complete(request())
    err = info.value
    assert set(err.attempted_models) == {"a", "b"}
    assert set(err.failure_reasons) == {"a", "b"}
    assert err.task_id == "task-0"


async def test_identical_deterministic_request_is_served_from_cache_without_http(build_manager):
    manager, sim, log = build_manager({"m": GOOD}, [model_entry("m")])
    async with manager:
        first = await manager.complete(request(temperature=0.0, prompt="Explain recursion."))
        sent = sim.request_count()
        second = await manager.complete(request(temperature=0.0, prompt="Explain recursion."))
    assert sim.request_count() == sent
    assert second.content == first.content
    assert second.metadata.get("cache_hit") is True
    assert second.cost == 0.0
    assert [e.hit for e in log.of(CacheEvent)] == [False, True]


async def test_over_budget_refuses_with_budget_exceeded(build_manager):
    manager, sim, _ = build_manager({"m": GOOD}, [model_entry("m", cost_in=1.0, cost_out=1.0)],
                                    daily_budget=0.01, budget_policy=BudgetPolicy.REFUSE)
    async with manager:
        await manager.cost_tracker.record_cost("m", "implementation", 10, 10, 1.0, "seed")
        with pytest.raises(BudgetExceededError):
            await manager.complete(request(2))
    assert sim.request_count("m") == 0


async def test_a_call_whose_estimated_cost_would_pass_the_budget_is_refused_before_sending(
        build_manager):
    manager, sim, _ = build_manager({"m": GOOD}, [model_entry("m", cost_in=1.0, cost_out=1.0)],
                                    daily_budget=0.01, budget_policy=BudgetPolicy.REFUSE)
    async with manager:
        with pytest.raises(BudgetExceededError) as info:
            await manager.complete(request(1))  # 120 output tokens at $1/1k: $0.12 > $0.01
    assert sim.request_count("m") == 0 and info.value.task_id == "task-1"
    assert manager.cost_tracker.reserved() == 0.0


async def test_concurrent_calls_never_overshoot_the_budget(build_manager):
    manager, _, _ = build_manager({"m": ModelProfile(latency_ms=20)},
                                  [model_entry("m", cost_in=0.1, cost_out=0.1)],
                                  daily_budget=0.05, budget_policy=BudgetPolicy.REFUSE)
    async with manager:
        results = await asyncio.gather(*(manager.complete(request(i)) for i in range(32)),
                                       return_exceptions=True)
    served = [r for r in results if not isinstance(r, BaseException)]
    refused = [r for r in results if isinstance(r, BudgetExceededError)]
    assert served and refused and len(served) + len(refused) == 32
    assert manager.cost_tracker.current_spend() <= 0.05
    assert manager.cost_tracker.reserved() == 0.0


async def test_over_budget_downgrades_to_the_cheapest_model_that_fits(build_manager):
    manager, _, _ = build_manager(
        {"fast": ModelProfile(latency_ms=1), "cheap": ModelProfile(latency_ms=1)},
        [model_entry("fast", cost_in=1.0, cost_out=1.0, latency_ms=100,
                      capabilities=["code-generation", "reasoning", "analysis"]),
         model_entry("cheap", cost_in=0.0001, cost_out=0.0001, latency_ms=5000,
                     capabilities=["code-generation"])],
        daily_budget=0.01, budget_policy="downgrade",
    )
    constraints = SelectionConstraints(required_capabilities=["code-generation"])
    async with manager:
        manager.cost_tracker.record_cost  # noqa: B018 - the tracker is real
        await manager.cost_tracker.record_cost("fast", "implementation", 10, 10, 1.0, "seed")
        response = await manager.complete(request(), constraints)
    assert response.model_id == "cheap"


async def test_low_quality_over_the_window_demotes_the_model_for_that_agent(build_manager):
    manager, _, log = build_manager(
        {"sloppy": ModelProfile(quality=0.0, latency_ms=1), "careful": ModelProfile(quality=1.0)},
        [model_entry("sloppy", cost_in=0.0001, cost_out=0.0001), model_entry("careful")],
        evaluation_window=3,
    )
    async with manager:
        models = [(await manager.complete(request(i))).model_id for i in range(8)]
    demoted = log.of(ModelDemotedEvent)
    assert demoted and demoted[0].model_id == "sloppy"
    assert demoted[0].agent_type == "implementation"
    assert models[0] == "sloppy" and models[-1] == "careful"


async def test_concurrent_requests_never_exceed_a_models_local_rate_limit(build_manager):
    manager, sim, _ = build_manager(
        {"limited": GOOD, "open": GOOD},
        [model_entry("limited", cost_in=0.0001, cost_out=0.0001, rpm=20),
         model_entry("open", cost_in=0.001, cost_out=0.002)],
    )
    async with manager:
        results = await asyncio.gather(*(manager.complete(request(i)) for i in range(60)))
    assert len(results) == 60
    assert sim.request_count("limited") <= 18  # 90% of 20 requests per minute
    tokens_in, tokens_out, _ = ledger(manager)
    billed = sim.billed()
    assert (tokens_in, tokens_out) == (sum(i for i, _ in billed.values()),
                                       sum(o for _, o in billed.values()))
