"""Seed Example 9: Multi-Provider Setup with Load Balancing.

The seed's code (api-model-management-api.md, "Advanced Usage Examples") with only
the import prefix changed. Scaffolding: the imports the snippet uses without making,
and ``create_request`` (a research request per task). The scaffold's environment has
``OPENAI_API_KEY``, ``OPENAI_API_KEY_2``, ``ANTHROPIC_API_KEY`` and ``GOOGLE_API_KEY``
set to fake keys the simulator accepts.

    python examples/example_09_multi_provider.py [--workdir DIR]
"""

import asyncio
import os
from collections import Counter
from pathlib import Path

from _scaffold import Workspace, create_request, run
from amm import (
    APIKeyManager,
    HealthChecker,
    ModelRegistry,
    ModelSelector,
    PerformanceMonitor,
    RateLimiter,
)


# ---- seed code ---------------------------------------------------------------------
async def setup_multi_provider():
    """Set up system with multiple providers for load balancing."""

    # Configure multiple API keys for load distribution
    key_manager = APIKeyManager()
    key_manager.add_key("openai", os.getenv("OPENAI_API_KEY"))
    key_manager.add_key("openai", os.getenv("OPENAI_API_KEY_2"))
    key_manager.add_key("anthropic", os.getenv("ANTHROPIC_API_KEY"))
    key_manager.add_key("google", os.getenv("GOOGLE_API_KEY"))

    # Initialize components
    registry = ModelRegistry(Path("config/model_registry.json"))
    registry.load_config()

    health_checker = HealthChecker(registry, check_interval_seconds=30)
    await health_checker.start()

    rate_limiter = RateLimiter(registry)
    performance_monitor = PerformanceMonitor(Path("data/performance.db"))

    selector = ModelSelector(registry, health_checker, rate_limiter, performance_monitor)

    # Process multiple requests concurrently
    tasks = [
        create_request(f"task-{i}", f"Explain concept {i}")
        for i in range(10)
    ]

    # Select models for all tasks
    selections = await asyncio.gather(*[
        selector.select_model(task, "research")
        for task in tasks
    ])

    # Verify load distribution
    providers = [s.model_metadata.provider for s in selections]
    print(f"Provider distribution: {Counter(providers)}")

    await health_checker.stop()


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's function in a simulator-backed working directory."""
    async with Workspace(workdir=workdir):
        await setup_multi_provider()


if __name__ == "__main__":
    run(example)
