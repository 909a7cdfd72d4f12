"""The streaming section: time to first and to last chunk, every streamed path interleaved.

Each call is timed from just before the request to the first chunk carrying text
(``first_chunk``) and to the end of the ``async for`` loop (``last_chunk``). The
paths run sequentially in rounds, rotated from round to round after a
``gc.collect()``, like :func:`benchmarks.runner.measure`; a path's ``settle()``
(amm: export spans, write the ledger) runs at the end of its chunk of calls, outside
any single call's timing but inside the path's own chunk.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from benchmarks.paths import StreamPath
from benchmarks.runner import PromptCounter, Series

__all__ = ["StreamSeries", "measure_streams", "summarise_streams", "warm_up_streams"]


@dataclass
class StreamSeries:
    """The two latencies of every streamed call of one path."""

    first: Series = field(default_factory=Series)
    last: Series = field(default_factory=Series)

    def fail(self, exc: Exception) -> None:
        """Count one failed call (the first failure is kept, for the report)."""
        for series in (self.first, self.last):
            series.errors += 1
            if series.first_error is None:
                series.first_error = f"{type(exc).__name__}: {exc}"[:300]


async def _chunk(path: StreamPath, calls: int, counter: PromptCounter, out: StreamSeries) -> None:
    wall, cpu = time.perf_counter(), time.process_time()
    for _ in range(calls):
        start = time.perf_counter()
        try:
            first = await path.call(counter.next())
        except Exception as exc:  # counted and reported: one failure must not end the run
            out.fail(exc)
            continue
        end = time.perf_counter()
        out.first.latencies_s.append(first - start)
        out.last.latencies_s.append(end - start)
    settle = getattr(path, "settle", None)
    if settle is not None:
        settle()
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    for series in (out.first, out.last):
        series.wall_s += wall
        series.cpu_s += cpu


async def warm_up_streams(paths: Sequence[StreamPath], counter: PromptCounter, *,
                          calls: int) -> None:
    """``calls`` sequential unmeasured calls through each path; raise if one fails."""
    for path in paths:
        scratch = StreamSeries()
        await _chunk(path, calls, counter, scratch)
        if scratch.first.errors:
            raise RuntimeError(
                f"path {path.name} fails during warm-up: {scratch.first.first_error}")


async def measure_streams(paths: Sequence[StreamPath], counter: PromptCounter, *,
                          calls_per_path: int, rounds: int) -> dict[str, StreamSeries]:
    """Sequential streamed calls, ``calls_per_path`` per path, interleaved in ``rounds``."""
    out = {p.name: StreamSeries() for p in paths}
    per_round = max(1, calls_per_path // rounds)
    for r in range(rounds):
        shift = r % len(paths)
        for path in (*paths[shift:], *paths[:shift]):
            gc.collect()
            await _chunk(path, per_round, counter, out[path.name])
    return out


def summarise_streams(measured: dict[str, StreamSeries]) -> dict[str, Any]:
    """``{path: {"first_chunk": summary, "last_chunk": summary}}`` for the results file."""
    out: dict[str, Any] = {}
    for name, s in measured.items():
        entry: dict[str, Any] = {"first_chunk": s.first.summary(1).as_dict(),
                                 "last_chunk": s.last.summary(1).as_dict()}
        if s.first.first_error:
            entry["first_error"] = s.first.first_error
        out[name] = entry
    return out
