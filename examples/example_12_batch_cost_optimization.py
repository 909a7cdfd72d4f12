"""Seed Example 12: Batch Processing with Cost Optimization.

The seed's code (api-model-management-api.md, "Advanced Usage Examples") with only
the import prefix changed. Scaffolding: ``tasks.json`` (four tasks: one HIGH, one
MEDIUM, two LOW priority), ``load_tasks_from_file`` (reads it into ModelRequests with
their ``priority``), ``process_task`` (sends the task to the chosen model and books
its cost; the result is the ModelResponse, whose ``.cost`` the report sums), and the
module-level ``selector`` and ``cost_tracker`` the snippet reads.

    python examples/example_12_batch_cost_optimization.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, load_tasks_from_file, run
from amm import SelectionConstraints

# scaffolding: set by example() before the seed's function runs
selector = cost_tracker = process_task = None


# ---- seed code ---------------------------------------------------------------------
async def batch_process_with_cost_optimization():
    """Process batch of tasks with cost optimization."""

    # Load tasks
    tasks = load_tasks_from_file("tasks.json")

    # Sort by priority
    high_priority = [t for t in tasks if t.priority == "HIGH"]
    medium_priority = [t for t in tasks if t.priority == "MEDIUM"]
    low_priority = [t for t in tasks if t.priority == "LOW"]

    results = []

    # Process high priority first (quality over cost)
    for task in high_priority:
        constraints = SelectionConstraints(
            required_capabilities=["analysis", "reasoning"]
        )
        selection = await selector.select_model(task, "analysis", constraints)
        result = await process_task(task, selection.model_id)
        results.append(result)

    # Check budget before continuing
    budget = await cost_tracker.check_budget()
    if budget.utilization_percent > 80:
        print("WARNING: Budget at 80%, switching to cost-optimized mode")

        # Use cheaper models for remaining tasks
        constraints = SelectionConstraints(
            max_cost_per_request=0.01,
            required_capabilities=["text-generation"]
        )
    else:
        constraints = None

    # Process medium and low priority
    for task in medium_priority + low_priority:
        selection = await selector.select_model(task, "analysis", constraints)
        result = await process_task(task, selection.model_id)
        results.append(result)

    # Generate report
    total_cost = sum(r.cost for r in results)
    print(f"\nBatch Processing Complete:")
    print(f"  Total Tasks: {len(results)}")
    print(f"  Total Cost: ${total_cost:.2f}")
    print(f"  Average Cost: ${total_cost/len(results):.4f}")

    return results


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's batch over the scaffold's four sample tasks."""
    global selector, cost_tracker, process_task
    async with Workspace(workdir=workdir) as ws:
        ws.write_sample_tasks("tasks.json")
        selector, cost_tracker, process_task = await ws.provide(
            "selector", "cost_tracker", "process_task")
        await batch_process_with_cost_optimization()


if __name__ == "__main__":
    run(example)
