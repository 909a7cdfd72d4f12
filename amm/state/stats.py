"""Fleet-wide selection statistics: each worker's rolling window, merged with the others'.

Every worker keeps its own :class:`~telemetry.stats.RollingStats` (fed by its own
traffic, exact for it). Every sync round it publishes a compact summary per model
(all agent types) and reads the other workers'. :class:`FleetStats` stands in for
the performance monitor in front of the selector: a model's snapshot is this
worker's merged with the rest of the fleet's, so a worker that has not yet called a
model still sees how it has been doing. Agent-specific snapshots stay local (a
worker's own experience for that agent type comes first, as before).

Merging: counts, successes, errors, costs and tokens add; means weight by count;
percentiles are the count-weighted mean of the workers' percentiles (an
approximation; exact percentiles would need the histograms on the wire).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from typing import Any

from telemetry.events import StatsSnapshot

__all__ = ["FleetStats"]

_FIELDS = ("count", "successes", "mean_latency_ms", "p50_latency_ms", "p95_latency_ms",
           "p99_latency_ms", "quality_sum", "quality_count", "cost_usd", "input_tokens",
           "output_tokens")


class FleetStats:
    """The performance monitor's snapshots, merged with the rest of the fleet's.

    Anything else is the wrapped monitor's (``get_model_performance``...).

    >>> selector = ModelSelector(registry, health, limiter, FleetStats(monitor))
    """

    def __init__(self, monitor: Any, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.monitor = monitor
        self._clock = clock
        self._others: dict[str, tuple[float, ...]] = {}  # model -> summed summary
        self._merged: dict[str, tuple[float, StatsSnapshot | None, StatsSnapshot]] = {}
        self._lock = threading.Lock()
        self.workers = 0  # other workers whose statistics were merged

    def __getattr__(self, name: str) -> Any:
        return getattr(self.monitor, name)

    def __repr__(self) -> str:
        return f"FleetStats(workers={self.workers}, models={len(self._others)})"

    def snapshot(self, model_id: str, agent_type: str | None = None) -> StatsSnapshot | None:
        """This worker's snapshot, merged with the fleet's when ``agent_type`` is None."""
        local: StatsSnapshot | None = self.monitor.snapshot(model_id, agent_type)
        if agent_type is not None:
            return local
        other = self._others.get(model_id)
        if other is None:
            return local
        cached = self._merged.get(model_id)
        if cached is not None and cached[1] is local and cached[0] > self._clock():
            return cached[2]  # the same local snapshot merged less than a second ago
        merged = _merge(model_id, local, other)
        self._merged[model_id] = (self._clock() + 1.0, local, merged)
        return merged

    def payload(self, spend_usd: float) -> str:
        """This worker's summary for the fleet: per model, plus its spend today."""
        stats = self.monitor.stats
        models = {}
        for model_id in stats.models():
            snap = stats.snapshot(model_id, None)
            if snap is not None and snap.count > 0:
                models[model_id] = _summary(snap)
        return json.dumps({"spend": spend_usd, "models": models}, separators=(",", ":"))

    def merge(self, payloads: dict[str, str]) -> None:
        """Replace the rest of the fleet's view by ``payloads`` (worker -> payload)."""
        summed: dict[str, list[float]] = {}
        for payload in payloads.values():
            try:
                models = json.loads(payload).get("models", {})
            except (ValueError, AttributeError):
                continue  # one worker's bad payload never hides the others
            for model_id, row in models.items():
                if not isinstance(row, list) or len(row) != len(_FIELDS):
                    continue
                acc = summed.setdefault(model_id, [0.0] * len(_FIELDS))
                n = float(row[0])
                for i, v in enumerate(row):
                    # latencies are weighted by the count, the rest add
                    acc[i] += float(v) * n if 2 <= i <= 5 else float(v)
        with self._lock:
            self._others = {m: tuple(v) for m, v in summed.items()}
            self._merged = {}
            self.workers = len(payloads)


def _summary(s: StatsSnapshot) -> list[float]:
    quality_sum = (s.mean_quality or 0.0) * s.quality_count
    return [s.count, s.successes, s.mean_latency_ms, s.p50_latency_ms, s.p95_latency_ms,
            s.p99_latency_ms, quality_sum, s.quality_count, s.cost_usd, s.input_tokens,
            s.output_tokens]


def _merge(model_id: str, local: StatsSnapshot | None,
           other: tuple[float, ...]) -> StatsSnapshot:
    mine = _summary(local) if local is not None else [0.0] * len(_FIELDS)
    n_mine, n_other = mine[0], other[0]
    count = n_mine + n_other
    lat = [(mine[i] * n_mine + other[i]) / count if count else 0.0 for i in range(2, 6)]
    quality_count = int(mine[7] + other[7])
    successes = int(mine[1] + other[1])
    return StatsSnapshot(
        model_id=model_id, agent_type=None, count=int(count), successes=successes,
        success_rate=successes / count if count else 0.0, mean_latency_ms=lat[0],
        p50_latency_ms=lat[1], p95_latency_ms=lat[2], p99_latency_ms=lat[3],
        mean_quality=(mine[6] + other[6]) / quality_count if quality_count else None,
        quality_count=quality_count, cost_usd=mine[8] + other[8],
        input_tokens=int(mine[9] + other[9]), output_tokens=int(mine[10] + other[10]),
        errors=dict(local.errors) if local is not None else {})
