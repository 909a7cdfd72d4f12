"""Seed Error Handling Example 3: Handling Budget Exceeded.

The seed's code (api-model-management-api.md, "Error Handling Examples") with only
the import prefix changed. The seed's top-level ``await`` runs inside ``main()``.
Scaffolding: the day's ledger already holds $150 of spend against the default $100
budget; ``cost_tracker``, ``api_client``, ``selector``, ``request`` and the
``SelectionConstraints`` import come from the scaffold.

    python examples/error_example_3_budget_exceeded.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run
from amm import SelectionConstraints

# ---- seed code ---------------------------------------------------------------------
from amm import BudgetExceededError


async def main(cost_tracker, api_client, selector, request):
    try:
        # Check budget before request
        budget = await cost_tracker.check_budget()
        if budget.is_over_budget:
            raise BudgetExceededError(
                f"Daily budget of ${budget.daily_budget} exceeded"
            )

        response = await api_client.send_request("gpt-4-turbo", request)

    except BudgetExceededError as e:
        print(f"Budget exceeded: {e.error_message}")

        # Use cheaper model
        constraints = SelectionConstraints(
            max_cost_per_request=0.01,  # Very low cost
            required_capabilities=["text-generation"]
        )

        selection = await selector.select_model(request, "implementation", constraints)
        response = await api_client.send_request(selection.model_id, request)
    return response  # scaffolding: hand the response to example()


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet on a day whose budget is already spent."""
    async with Workspace(workdir=workdir) as ws:
        cost_tracker, api_client, selector, request = await ws.provide(
            "cost_tracker", "api_client", "selector", "request")
        await cost_tracker.record_cost(model_id="gpt-4-turbo", agent_type="implementation",
                                       input_tokens=5_000_000, output_tokens=3_333_333,
                                       cost=150.0, task_id="earlier-batch")
        response = await main(cost_tracker, api_client, selector, request)
        print(f"(answered by {response.model_id}, cost ${response.cost:.4f})")


if __name__ == "__main__":
    run(example)
