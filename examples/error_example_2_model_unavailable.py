"""Seed Error Handling Example 2: Handling Model Unavailable.

The seed's code (api-model-management-api.md, "Error Handling Examples") with only
the import prefix changed. The seed's top-level ``await`` runs inside ``main()``.
Scaffolding: the simulator answers every request to gpt-4-turbo with 503 Service
Unavailable; ``api_client``, ``request``, ``failover_manager`` and the
``FailoverReason`` import come from the scaffold.

    python examples/error_example_2_model_unavailable.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run
from amm import FailoverReason

# ---- seed code ---------------------------------------------------------------------
from amm import ModelUnavailableError


async def main(api_client, request, failover_manager):
    try:
        response = await api_client.send_request("gpt-4-turbo", request)
    except ModelUnavailableError as e:
        print(f"Model unavailable: {e.model_id}")
        print(f"Reason: {e.error_message}")

        # Select alternative
        alternative = await failover_manager.select_alternative(
            failed_model="gpt-4-turbo",
            task=request,
            reason=FailoverReason.UNAVAILABLE
        )

        if alternative:
            response = await api_client.send_request(alternative, request)
        else:
            raise Exception("No alternative models available")
    return response  # scaffolding: hand the response to example()


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet while gpt-4-turbo answers 503."""
    async with Workspace(workdir=workdir,
                         model_behaviour={"gpt-4-turbo": {"error_rate": 1.0}}) as ws:
        api_client, request, failover_manager = await ws.provide(
            "api_client", "request", "failover_manager")
        response = await main(api_client, request, failover_manager)
        print(f"(answered by {response.model_id})")


if __name__ == "__main__":
    run(example)
