"""Seed Example 8: Complete End-to-End Workflow.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``. Scaffolding:
the imports the snippet uses without making, and ``adapters`` (None: litellm serves
every provider).

    python examples/example_08_end_to_end_workflow.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run
from amm import (
    APIClientManager,
    APIKeyManager,
    CacheManager,
    CostTracker,
    FailoverManager,
    HealthChecker,
    ModelRegistry,
    ModelRequest,
    ModelSelector,
    PerformanceMonitor,
    RateLimiter,
    ResponseEvaluator,
)

adapters = None  # scaffolding: amm's APIClientManager uses litellm for every provider


# ---- seed code ---------------------------------------------------------------------
async def complete_workflow():
    """Complete workflow with all components."""

    # 1. Initialize all components
    config_path = Path("config/model_registry.json")
    db_path = Path("data/api_model_management.db")

    registry = ModelRegistry(config_path)
    registry.load_config()

    health_checker = HealthChecker(registry)
    await health_checker.start()

    rate_limiter = RateLimiter(registry)
    performance_monitor = PerformanceMonitor(db_path)
    cost_tracker = CostTracker(db_path, daily_budget=100.0)
    cache_manager = CacheManager(db_path)
    evaluator = ResponseEvaluator(quality_threshold=0.7)

    selector = ModelSelector(registry, health_checker, rate_limiter, performance_monitor)

    key_manager = APIKeyManager()
    key_manager.load_keys()

    api_client = APIClientManager(key_manager, adapters)

    failover_manager = FailoverManager(selector)

    # 2. Create request
    request = ModelRequest(
        prompt="Write a Python function to sort a list",
        parameters={"temperature": 0.7},
        task_id="task-123",
        agent_type="implementation",
        max_tokens=500
    )

    # 3. Check cache
    cache_key = cache_manager.generate_cache_key(request)
    cached = await cache_manager.get(cache_key)

    if cached:
        print("Using cached response")
        response = cached.response
    else:
        # 4. Select model
        selection = await selector.select_model(request, "implementation")
        print(f"Selected model: {selection.model_id}")

        # 5. Make request with failover
        async def make_request(model_id: str):
            return await api_client.send_request_with_retry(model_id, request)

        response = await failover_manager.execute_with_failover(
            primary_model=selection.model_id,
            task=request,
            request_func=make_request
        )

        # 6. Cache response
        await cache_manager.set(cache_key, response)

    # 7. Evaluate quality
    quality = await evaluator.evaluate_response(response, request)
    print(f"Quality score: {quality.overall_score:.2f}")

    # 8. Record metrics
    await cost_tracker.record_cost(
        model_id=response.model_id,
        agent_type="implementation",
        input_tokens=response.token_usage.input_tokens,
        output_tokens=response.token_usage.output_tokens,
        cost=response.cost,
        task_id=request.task_id
    )

    await performance_monitor.record_performance(
        model_id=response.model_id,
        agent_type="implementation",
        latency_ms=response.latency_ms,
        success=True,
        quality_score=quality.overall_score,
        task_id=request.task_id
    )

    # 9. Check budget
    budget = await cost_tracker.check_budget()
    if budget.utilization_percent > 80:
        print(f"WARNING: Budget at {budget.utilization_percent:.1f}%")

    # 10. Cleanup
    await health_checker.stop()

    return response


async def main():
    # Run workflow
    response = await complete_workflow()
    print(f"Final response: {response.content}")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's workflow in a simulator-backed working directory."""
    async with Workspace(workdir=workdir):
        await main()


if __name__ == "__main__":
    run(example)
