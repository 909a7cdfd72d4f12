"""Rolling statistics per (model, agent type) over a sliding window, in bounded memory.

The window is a ring of time buckets (``window_s / bucket_s`` of them, 60 by
default); each bucket holds counts, sums and a sparse log-bucket latency
histogram. Running totals per key are kept beside the ring (a bucket leaving the
window is subtracted), so a snapshot costs a scan of at most ``_BINS`` histogram
bins, and it is cached until the key changes or the bucket tick moves.

Latency percentiles come from fixed logarithmic bins of ratio ``GAMMA = 1.1``
between 0.1 ms and about 10^7 ms; a percentile is reported as its bin's geometric
midpoint, so its relative error is at most ``sqrt(1.1) - 1``, i.e. <= 4.9 %.

Latency percentiles, here and in every report of amm's, are over every attempt that got
an answer or failed: a caller waits through a failure as through an answer, and a
timeout is the very tail a p95 is read for. Leaving failures out would make a model that
starts timing out look faster exactly when it degrades; ``success_rate`` says how many
failed. Over stored rows the percentile is exact (:func:`exact_percentile`, linearly
interpolated; :func:`analytics.stats.latency_quantiles` is the same, vectorised).

Memory per key is bounded by ``n_buckets x _BINS`` whatever the traffic.
``at`` timestamps are in the clock's units (seconds): pass ``time.time`` as the
clock when observations are replayed from wall-clock records.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from telemetry.events import StatsSnapshot

__all__ = ["GAMMA", "RollingStats", "exact_percentile"]

GAMMA = 1.1
"""Ratio between consecutive latency bins (relative error <= sqrt(GAMMA) - 1)."""
_MIN_MS = 0.1
_LOG_GAMMA = math.log(GAMMA)
_BINS = 200  # 0.1 ms * 1.1**200 ~ 1.9e7 ms (5 h): anything longer lands in the last bin


def _bin(latency_ms: float) -> int:
    if latency_ms <= _MIN_MS:
        return 0
    return min(_BINS - 1, int(math.log(latency_ms / _MIN_MS) / _LOG_GAMMA))


def exact_percentile(values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0.95: the p95) of ``values``, linearly interpolated between the
    two nearest ranks (numpy's default, ClickHouse's ``quantileExactInclusive``); 0.0 for
    none. Latencies are those of every attempt, failed ones included (module docstring).

    >>> exact_percentile([100.0, 200.0, 300.0, 400.0], 0.5)
    250.0
    """
    if not values:
        return 0.0
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def _bin_value(index: int) -> float:
    return _MIN_MS * math.pow(GAMMA, index + 0.5)


@dataclass(slots=True)
class _Agg:
    """Counts and sums of one bucket, or the running total of one key."""

    count: int = 0
    successes: int = 0
    latency_sum: float = 0.0
    quality_sum: float = 0.0
    quality_count: int = 0
    cost: float = 0.0
    input_tokens: int = 0
    output_tokens: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    bins: dict[int, int] = field(default_factory=dict)

    def add(self, other: _Agg, sign: int) -> None:
        self.count += sign * other.count
        self.successes += sign * other.successes
        self.latency_sum += sign * other.latency_sum
        self.quality_sum += sign * other.quality_sum
        self.quality_count += sign * other.quality_count
        self.cost += sign * other.cost
        self.input_tokens += sign * other.input_tokens
        self.output_tokens += sign * other.output_tokens
        _merge(self.errors, other.errors, sign)
        _merge(self.bins, other.bins, sign)


def _merge(target: dict[Any, int], source: dict[Any, int], sign: int) -> None:
    """Add (or subtract) ``source``'s counts into ``target``, dropping zeros."""
    for k, v in source.items():
        n = target.get(k, 0) + sign * v
        if n:
            target[k] = n
        else:
            target.pop(k, None)


class _Series:
    """The ring and running total of one key."""

    __slots__ = ("memo", "slots", "total", "version")

    def __init__(self) -> None:
        self.slots: dict[int, _Agg] = {}
        self.total = _Agg()
        self.version = 0
        # (tick, version, snapshot): the last snapshot and when it was true. One attribute,
        # replaced whole, so a reader without the lock sees a consistent triple.
        self.memo: tuple[int, int, StatsSnapshot | None] = (-1, -1, None)

    def expire(self, oldest_kept: int) -> None:
        for tick in [t for t in self.slots if t < oldest_kept]:
            self.total.add(self.slots.pop(tick), -1)
            self.version += 1

    def slot(self, tick: int) -> _Agg:
        agg = self.slots.get(tick)
        if agg is None:
            agg = self.slots[tick] = _Agg()
        return agg


class RollingStats:
    """Sliding-window statistics per (model_id, agent_type). Thread-safe.

    >>> stats = RollingStats(window_s=900, bucket_s=15)
    >>> stats.observe_attempt("gpt-4o", "review", 812.0, True, cost_usd=0.01)
    >>> stats.snapshot("gpt-4o").p95_latency_ms
    """

    def __init__(self, window_s: float = 900.0, bucket_s: float = 15.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if bucket_s <= 0 or window_s < bucket_s:
            raise ValueError(f"need 0 < bucket_s <= window_s, got bucket_s={bucket_s}, "
                             f"window_s={window_s}")
        self.window_s = window_s
        self.bucket_s = bucket_s
        self._n = math.ceil(window_s / bucket_s)
        self._clock = clock
        self._series: dict[tuple[str, str | None], _Series] = {}
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"RollingStats(window_s={self.window_s}, bucket_s={self.bucket_s}, "
                f"keys={len(self._series)})")

    def _tick(self, at: float | None) -> int:
        return int((self._clock() if at is None else at) // self.bucket_s)

    def _slots_for(self, model_id: str, agent_type: str, tick: int) -> list[_Agg]:
        """The buckets an observation at ``tick`` goes to (the key and the all-agents key)."""
        now = self._tick(None)
        if tick <= now - self._n:
            return []  # older than the window: it would expire at once
        out = []
        for key in ((model_id, agent_type), (model_id, None)):
            series = self._series.get(key)
            if series is None:
                series = self._series[key] = _Series()
            series.expire(now - self._n + 1)
            series.version += 1
            out.append(series.slot(tick))
        return out

    def observe_attempt(self, model_id: str, agent_type: str, latency_ms: float, success: bool,
                        error_type: str | None = None, cost_usd: float = 0.0,
                        input_tokens: int = 0, output_tokens: int = 0,
                        at: float | None = None) -> None:
        """Count one attempt (``at``: when, in the clock's seconds; None = now)."""
        tick = self._tick(at)
        b = _bin(latency_ms)
        with self._lock:
            slots = self._slots_for(model_id, agent_type, tick)
            series_keys = ((model_id, agent_type), (model_id, None))
            for agg, key in zip(slots, series_keys, strict=False):
                total = self._series[key].total
                for target in (agg, total):
                    target.count += 1
                    target.latency_sum += latency_ms
                    target.bins[b] = target.bins.get(b, 0) + 1
                    target.cost += cost_usd
                    target.input_tokens += input_tokens
                    target.output_tokens += output_tokens
                    if success:
                        target.successes += 1
                    else:
                        et = error_type or "_OTHER"
                        target.errors[et] = target.errors.get(et, 0) + 1

    def observe_quality(self, model_id: str, agent_type: str, score: float,
                        at: float | None = None) -> None:
        """Count one quality score in [0, 1]."""
        tick = self._tick(at)
        with self._lock:
            slots = self._slots_for(model_id, agent_type, tick)
            series_keys = ((model_id, agent_type), (model_id, None))
            for agg, key in zip(slots, series_keys, strict=False):
                for target in (agg, self._series[key].total):
                    target.quality_sum += score
                    target.quality_count += 1

    def snapshot(self, model_id: str, agent_type: str | None = None) -> StatsSnapshot | None:
        """Statistics of the window; ``agent_type`` None merges every agent type.

        None when nothing was observed for the key within the window.
        """
        series = self._series.get((model_id, agent_type))
        if series is None:  # never observed: no lock, no clock (a dict read is atomic)
            return None
        now = self._tick(None)
        # Unchanged since the last snapshot in this tick: no lock either. The memo is read
        # before the version, so a writer's change in between reads as a miss.
        tick, version, snap = series.memo
        if tick == now and version == series.version:
            return snap
        return self._made(model_id, agent_type, now)

    def snapshots(self, model_ids: Iterable[str], agent_type: str | None = None
                  ) -> list[StatsSnapshot | None]:
        """:meth:`snapshot` of each of ``model_ids`` for ``agent_type``, in order, at one
        moment (the clock read once: the selector asks for all its candidates)."""
        get = self._series.get
        now = self._tick(None)
        out: list[StatsSnapshot | None] = []
        append = out.append
        for model_id in model_ids:
            series = get((model_id, agent_type))
            if series is None:
                append(None)
                continue
            tick, version, snap = series.memo
            append(snap if tick == now and version == series.version
                   else self._made(model_id, agent_type, now))
        return out

    def _made(self, model_id: str, agent_type: str | None, now: int) -> StatsSnapshot | None:
        """The snapshot at tick ``now``, made under the lock (and kept) unless another
        thread made it meanwhile."""
        with self._lock:
            series = self._series.get((model_id, agent_type))
            if series is None:
                return None
            tick, version, snap = series.memo
            if tick == now and version == series.version:
                return snap
            series.expire(now - self._n + 1)
            snap = _snapshot(model_id, agent_type, series.total)
            series.memo = (now, series.version, snap)
            return snap

    def models(self) -> list[str]:
        """Every model observed within the window."""
        with self._lock:
            return sorted({m for (m, a), s in self._series.items() if a is None and s.slots})

    def clear(self) -> None:
        """Forget everything."""
        with self._lock:
            self._series.clear()


def _snapshot(model_id: str, agent_type: str | None, t: _Agg) -> StatsSnapshot | None:
    if t.count == 0 and t.quality_count == 0:
        return None
    return StatsSnapshot(
        model_id=model_id,
        agent_type=agent_type,
        count=t.count,
        successes=t.successes,
        success_rate=t.successes / t.count if t.count else 0.0,
        mean_latency_ms=t.latency_sum / t.count if t.count else 0.0,
        p50_latency_ms=_percentile(t.bins, t.count, 0.50),
        p95_latency_ms=_percentile(t.bins, t.count, 0.95),
        p99_latency_ms=_percentile(t.bins, t.count, 0.99),
        mean_quality=t.quality_sum / t.quality_count if t.quality_count else None,
        quality_count=t.quality_count,
        cost_usd=t.cost,
        input_tokens=t.input_tokens,
        output_tokens=t.output_tokens,
        errors=dict(t.errors),
    )


def _percentile(bins: dict[int, int], count: int, q: float) -> float:
    if count == 0:
        return 0.0
    rank = max(1, math.ceil(q * count))
    seen = 0
    for index in sorted(bins):
        seen += bins[index]
        if seen >= rank:
            return _bin_value(index)
    return _bin_value(max(bins))
