"""@managed_model on async and sync functions, methods, nested agents, each constraint."""

from __future__ import annotations

import inspect

import pytest

import amm
from amm import managed_model
from amm.errors import BudgetExceededError, InvalidRequestError
from amm.sim import ModelProfile
from telemetry.events import AttemptEvent, SelectionEvent
from tests.fixtures_manager import model_entry

GOOD = ModelProfile(latency_ms=1, quality=1.0)


@pytest.fixture
def trio(build_manager):
    """Three models that differ in provider, price, latency and capabilities."""
    return build_manager(
        {"oa-cheap": GOOD, "an-smart": GOOD, "local": GOOD},
        [model_entry("oa-cheap", cost_in=0.0002, cost_out=0.0004, latency_ms=900,
                     capabilities=["text-generation", "code-generation"]),
         model_entry("an-smart", provider="anthropic", cost_in=0.003, cost_out=0.015,
                     latency_ms=300, capabilities=["text-generation", "code-generation",
                                                   "analysis", "reasoning"]),
         model_entry("local", provider="ollama", cost_in=0.0, cost_out=0.0, latency_ms=4000,
                     capabilities=["text-generation"])],
    )


async def test_async_agent_gets_an_llm_bound_to_its_agent_type_and_task(trio):
    manager, _, log = trio

    @managed_model(agent_type="implementation", capabilities=["code-generation"], manager=manager)
    async def implement(spec: str, *, llm) -> str:
        """Implement a spec."""
        assert llm.agent_type == "implementation" and llm.task_id == "task-7"
        reply = await llm.complete(f"Implement: {spec}", max_tokens=100)
        return reply.content

    async with manager:
        out = await implement("a stack", task_id="task-7")
    assert out
    selection = log.of(SelectionEvent)[0]
    assert selection.agent_type == "implementation" and selection.task_id == "task-7"
    assert selection.chosen in {"oa-cheap", "an-smart"}  # both have code-generation


async def test_decorator_keeps_name_docstring_and_signature(trio):
    manager, _, _ = trio

    @managed_model(agent_type="x", manager=manager)
    async def planner(goal: str, depth: int = 2, *, llm) -> str:
        """Plan a goal."""
        return goal

    assert planner.__name__ == "planner"
    assert planner.__doc__ == "Plan a goal."
    assert list(inspect.signature(planner).parameters) == ["goal", "depth", "llm"]


def test_function_without_llm_parameter_is_rejected_at_decoration():
    with pytest.raises(InvalidRequestError, match="llm"):
        @managed_model(agent_type="x")
        async def no_llm(goal: str) -> str:
            return goal


def test_bad_constraints_are_rejected_at_decoration():
    with pytest.raises(InvalidRequestError, match="max_cost_per_request"):
        managed_model(agent_type="x", max_cost_per_request=-1)
    with pytest.raises(InvalidRequestError, match="priority"):
        managed_model(agent_type="x", priority="urgent")


def test_sync_agent_gets_a_blocking_llm(trio):
    manager, _, _ = trio

    @managed_model(agent_type="review", manager=manager)
    def review(code: str, *, llm) -> str:
        return llm.complete(f"Review: {code}", max_tokens=50).content

    try:
        assert review("def f(): pass")
    finally:
        manager.close()
    assert manager.health_checker.running is False


async def test_methods_can_be_agents(trio):
    manager, _, log = trio

    class Team:
        def __init__(self, name: str) -> None:
            self.name = name

        @managed_model(agent_type="research", manager=manager)
        async def research(self, topic: str, *, llm) -> str:
            return (await llm.complete(f"{self.name} researches {topic}", max_tokens=50)).content

    async with manager:
        assert await Team("blue").research("caches")
    assert log.of(SelectionEvent)[0].agent_type == "research"


async def test_nested_agents_each_select_under_their_own_agent_type(trio):
    manager, _, log = trio

    @managed_model(agent_type="review", manager=manager)
    async def review(code: str, *, llm) -> str:
        return (await llm.complete(f"Review: {code}", max_tokens=50)).content

    @managed_model(agent_type="implementation", manager=manager)
    async def implement(spec: str, *, llm) -> str:
        code = (await llm.complete(f"Implement {spec}", max_tokens=50)).content
        return await review(code, task_id=llm.task_id)

    async with manager:
        assert await implement("a queue", task_id="t-nest")
    assert [s.agent_type for s in log.of(SelectionEvent)] == ["implementation", "review"]
    assert {s.task_id for s in log.of(SelectionEvent)} == {"t-nest"}


@pytest.mark.parametrize(
    ("constraint", "allowed"),
    [
        ({"capabilities": ["reasoning"]}, {"an-smart"}),
        ({"excluded_providers": ["openai", "anthropic"]}, {"local"}),
        ({"max_cost_per_request": 0.0001}, {"local"}),
        ({"max_latency_ms": 500}, {"an-smart"}),
    ],
)
async def test_each_constraint_limits_the_models_chosen(trio, constraint, allowed):
    manager, _, log = trio

    @managed_model(agent_type="general", manager=manager, **constraint)
    async def agent(q: str, *, llm) -> str:
        return (await llm.complete(q, max_tokens=50)).content

    async with manager:
        for i in range(3):
            await agent(f"question {i}")
    chosen = {a.model_id for a in log.of(AttemptEvent)}
    assert chosen <= allowed and chosen


async def test_priority_reaches_the_request(trio):
    manager, _, _ = trio
    seen = []

    @managed_model(agent_type="general", priority="high", manager=manager)
    async def agent(q: str, *, llm) -> str:
        seen.append(llm.request(q).effective_priority)
        return q

    await agent("q")
    assert seen == [amm.Priority.HIGH]


async def test_budget_refusal_reaches_the_caller_as_a_typed_error(build_manager):
    manager, _, _ = build_manager({"m": GOOD}, [model_entry("m", cost_in=1.0, cost_out=1.0)],
                                  daily_budget=0.001)

    @managed_model(agent_type="general", manager=manager)
    async def agent(q: str, *, llm) -> str:
        return (await llm.complete(q, max_tokens=50)).content

    async with manager:
        await manager.cost_tracker.record_cost("m", "general", 1, 1, 0.002, "earlier")
        with pytest.raises(BudgetExceededError):
            await agent("second")


async def test_budget_downgrade_routes_the_agent_to_the_cheapest_model(build_manager):
    manager, _, log = build_manager(
        {"dear": GOOD, "cheap": GOOD},
        [model_entry("dear", cost_in=0.5, cost_out=0.5, latency_ms=10,
                     capabilities=["text-generation", "reasoning", "analysis"]),
         model_entry("cheap", cost_in=0.00001, cost_out=0.00001, latency_ms=3000)],
        daily_budget=0.001, budget_policy="downgrade",
    )

    @managed_model(agent_type="general", manager=manager)
    async def agent(q: str, *, llm) -> str:
        return (await llm.complete(q, max_tokens=50)).content

    async with manager:
        await manager.cost_tracker.record_cost("dear", "general", 1, 1, 1.0, "earlier")
        await agent("after the budget is gone")
    assert [a.model_id for a in log.of(AttemptEvent)] == ["cheap"]


async def test_default_manager_comes_from_configure(trio):
    manager, _, _ = trio
    amm.configure(manager)
    try:
        @managed_model(agent_type="general")
        async def agent(q: str, *, llm) -> str:
            return (await llm.complete(q, max_tokens=20)).content

        async with manager:
            assert await agent("hello")
    finally:
        import amm.decorator as dec

        dec._default_manager = None
