"""Seed Example 1: Basic Model Selection and Request.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. Scaffolding (not in the seed) is marked; it runs the seed's ``main()``
in a working directory whose ``config/model_registry.json`` points at the simulator.

    python examples/example_01_basic_selection.py [--workdir DIR]
"""

from _scaffold import Workspace, run  # scaffolding (first: it finds amm in a checkout)

# ---- seed code ---------------------------------------------------------------------
import asyncio  # noqa: F401  (the seed's; run() below calls asyncio.run)
from pathlib import Path
from amm import (
    ModelRequest,
    ModelRegistry,
    ModelSelector,
    HealthChecker,
    RateLimiter,
    PerformanceMonitor,
)

async def main():
    # Initialize components
    config_path = Path("config/model_registry.json")
    db_path = Path("data/api_model_management.db")

    registry = ModelRegistry(config_path)
    registry.load_config()

    health_checker = HealthChecker(registry)
    await health_checker.start()

    rate_limiter = RateLimiter(registry)
    performance_monitor = PerformanceMonitor(db_path)

    selector = ModelSelector(
        registry=registry,
        health_checker=health_checker,
        rate_limiter=rate_limiter,
        performance_monitor=performance_monitor
    )

    # Create request
    request = ModelRequest(
        prompt="Explain how async/await works in Python",
        parameters={"temperature": 0.7},
        task_id="task-001",
        agent_type="research",
        max_tokens=500
    )

    # Select model
    selection = await selector.select_model(request, "research")
    print(f"Selected: {selection.model_id}")
    print(f"Score: {selection.suitability_score:.2f}")
    print(f"Reason: {selection.selection_reason}")

    # Cleanup
    await health_checker.stop()

# ---- scaffolding (not in the seed) ---------------------------------------------------

async def example(workdir: Path | None = None) -> None:
    """The seed's ``main()`` in a simulator-backed working directory."""
    async with Workspace(workdir=workdir):
        await main()


if __name__ == "__main__":
    run(example)  # the seed: asyncio.run(main())
