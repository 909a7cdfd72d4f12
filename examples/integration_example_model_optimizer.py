"""Seed "Integration with ModelOptimizer": the four integration-point snippets.

The seed's code (api-model-management-api.md, "Integration Points" 1-4) with the
import prefix changed. The one other import the seed makes,
``agentic_sdlc.orchestration.engine.model_optimizer.ModelOptimizer``, is the existing
system amm integrates with, not part of amm: the scaffold supplies a stand-in
(``_scaffold.ModelOptimizer``: a model per agent type from ``config/optimizer.json``,
and a list of the feedback it gets). Scaffolding also supplies ``optimizer``,
``response``, ``quality``, ``request``, the components, and the ``FailoverReason``
import; it calls the seed's ``make_request_with_integration`` once.

    python examples/integration_example_model_optimizer.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import ModelOptimizer, Workspace, run
from amm import FailoverReason

# ---- seed code: 1. Model Assignment Extension ---------------------------------------
from amm.model_optimizer_integration import (
    APIModelAssignment,
    integrate_with_model_optimizer
)


def model_assignment_extension():
    # Extended assignment with API details
    assignment = APIModelAssignment(
        model_id="gpt-4-turbo",
        agent_type="implementation",
        api_model_id="gpt-4-turbo",
        provider="openai",
        api_enabled=True
    )
    return assignment  # scaffolding: hand it to example()


# ---- seed code: 2. Performance Feedback ---------------------------------------------
from amm.model_optimizer_integration import (
    report_performance_to_optimizer
)


def performance_feedback(optimizer, response, quality):
    # Report performance after request
    report_performance_to_optimizer(
        model_optimizer=optimizer,
        model_id="gpt-4-turbo",
        agent_type="implementation",
        performance_data={
            "latency_ms": response.latency_ms,
            "success": True,
            "quality_score": quality.overall_score,
            "cost": response.cost
        }
    )


# ---- seed code: 3. Failover Coordination --------------------------------------------
from amm.model_optimizer_integration import (
    coordinate_failover
)


async def failover_coordination(optimizer, selector, request):
    # Coordinate failover with optimizer
    alternative = await coordinate_failover(
        model_optimizer=optimizer,
        api_selector=selector,
        failed_model="gpt-4-turbo",
        task=request,
        reason=FailoverReason.RATE_LIMITED
    )
    return alternative  # scaffolding: hand it to example()


# ---- seed code: 4. Complete Integration Example -------------------------------------
# (the seed: from agentic_sdlc.orchestration.engine.model_optimizer import ModelOptimizer)
from amm.model_optimizer_integration import (
    integrate_with_model_optimizer,
    select_model_with_optimizer
)


def complete_integration(registry, selector, health_checker, rate_limiter,
                         performance_monitor, cost_tracker, cache_manager, evaluator,
                         api_client, failover_manager):
    # Initialize ModelOptimizer (existing)
    model_optimizer = ModelOptimizer(config_path="config/optimizer.json")

    # Initialize API Model Management (new)
    api_components = {
        "registry": registry,
        "selector": selector,
        "health_checker": health_checker,
        "rate_limiter": rate_limiter,
        "performance_monitor": performance_monitor,
        "cost_tracker": cost_tracker,
        "cache_manager": cache_manager,
        "evaluator": evaluator,
        "api_client": api_client,
        "failover_manager": failover_manager
    }

    # Integrate systems
    integrate_with_model_optimizer(model_optimizer, api_components)

    # Use integrated selection
    async def make_request_with_integration(task, agent_type):
        # Select model (considers both optimizer and API availability)
        model_id = await select_model_with_optimizer(
            model_optimizer=model_optimizer,
            api_selector=selector,
            task=task,
            agent_type=agent_type
        )

        # Make request with API management
        response = await api_client.send_request(model_id, task)

        # Report back to optimizer
        report_performance_to_optimizer(
            model_optimizer=model_optimizer,
            model_id=model_id,
            agent_type=agent_type,
            performance_data={
                "latency_ms": response.latency_ms,
                "success": True,
                "cost": response.cost
            }
        )

        return response

    return model_optimizer, make_request_with_integration  # scaffolding: for example()


# ---- scaffolding (not in the seed) ---------------------------------------------------
COMPONENTS = ("registry", "selector", "health_checker", "rate_limiter", "performance_monitor",
              "cost_tracker", "cache_manager", "evaluator", "api_client", "failover_manager")


async def example(workdir: Path | None = None) -> None:
    """The four integration snippets in turn, printing what each produced."""
    async with Workspace(workdir=workdir) as ws:
        optimizer, response, quality, request = await ws.provide(
            "optimizer", "response", "quality", "request")
        assignment = model_assignment_extension()
        print(f"1. Assignment: {assignment.model_id} -> {assignment.registry_id} "
              f"({assignment.provider}, api_enabled={assignment.api_enabled})")

        performance_feedback(optimizer, response, quality)
        print(f"2. Optimizer feedback: {optimizer.feedback[-1][0]} "
              f"success={optimizer.feedback[-1][2]['success']}")

        selector = await ws.provide("selector")
        alternative = await failover_coordination(optimizer, selector, request)
        print(f"3. Failover from gpt-4-turbo coordinated to: {alternative}")

        components = await ws.provide(*COMPONENTS)
        model_optimizer, make_request_with_integration = complete_integration(*components)
        reply = await make_request_with_integration(request, "implementation")
        print(f"4. Integrated request answered by {reply.model_id}; optimizer feedback "
              f"entries: {len(model_optimizer.feedback)}")


if __name__ == "__main__":
    run(example)
