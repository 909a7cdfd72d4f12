"""amm's benchmark: what the SDK adds to every LLM call, against the budgets of DESIGN.md.

Run ``python -m benchmarks`` (``make bench``); see :mod:`benchmarks.main`.
"""

from __future__ import annotations

__all__: list[str] = []
