"""Integration with an external ModelOptimizer (a small fake: the optimizer is not ours)."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from amm.errors import ConfigurationError, InvalidRequestError, ModelUnavailableError
from amm.model_optimizer_integration import (
    APIIntegration,
    APIModelAssignment,
    ModelOptimizer,
    coordinate_failover,
    integrate_with_model_optimizer,
    report_performance_to_optimizer,
    select_model_with_optimizer,
)
from amm.models import FailoverReason, ModelRequest
from amm.rate_limiter import RateLimiter
from amm.registry import ModelRegistry
from amm.selector import ModelSelector
from tests.routing_fakes import FakeHealth, FakeMonitor, make_model


class Optimizer:
    """The existing optimizer's surface: a proposal and a feedback method."""

    def __init__(self, proposal: str, assignment: Any = None) -> None:
        self.proposal = proposal
        self.assignment = assignment
        self.feedback: list[tuple[str, str, dict[str, Any]]] = []

    def select_model_for_agent(self, agent_type: str, task: Any) -> tuple[str, Any]:
        return self.proposal, self.assignment or {"agent_type": agent_type}

    def record_performance(self, model_id: str, agent_type: str, data: dict[str, Any]) -> None:
        self.feedback.append((model_id, agent_type, data))


class ProposalOnly:
    """An optimizer without any feedback method."""

    def select_model_for_agent(self, agent_type: str, task: Any) -> tuple[str, Any]:
        return "local-llm", None


TASK = ModelRequest(prompt="Implement a retry helper", task_id="t-1",
                    agent_type="implementation", max_tokens=200)


def api_selector(down=()):
    registry = ModelRegistry.from_models([
        make_model("cheap", cost_in=0.001, cost_out=0.002),
        make_model("dear", cost_in=0.01, cost_out=0.03),
    ])
    limiter = RateLimiter(registry)
    return ModelSelector(registry, FakeHealth(down), limiter, FakeMonitor()), limiter


def test_api_model_assignment_has_the_seed_fields_and_defaults():
    a = APIModelAssignment(model_id="gpt-4-turbo", agent_type="implementation",
                           api_model_id="gpt-4-turbo", provider="openai", api_enabled=True)
    assert (a.api_model_id, a.provider, a.api_enabled, a.registry_id) == (
        "gpt-4-turbo", "openai", True, "gpt-4-turbo")
    assert APIModelAssignment("opt-name", "review", api_model_id="cheap").registry_id == "cheap"
    assert isinstance(Optimizer("x"), ModelOptimizer)


def test_integrate_attaches_the_components_to_the_optimizer():
    selector, limiter = api_selector()
    optimizer = Optimizer("cheap")
    integration = integrate_with_model_optimizer(optimizer, {
        "registry": selector.registry, "selector": selector, "rate_limiter": limiter})
    assert isinstance(integration, APIIntegration)
    assert optimizer.api_integration is integration  # type: ignore[attr-defined]
    assert (integration.selector, integration.rate_limiter, integration.cost_tracker) == (
        selector, limiter, None)


def test_integrate_rejects_unknown_and_missing_components_and_attaches_nothing():
    selector, _ = api_selector()
    optimizer = Optimizer("cheap")
    with pytest.raises(ConfigurationError, match=r"unknown key.*router"):
        integrate_with_model_optimizer(optimizer, {"registry": selector.registry,
                                                   "selector": selector, "router": object()})
    with pytest.raises(ConfigurationError, match=r"missing required.*selector"):
        integrate_with_model_optimizer(optimizer, {"registry": selector.registry})
    with pytest.raises(ConfigurationError, match="select_model_for_agent"):
        integrate_with_model_optimizer(object(), {"registry": selector.registry,
                                                  "selector": selector})
    assert not hasattr(optimizer, "api_integration")


async def test_optimizer_choice_is_used_when_it_is_an_eligible_api_model():
    selector, _ = api_selector()
    assert await select_model_with_optimizer(Optimizer("dear"), selector, TASK,
                                             "implementation") == "dear"


async def test_assignment_api_model_id_maps_the_optimizer_name_to_the_registry():
    selector, _ = api_selector()
    optimizer = Optimizer("optimizer-name-for-dear",
                          APIModelAssignment("optimizer-name-for-dear", "implementation",
                                             api_model_id="dear"))
    assert await select_model_with_optimizer(optimizer, selector, TASK, "implementation") == "dear"


async def test_rate_limited_optimizer_choice_is_replaced_by_the_api_selector():
    selector, limiter = api_selector()
    limiter.provider_limited("dear", retry_after_s=30)
    assert await select_model_with_optimizer(Optimizer("dear"), selector, TASK,
                                             "implementation") == "cheap"


async def test_non_api_choice_stands_when_no_api_model_is_eligible():
    selector, _ = api_selector(down=["cheap", "dear"])
    assert await select_model_with_optimizer(ProposalOnly(), selector, TASK,
                                             "implementation") == "local-llm"


async def test_assignment_with_api_disabled_always_stands():
    selector, _ = api_selector()
    optimizer = Optimizer("local-llm", APIModelAssignment("local-llm", "implementation",
                                                          api_enabled=False))
    assert await select_model_with_optimizer(optimizer, selector, TASK,
                                             "implementation") == "local-llm"


async def test_ineligible_api_choice_with_no_api_alternative_is_a_typed_error():
    selector, _ = api_selector(down=["cheap", "dear"])
    with pytest.raises(ModelUnavailableError, match="optimizer proposed dear"):
        await select_model_with_optimizer(Optimizer("dear"), selector, TASK, "implementation")


async def test_malformed_optimizer_answer_is_a_typed_error():
    class Broken:
        def select_model_for_agent(self, agent_type: str, task: Any) -> Any:
            return "just-a-string"

    selector, _ = api_selector()
    with pytest.raises(InvalidRequestError, match="must return"):
        await select_model_with_optimizer(Broken(), selector, TASK, "implementation")


def test_performance_is_reported_to_the_optimizer_feedback_method():
    optimizer = Optimizer("cheap")
    data = {"latency_ms": 120.0, "success": True, "quality_score": 0.9, "cost": 0.002}
    assert report_performance_to_optimizer(optimizer, "cheap", "implementation", data)
    assert optimizer.feedback == [("cheap", "implementation", data)]


def test_reporting_to_an_optimizer_without_feedback_is_a_no_op(caplog):
    caplog.set_level(logging.DEBUG, logger="amm.model_optimizer_integration")
    assert not report_performance_to_optimizer(ProposalOnly(), "cheap", "review",
                                               {"success": True})
    assert "takes no performance feedback" in caplog.text


def test_an_older_feedback_method_name_is_used_when_present():
    class Older(ProposalOnly):
        def __init__(self) -> None:
            self.seen: list[str] = []

        def update_performance(self, model_id: str, agent_type: str, data: dict) -> None:
            self.seen.append(model_id)

    optimizer = Older()
    assert report_performance_to_optimizer(optimizer, "cheap", "review", {"success": True})
    assert optimizer.seen == ["cheap"]


def test_a_failing_feedback_method_never_fails_the_caller(caplog):
    class Raising(ProposalOnly):
        def record_performance(self, *args: Any) -> None:
            raise RuntimeError("optimizer store down")

    assert not report_performance_to_optimizer(Raising(), "cheap", "review", {"success": True})
    assert "feedback for cheap dropped" in caplog.text


@pytest.mark.parametrize("data", [{"latency_ms": "fast"}, {"success": "yes"}, [("cost", 1)]])
def test_malformed_performance_data_is_a_typed_error(data):
    optimizer = Optimizer("cheap")
    with pytest.raises(InvalidRequestError):
        report_performance_to_optimizer(optimizer, "cheap", "review", data)
    assert optimizer.feedback == []


async def test_coordinate_failover_takes_the_optimizers_other_eligible_model():
    selector, _ = api_selector()
    optimizer = Optimizer("dear")
    alternative = await coordinate_failover(optimizer, selector, "cheap", TASK,
                                            FailoverReason.RATE_LIMITED)
    assert alternative == "dear"
    assert optimizer.feedback == [("cheap", "implementation",
                                   {"success": False, "failover_reason": "rate_limited"})]


async def test_coordinate_failover_asks_the_selector_when_the_optimizer_repeats_the_failed_model():
    selector, _ = api_selector()
    assert await coordinate_failover(Optimizer("cheap"), selector, "cheap", TASK,
                                     "unavailable") == "dear"
    assert await coordinate_failover(Optimizer("dear"), api_selector(down=["dear"])[0], "cheap",
                                     TASK, FailoverReason.ERROR) is None


async def test_coordinate_failover_rejects_an_unknown_reason():
    selector, _ = api_selector()
    with pytest.raises(InvalidRequestError, match="FailoverReason"):
        await coordinate_failover(Optimizer("dear"), selector, "cheap", TASK, "gremlins")
