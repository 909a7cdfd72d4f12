"""Seed Example 6: Performance Monitoring.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``; ``request``,
``response`` and ``quality`` (gpt-4-turbo's answer and its evaluation, as Example 4
gets them) come from the scaffold.

    python examples/example_06_performance_monitoring.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run

# ---- seed code ---------------------------------------------------------------------
from amm import PerformanceMonitor


async def main(request, response, quality):
    # Initialize performance monitor
    performance_monitor = PerformanceMonitor(db_path=Path("data/performance.db"))

    # Record performance after request
    await performance_monitor.record_performance(
        model_id=response.model_id,
        agent_type="implementation",
        latency_ms=response.latency_ms,
        success=True,
        quality_score=quality.overall_score,
        task_id=request.task_id
    )

    # Get performance metrics
    metrics = await performance_monitor.get_model_performance(
        model_id="gpt-4-turbo",
        window_hours=24
    )

    print(f"Total requests: {metrics.total_requests}")
    print(f"Success rate: {metrics.success_rate:.1f}%")
    print(f"Average latency: {metrics.average_latency_ms:.0f}ms")
    print(f"P95 latency: {metrics.p95_latency_ms:.0f}ms")
    print(f"Average quality: {metrics.average_quality_score:.2f}")

    # Detect performance degradation
    degradation = await performance_monitor.detect_degradation(
        model_id="gpt-4-turbo",
        threshold=0.8
    )

    if degradation:
        print(f"ALERT: Performance degradation detected")
        print(f"Metric: {degradation.metric}")
        print(f"Current: {degradation.current_value:.2f}")
        print(f"Threshold: {degradation.threshold:.2f}")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet after one evaluated request to gpt-4-turbo."""
    async with Workspace(workdir=workdir) as ws:
        request, response, quality = await ws.provide("request", "response", "quality")
        await main(request, response, quality)


if __name__ == "__main__":
    run(example)
