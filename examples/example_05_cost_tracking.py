"""Seed Example 5: Cost Tracking and Budget Management.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``; ``request`` and
``response`` (the answer of gpt-4-turbo, as Example 4 gets it) come from the scaffold.

    python examples/example_05_cost_tracking.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run

# ---- seed code ---------------------------------------------------------------------
from amm import CostTracker


async def main(request, response):
    # Initialize cost tracker
    cost_tracker = CostTracker(
        db_path=Path("data/costs.db"),
        daily_budget=100.0
    )

    # Record cost after request
    await cost_tracker.record_cost(
        model_id=response.model_id,
        agent_type="implementation",
        input_tokens=response.token_usage.input_tokens,
        output_tokens=response.token_usage.output_tokens,
        cost=response.cost,
        task_id=request.task_id
    )

    # Check budget status
    budget = await cost_tracker.check_budget()
    print(f"Daily budget: ${budget.daily_budget:.2f}")
    print(f"Current spend: ${budget.current_spend:.2f}")
    print(f"Utilization: {budget.utilization_percent:.1f}%")
    print(f"Remaining: ${budget.remaining_budget:.2f}")

    if budget.is_over_budget:
        print("ALERT: Budget exceeded!")

    # Get cost breakdown by model
    from datetime import datetime, timedelta
    end_date = datetime.now()
    start_date = end_date - timedelta(days=7)

    costs_by_model = await cost_tracker.get_cost_by_model(start_date, end_date)
    for model_id, cost in costs_by_model.items():
        print(f"{model_id}: ${cost:.2f}")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet after one request to gpt-4-turbo."""
    async with Workspace(workdir=workdir) as ws:
        request, response = await ws.provide("request", "response")
        await main(request, response)


if __name__ == "__main__":
    run(example)
