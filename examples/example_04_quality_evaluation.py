"""Seed Example 4: Response Quality Evaluation.

The seed's code (api-model-management-api.md, "Usage Examples") with only the import
prefix changed. The seed's top-level ``await`` runs inside ``main()``; ``api_client``
and ``request`` come from the scaffold.

    python examples/example_04_quality_evaluation.py [--workdir DIR]
"""

from pathlib import Path

from _scaffold import Workspace, run

# ---- seed code ---------------------------------------------------------------------
from amm import ResponseEvaluator


async def main(api_client, request):
    # Initialize evaluator
    evaluator = ResponseEvaluator(
        quality_threshold=0.7,
        evaluation_window=10
    )

    # Make request and get response
    response = await api_client.send_request("gpt-4-turbo", request)

    # Evaluate quality
    quality = await evaluator.evaluate_response(response, request)

    print(f"Overall quality: {quality.overall_score:.2f}")
    print(f"Completeness: {quality.completeness:.2f}")
    print(f"Relevance: {quality.relevance:.2f}")
    print(f"Coherence: {quality.coherence:.2f}")

    if quality.overall_score < 0.7:
        print("WARNING: Low quality response detected")

        # Check if model switch recommended
        recent_scores = [0.65, 0.68, 0.62, 0.70, 0.64]
        if evaluator.should_switch_model("gpt-4-turbo", recent_scores):
            print("Model switch recommended")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's snippet with the scaffold's ``api_client`` and ``request``."""
    async with Workspace(workdir=workdir) as ws:
        api_client, request = await ws.provide("api_client", "request")
        await main(api_client, request)


if __name__ == "__main__":
    run(example)
