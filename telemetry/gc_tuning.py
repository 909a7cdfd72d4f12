"""Cyclic GC for a long-running amm process: freeze the heap once it is warm.

A full (generation 2) collection walks every tracked object of the process. After
``import litellm`` that is ~10^6 objects, so an automatic full collection stops
every thread for ~250 ms (measured in the benchmark's process; generation 0 and 1
passes take ~0.2 and ~1.2 ms). Almost all of those objects live as long as the
process (modules, litellm's price map, pydantic models). :func:`freeze_warm_heap`
collects once, then moves every surviving object to the permanent generation
(``gc.freeze()``), which later collections skip: a full collection then costs
~1-3 ms. Call it once, after warm-up (the first requests have run, so lazily built
state exists), e.g. at the end of an application's start-up:

>>> await manager.start(); await manager.complete(warm_request)
>>> telemetry.gc_tuning.freeze_warm_heap()

Frozen objects are never collected: garbage made before the call is collected first,
so only what is alive at that moment is kept (which it would be anyway).
Generation thresholds are left at Python's defaults: the benchmark's profile showed
each pass's pause growing with its threshold (fewer, longer pauses), which moves the
tail up, not down.
"""

from __future__ import annotations

import gc

__all__ = ["freeze_warm_heap"]


def freeze_warm_heap() -> int:
    """Collect, then freeze every object alive now; how many objects are frozen in all.

    Idempotent in effect: a second call freezes what was created since the first.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()
