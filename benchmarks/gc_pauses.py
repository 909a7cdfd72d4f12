"""Cyclic GC pauses during a measurement: count, p50, max and total per generation.

Installed as a ``gc.callbacks`` entry between :meth:`GcPauses.start` and
:meth:`GcPauses.stop`; a pause is timed from the collector's ``start`` to its
``stop`` callback (the whole process is stopped meanwhile).
"""

from __future__ import annotations

import gc
import time
from typing import Any

__all__ = ["GcPauses"]


class GcPauses:
    """Times every collection while started."""

    def __init__(self) -> None:
        self._began = 0.0
        self.pauses: list[tuple[int, float]] = []  # (generation, seconds)

    def _callback(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._began = time.perf_counter()
        else:
            self.pauses.append((int(info["generation"]), time.perf_counter() - self._began))

    def start(self) -> None:
        """Forget earlier pauses and time collections from now on."""
        self.pauses = []
        gc.callbacks.append(self._callback)

    def stop(self) -> dict[str, Any]:
        """Stop timing; per generation: count, p50, max and total pause (ms)."""
        if self._callback in gc.callbacks:
            gc.callbacks.remove(self._callback)
        out: dict[str, Any] = {}
        for generation in (0, 1, 2):
            ms = sorted(s * 1000.0 for g, s in self.pauses if g == generation)
            if ms:
                out[f"gen{generation}"] = {"count": len(ms),
                                           "p50_ms": round(ms[len(ms) // 2], 3),
                                           "max_ms": round(ms[-1], 3),
                                           "total_ms": round(sum(ms), 1)}
        return out
