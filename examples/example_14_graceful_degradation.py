"""Seed Example 14: Graceful Degradation in Production.

The seed's code (api-model-management-api.md, "Advanced Usage Examples") with only
the import prefix changed. Scaffolding: the imports the snippet uses without making,
the module-level components it reads, ``logger``, and ``local_model`` (a local Ollama
model outside the registry, served by the simulator). The scaffold calls the seed's
function twice: with healthy providers (the API answers), then with every registered
model failing in the simulator (the local fallback answers).

    python examples/example_14_graceful_degradation.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run
from amm import APIModelError, CacheError, PerformanceMonitorError

# scaffolding: set by example() before the seed's function runs
selector = request = api_client = evaluator = cache_manager = performance_monitor = None
logger = local_model = None


# ---- seed code ---------------------------------------------------------------------
async def production_request_with_degradation():
    """Handle requests with graceful degradation."""

    try:
        # Try primary workflow
        selection = await selector.select_model(request, "implementation")
        response = await api_client.send_request_with_retry(
            selection.model_id,
            request
        )

        # Evaluate quality
        quality = await evaluator.evaluate_response(response, request)

        # Cache response
        cache_key = cache_manager.generate_cache_key(request)
        await cache_manager.set(cache_key, response)

        # Record metrics
        await performance_monitor.record_performance(
            model_id=response.model_id,
            agent_type="implementation",
            latency_ms=response.latency_ms,
            success=True,
            quality_score=quality.overall_score,
            task_id=request.task_id
        )

        return response

    except CacheError as e:
        # Cache failed, continue without caching
        logger.warning(f"Cache unavailable: {e}")

        selection = await selector.select_model(request, "implementation")
        response = await api_client.send_request_with_retry(
            selection.model_id,
            request
        )

        return response

    except PerformanceMonitorError as e:
        # Performance monitoring failed, continue without metrics
        logger.warning(f"Performance monitoring unavailable: {e}")

        selection = await selector.select_model(request, "implementation")
        response = await api_client.send_request_with_retry(
            selection.model_id,
            request
        )

        return response

    except APIModelError as e:
        # All API models failed, use fallback
        logger.error(f"All API models failed: {e}")

        # Use local fallback model
        fallback_response = await local_model.generate(request.prompt)

        return fallback_response


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's function with healthy providers, then with every API model failing."""
    global selector, request, api_client, evaluator, cache_manager, performance_monitor
    global logger, local_model
    async with Workspace(workdir=workdir) as ws:
        (selector, request, api_client, evaluator, cache_manager, performance_monitor,
         logger, local_model) = await ws.provide(
            "selector", "request", "api_client", "evaluator", "cache_manager",
            "performance_monitor", "logger", "local_model")

        print("Providers healthy:")
        response = await production_request_with_degradation()
        print(f"  answered by {response.model_id}: {response.content[:60]!r}...")

        for model in (await ws.provide("registry")).models():
            ws.set_behaviour(model.id, error_rate=1.0)
        print("Every API model failing:")
        response = await production_request_with_degradation()
        print(f"  answered by {response.model_id}: {response.content[:60]!r}...")


if __name__ == "__main__":
    run(example)
