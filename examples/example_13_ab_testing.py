"""Seed Example 13: A/B Testing Different Models.

The seed's code (api-model-management-api.md, "Advanced Usage Examples") with only
the import prefix changed. Scaffolding: the imports the snippet uses without making,
and the module-level ``api_client`` and ``evaluator`` it reads. The simulator gives
the three models different answer quality (gpt-4-turbo 0.92, claude-3.5-sonnet 0.93,
gemini-pro 0.9: the probability of a good, on-topic answer).

    python examples/example_13_ab_testing.py [--workdir DIR]
"""

import time
from pathlib import Path

from _scaffold import Workspace, run
from amm import ModelRequest

# scaffolding: set by example() before the seed's function runs
api_client = evaluator = None


# ---- seed code ---------------------------------------------------------------------
async def ab_test_models():
    """A/B test different models for the same task."""

    # Define test task
    test_prompt = "Explain the concept of recursion in programming"

    # Test multiple models
    models_to_test = ["gpt-4-turbo", "claude-3.5-sonnet", "gemini-pro"]

    results = {}

    for model_id in models_to_test:
        # Create request
        request = ModelRequest(
            prompt=test_prompt,
            parameters={"temperature": 0.7},
            task_id=f"ab-test-{model_id}",
            agent_type="research",
            max_tokens=500
        )

        # Make request
        start_time = time.time()
        response = await api_client.send_request(model_id, request)
        end_time = time.time()

        # Evaluate quality
        quality = await evaluator.evaluate_response(response, request)

        # Store results
        results[model_id] = {
            'response': response.content,
            'latency_ms': (end_time - start_time) * 1000,
            'cost': response.cost,
            'quality_score': quality.overall_score,
            'completeness': quality.completeness,
            'relevance': quality.relevance,
            'coherence': quality.coherence
        }

    # Compare results
    print("\nA/B Test Results:")
    print("="*80)

    for model_id, result in results.items():
        print(f"\n{model_id}:")
        print(f"  Quality Score: {result['quality_score']:.2f}")
        print(f"  Latency: {result['latency_ms']:.0f}ms")
        print(f"  Cost: ${result['cost']:.4f}")
        print(f"  Completeness: {result['completeness']:.2f}")
        print(f"  Relevance: {result['relevance']:.2f}")
        print(f"  Coherence: {result['coherence']:.2f}")

    # Determine winner
    winner = max(results.items(), key=lambda x: x[1]['quality_score'])
    print(f"\nWinner: {winner[0]} (Quality: {winner[1]['quality_score']:.2f})")

    return results


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """The seed's A/B test with the scaffold's ``api_client`` and ``evaluator``."""
    global api_client, evaluator
    async with Workspace(workdir=workdir) as ws:
        api_client, evaluator = await ws.provide("api_client", "evaluator")
        await ab_test_models()


if __name__ == "__main__":
    run(example)
