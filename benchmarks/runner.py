"""Interleaved measurement of several paths: sequential latency and concurrent throughput.

Drift (CPU frequency, a background flush, the GC's generations filling) is spread
evenly over the paths by running them in rounds: each round gives every path one
chunk of calls, in an order rotated from round to round, after a ``gc.collect()``.
Every call gets a prompt number never used before, so no path can hit a cache. A
path with a ``settle()`` method (amm: flush spans, ledger, performance rows) has it
called at the end of each chunk, inside the chunk's wall and CPU time.
"""

from __future__ import annotations

import asyncio
import gc
import itertools
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

from benchmarks.paths import Path
from benchmarks.stats import LatencySummary, summarise

__all__ = ["PromptCounter", "Series", "measure", "warm_up"]


class PromptCounter:
    """Hands out prompt numbers that never repeat within one benchmark run."""

    __slots__ = ("_counter",)

    def __init__(self, start: int = 0) -> None:
        self._counter: Iterator[int] = itertools.count(start)

    def next(self) -> int:
        """The next unused prompt number."""
        return next(self._counter)


@dataclass
class Series:
    """Latencies and wall time accumulated for one path at one concurrency."""

    latencies_s: list[float] = field(default_factory=list)
    wall_s: float = 0.0
    cpu_s: float = 0.0  # process CPU (every thread: litellm's pool, exporters) during the calls
    errors: int = 0
    first_error: str | None = None

    def summary(self, concurrency: int) -> LatencySummary:
        """Percentiles and calls/s of everything measured so far."""
        return summarise(self.latencies_s, concurrency=concurrency, wall_s=self.wall_s,
                         cpu_s=self.cpu_s, errors=self.errors)


async def _timed(path: Path, i: int, series: Series) -> None:
    start = time.perf_counter()
    try:
        await path.call(i)
    except Exception as exc:  # counted and reported: one failure must not end the run
        series.errors += 1
        if series.first_error is None:
            series.first_error = f"{type(exc).__name__}: {exc}"[:300]
        return
    series.latencies_s.append(time.perf_counter() - start)


async def _chunk(path: Path, calls: int, concurrency: int, counter: PromptCounter,
                 series: Series) -> None:
    """``calls`` calls on ``concurrency`` workers; adds their latencies and the chunk's wall
    time."""
    left = calls

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await _timed(path, counter.next(), series)

    start, cpu = time.perf_counter(), time.process_time()
    if concurrency == 1:
        await worker()
    else:
        await asyncio.gather(*(worker() for _ in range(min(concurrency, calls))))
    # Background work the chunk caused (span export, ledger writes) is finished and paid
    # here, by this path, instead of spilling into the next path's measurement.
    settle = getattr(path, "settle", None)
    if settle is not None:
        settle()
    series.wall_s += time.perf_counter() - start
    series.cpu_s += time.process_time() - cpu


async def warm_up(paths: Sequence[Path], counter: PromptCounter, *, calls: int,
                  concurrency: int = 16) -> None:
    """Send ``calls`` sequential calls then one concurrent burst through each path, unmeasured."""
    for path in paths:
        scratch = Series()
        await _chunk(path, calls, 1, counter, scratch)
        await _chunk(path, max(calls, concurrency), concurrency, counter, scratch)
        if scratch.errors:
            raise RuntimeError(f"path {path.name} fails during warm-up: {scratch.first_error}")


async def measure(paths: Sequence[Path], counter: PromptCounter, *, calls_per_path: int,
                  concurrency: int, rounds: int) -> dict[str, Series]:
    """Measure every path at ``concurrency``, ``calls_per_path`` calls each, interleaved in
    rounds."""
    series = {p.name: Series() for p in paths}
    per_round = max(1, calls_per_path // rounds)
    for r in range(rounds):
        shift = r % len(paths)
        for path in (*paths[shift:], *paths[:shift]):
            gc.collect()
            await _chunk(path, per_round, concurrency, counter, series[path.name])
    return series
