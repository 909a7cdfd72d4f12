"""Seed Example 3: Automatic Failover.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``. Scaffolding: the
simulator answers every request to the primary model, ``gpt-4-turbo``, with 503, so
the failover really happens; ``selector``, ``request`` and ``adapters`` (None: litellm
serves every provider) come from the scaffold.

    python examples/example_03_automatic_failover.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run
from amm import ModelResponse  # scaffolding: the seed's annotation below names it

# ---- seed code ---------------------------------------------------------------------
from amm import (
    FailoverManager,
    APIClientManager,
    APIKeyManager,
)


async def main(selector, request, adapters):
    # Initialize failover manager
    failover_manager = FailoverManager(
        model_selector=selector,
        max_retries=3,
        base_backoff_seconds=2
    )

    # Initialize API client
    key_manager = APIKeyManager()
    key_manager.load_keys()

    api_client = APIClientManager(
        api_key_manager=key_manager,
        adapters=adapters
    )

    # Define request function
    async def make_request(model_id: str) -> ModelResponse:
        return await api_client.send_request_with_retry(
            model_id=model_id,
            request=request,
            max_retries=3
        )

    # Execute with automatic failover
    try:
        response = await failover_manager.execute_with_failover(
            primary_model="gpt-4-turbo",
            task=request,
            request_func=make_request
        )
        print(f"Response: {response.content}")
        print(f"Model used: {response.model_id}")
        print(f"Cost: ${response.cost:.4f}")
    except Exception as e:
        print(f"All models failed: {e}")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet while the simulator fails every request to gpt-4-turbo."""
    async with Workspace(workdir=workdir,
                         model_behaviour={"gpt-4-turbo": {"error_rate": 1.0}}) as ws:
        selector, request, adapters = await ws.provide("selector", "request", "adapters")
        await main(selector, request, adapters)
        print(f"(simulator: gpt-4-turbo received {ws.requests_to('gpt-4-turbo')} requests, "
              "all answered 503)")


if __name__ == "__main__":
    run(example)
