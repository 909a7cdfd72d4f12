"""Seed Example 11: Real-Time Monitoring Dashboard.

The seed's code (api-model-management-api.md, "Advanced Usage Examples") with only
the import prefix changed. Scaffolding: the module-level components the snippet reads
(built as the seed's "Component Initialization" builds them), one request to
gpt-4-turbo booked in the cost tracker and the performance monitor (as Examples 5
and 6 book it) so the dashboard has something to show, and an ``asyncio`` whose
``sleep`` ends the loop after its first round.

    python examples/example_11_monitoring_dashboard.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, one_round_asyncio, run

# scaffolding: the seed's loop sleeps 60 s between rounds forever; here its
# `await asyncio.sleep(60)` ends the loop after the first round.
asyncio = one_round_asyncio()
# scaffolding: set by example() before the seed's function runs
cost_tracker = registry = health_checker = rate_limiter = performance_monitor = None


# ---- seed code ---------------------------------------------------------------------
async def monitoring_dashboard():
    """Create real-time monitoring dashboard."""

    while True:
        # Get current status
        budget = await cost_tracker.check_budget()

        # Get performance for all models
        models = registry.get_models_by_provider("openai")

        print("\n" + "="*60)
        print("API Model Management Dashboard")
        print("="*60)

        # Budget status
        print(f"\nBudget Status:")
        print(f"  Daily Limit: ${budget.daily_budget:.2f}")
        print(f"  Current Spend: ${budget.current_spend:.2f}")
        print(f"  Utilization: {budget.utilization_percent:.1f}%")
        print(f"  Remaining: ${budget.remaining_budget:.2f}")

        # Model status
        print(f"\nModel Status:")
        for model in models:
            is_available = health_checker.is_model_available(model.id)
            is_rate_limited = rate_limiter.is_rate_limited(model.id)

            status = "✓ Available"
            if is_rate_limited:
                status = "⚠ Rate Limited"
            elif not is_available:
                status = "✗ Unavailable"

            print(f"  {model.name}: {status}")

        # Performance metrics
        print(f"\nPerformance (Last 24h):")
        for model in models:
            metrics = await performance_monitor.get_model_performance(
                model.id,
                window_hours=24
            )

            if metrics.total_requests > 0:
                print(f"  {model.name}:")
                print(f"    Requests: {metrics.total_requests}")
                print(f"    Success Rate: {metrics.success_rate:.1f}%")
                print(f"    Avg Latency: {metrics.average_latency_ms:.0f}ms")
                print(f"    Avg Quality: {metrics.average_quality_score:.2f}")

        # Wait before next update
        await asyncio.sleep(60)


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """One round of the seed's dashboard after one booked request."""
    global cost_tracker, registry, health_checker, rate_limiter, performance_monitor
    async with Workspace(workdir=workdir) as ws:
        cost_tracker, registry, health_checker, rate_limiter, performance_monitor = (
            await ws.provide("cost_tracker", "registry", "health_checker", "rate_limiter",
                             "performance_monitor"))
        request, response, quality = await ws.provide("request", "response", "quality")
        await cost_tracker.record_cost(
            model_id=response.model_id, agent_type=request.agent_type,
            input_tokens=response.token_usage.input_tokens,
            output_tokens=response.token_usage.output_tokens,
            cost=response.cost, task_id=request.task_id)
        await performance_monitor.record_performance(
            model_id=response.model_id, agent_type=request.agent_type,
            latency_ms=response.latency_ms, success=True,
            quality_score=quality.overall_score, task_id=request.task_id)
        try:
            await monitoring_dashboard()
        except asyncio.OneRound:
            print("\n(dashboard: one round shown; the seed's loop would refresh every 60 s)")


if __name__ == "__main__":
    run(example)
