"""Seed Error Handling Example 4: Comprehensive Error Handling.

The seed's code (api-model-management-api.md, "Error Handling Examples") with only
the import prefix changed. Scaffolding: the imports the snippet uses without making,
the module-level components it reads, and a call of ``robust_request`` with the
seed's Quick Start request.

    python examples/error_example_4_comprehensive.py [--workdir DIR]
"""

import asyncio
from pathlib import Path

from _scaffold import Workspace, run
from amm import ModelRequest, ModelResponse, SelectionConstraints

# scaffolding: set by example() before the seed's function runs
cost_tracker = selector = failover_manager = api_client = None

# ---- seed code ---------------------------------------------------------------------
from amm import (
    APIModelError,
    RateLimitError,
    ModelUnavailableError,
    AuthenticationError,
    BudgetExceededError
)

async def robust_request(request: ModelRequest) -> ModelResponse:
    """Make request with comprehensive error handling."""

    max_attempts = 3
    attempt = 0

    while attempt < max_attempts:
        try:
            # Check budget
            budget = await cost_tracker.check_budget()
            if budget.is_over_budget:
                # Use cheapest available model
                constraints = SelectionConstraints(max_cost_per_request=0.01)
                selection = await selector.select_model(request, "implementation", constraints)
            else:
                # Normal selection
                selection = await selector.select_model(request, "implementation")

            # Make request with failover
            response = await failover_manager.execute_with_failover(
                primary_model=selection.model_id,
                task=request,
                request_func=lambda m: api_client.send_request_with_retry(m, request)
            )

            return response

        except RateLimitError as e:
            print(f"Rate limited, attempt {attempt + 1}/{max_attempts}")
            await asyncio.sleep(e.retry_after_seconds or 60)
            attempt += 1

        except ModelUnavailableError as e:
            print(f"Model unavailable: {e.model_id}, attempt {attempt + 1}/{max_attempts}")
            attempt += 1

        except AuthenticationError as e:
            print(f"Authentication failed: {e.error_message}")
            raise  # Don't retry authentication errors

        except BudgetExceededError as e:
            print(f"Budget exceeded: {e.error_message}")
            # Continue with cheaper model (handled above)
            attempt += 1

        except APIModelError as e:
            print(f"API error: {e.error_message}")
            if not e.is_retryable:
                raise  # Don't retry permanent errors
            attempt += 1

    raise Exception(f"Failed after {max_attempts} attempts")


# ---- scaffolding (not in the seed) ---------------------------------------------------
async def example(workdir: Path | None = None) -> None:
    """``robust_request`` with the scaffold's components and Quick Start request."""
    global cost_tracker, selector, failover_manager, api_client
    async with Workspace(workdir=workdir) as ws:
        cost_tracker, selector, failover_manager, api_client, request = await ws.provide(
            "cost_tracker", "selector", "failover_manager", "api_client", "request")
        response = await robust_request(request)
        print(f"Robust request answered by {response.model_id}")


if __name__ == "__main__":
    run(example)
