"""Seed Example 2: Model Selection with Constraints.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``; ``selector`` and
``request`` (from the seed's Quick Start) are the scaffolding's.

    python examples/example_02_selection_constraints.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run

# ---- seed code ---------------------------------------------------------------------
from amm import SelectionConstraints


async def main(selector, request):
    # Define constraints
    constraints = SelectionConstraints(
        max_cost_per_request=0.10,           # Maximum $0.10 per request
        required_capabilities=["code-generation"],  # Must support code generation
        excluded_providers=["ollama"],       # Exclude local models
        max_latency_ms=3000                  # Maximum 3 second response time
    )

    # Select with constraints
    selection = await selector.select_model(
        task=request,
        agent_type="implementation",
        constraints=constraints
    )

    if selection:
        print(f"Found suitable model: {selection.model_id}")
    else:
        print("No models match constraints")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet with the Quick Start's ``selector`` and ``request``."""
    async with Workspace(workdir=workdir) as ws:
        selector, request = await ws.provide("selector", "request")
        await main(selector, request)


if __name__ == "__main__":
    run(example)
