"""Seed Error Handling Example 1: Handling Rate Limit Errors.

The seed's code (api-model-management-api.md, "Error Handling Examples") with only
the import prefix changed. The seed's top-level ``await`` runs inside ``main()``.
Scaffolding: the simulator admits one request per minute to gpt-4-turbo (then 429
with ``Retry-After: 30``) and an earlier request has used it; ``api_client``,
``request`` and ``failover_manager`` come from the scaffold.

    python examples/error_example_1_rate_limit.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run

# ---- seed code ---------------------------------------------------------------------
from amm import RateLimitError


async def main(api_client, request, failover_manager):
    try:
        response = await api_client.send_request("gpt-4-turbo", request)
    except RateLimitError as e:
        print(f"Rate limited: {e.error_message}")
        print(f"Retry after: {e.retry_after_seconds}s")

        # Automatic failover will handle this
        response = await failover_manager.execute_with_failover(
            primary_model="gpt-4-turbo",
            task=request,
            request_func=lambda m: api_client.send_request(m, request)
        )
    return response  # scaffolding: hand the response to example()


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet once gpt-4-turbo's one request per minute is used up."""
    behaviour = {"gpt-4-turbo": {"rpm_limit": 1, "retry_after_s": 30}}
    async with Workspace(workdir=workdir, model_behaviour=behaviour) as ws:
        api_client, request, failover_manager = await ws.provide(
            "api_client", "request", "failover_manager")
        await api_client.send_request("gpt-4-turbo", request)  # uses the minute's request
        response = await main(api_client, request, failover_manager)
        print(f"(answered by {response.model_id})")


if __name__ == "__main__":
    run(example)
