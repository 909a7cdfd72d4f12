"""Percentiles and the summary of one measured series (latencies in seconds in, ms out)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

__all__ = ["LatencySummary", "percentile", "summarise"]


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-th percentile (0-100) of already sorted values, linearly interpolated."""
    if not sorted_values:
        return math.nan
    if len(sorted_values) == 1:
        return sorted_values[0]
    rank = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(sorted_values) - 1)
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * (rank - low)


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Latency percentiles (ms) and throughput (calls/s) of one path at one concurrency."""

    calls: int
    concurrency: int
    p50_ms: float
    p95_ms: float
    p99_ms: float
    mean_ms: float
    calls_per_s: float
    cpu_ms_per_call: float = math.nan  # process CPU (all threads) per call
    errors: int = 0
    p999_ms: float = math.nan  # p99.9: meaningful from ~2,000 calls (the 2nd-worst of 2,000)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready dict, values rounded to what the measurement can tell."""
        return {k: round(v, 4) if isinstance(v, float) else v for k, v in asdict(self).items()}


def summarise(latencies_s: Sequence[float], *, concurrency: int, wall_s: float,
              cpu_s: float = math.nan, errors: int = 0) -> LatencySummary:
    """Summarise per-call latencies measured over ``wall_s`` seconds of wall time."""
    ordered = sorted(latencies_s)
    ms = [v * 1000.0 for v in ordered]
    return LatencySummary(
        calls=len(ms), concurrency=concurrency,
        p50_ms=percentile(ms, 50), p95_ms=percentile(ms, 95), p99_ms=percentile(ms, 99),
        mean_ms=sum(ms) / len(ms) if ms else math.nan,
        calls_per_s=len(ms) / wall_s if wall_s > 0 else math.nan,
        cpu_ms_per_call=cpu_s * 1000.0 / len(ms) if ms else math.nan, errors=errors,
        p999_ms=percentile(ms, 99.9),
    )
