"""Seed Example 10: Custom Selection Strategy.

The seed's code (api-model-management-api.md, "Advanced Usage Examples") with only
the import prefix changed. Scaffolding: the imports the snippet uses without making,
and the module-level ``selector`` it reads (built as the seed's Quick Start builds it).

    python examples/example_10_custom_selection.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run
from amm import ModelRequest, SelectionConstraints

selector = None  # scaffolding: set by example() before the seed's function runs


# ---- seed code ---------------------------------------------------------------------
async def custom_selection_strategy():
    """Implement custom model selection logic."""

    # Define custom constraints based on task complexity
    def get_constraints_for_task(task: ModelRequest) -> SelectionConstraints:
        # Simple tasks: prioritize cost
        if len(task.prompt) < 100:
            return SelectionConstraints(
                max_cost_per_request=0.01,
                required_capabilities=["text-generation"]
            )
        # Complex tasks: prioritize quality
        elif len(task.prompt) > 1000:
            return SelectionConstraints(
                required_capabilities=["analysis", "reasoning"],
                excluded_providers=["ollama"]
            )
        # Medium tasks: balanced
        else:
            return SelectionConstraints(
                max_cost_per_request=0.10,
                required_capabilities=["text-generation"]
            )

    # Apply custom strategy
    task = ModelRequest(
        prompt="Complex analysis task with detailed requirements...",
        parameters={"temperature": 0.7},
        task_id="task-complex",
        agent_type="analysis",
        max_tokens=2000
    )

    constraints = get_constraints_for_task(task)
    selection = await selector.select_model(task, "analysis", constraints)

    print(f"Selected {selection.model_id} for complex task")
    print(f"Estimated cost: ${selection.model_metadata.cost_per_1k_input_tokens * 2:.4f}")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's function with the scaffold's ``selector``."""
    global selector
    async with Workspace(workdir=workdir) as ws:
        selector = await ws.provide("selector")
        await custom_selection_strategy()


if __name__ == "__main__":
    run(example)
