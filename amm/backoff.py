"""How long to wait before trying again: one backoff policy for amm's two loops.

The API client waits between retries on one model (with full jitter, so that many
clients retrying together do not hit the provider in step); the failover manager
waits between models (without jitter by default: 2, 4, 8 s). Both are
:class:`ExponentialBackoff`; anything with ``delay(attempt) -> seconds`` can replace it.

>>> [ExponentialBackoff(2).delay(k) for k in range(3)]
[2.0, 4.0, 8.0]
"""

from __future__ import annotations

import random
from typing import Protocol

from amm.errors import ConfigurationError

__all__ = ["BackoffPolicy", "ExponentialBackoff"]


class _Random(Protocol):
    def random(self) -> float: ...


class BackoffPolicy(Protocol):
    """How long to wait before try number ``attempt`` (0 for the first wait)."""

    def delay(self, attempt: int) -> float:
        """Seconds to wait."""
        ...


class ExponentialBackoff:
    """``base_s * factor ** attempt``, capped at ``max_s``; with ``jitter`` ("full
    jitter") a uniform draw in ``[0, that)`` instead. The RNG is injected for tests.
    """

    __slots__ = ("base_s", "factor", "jitter", "max_s", "rng")

    def __init__(self, base_s: float = 2.0, factor: float = 2.0, max_s: float | None = None,
                 *, jitter: bool = False, rng: _Random | None = None) -> None:
        for name, value in (("base_s", base_s), ("factor", factor), ("max_s", max_s)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                                      or value < 0):
                raise ConfigurationError(f"{name} must be a number >= 0; got {value!r}",
                                         field=name, error_type="invalid_backoff")
        self.base_s = float(base_s)
        self.factor = float(factor)
        self.max_s = None if max_s is None else float(max_s)
        self.jitter = jitter
        self.rng: _Random = rng if rng is not None else random.Random()

    def delay(self, attempt: int) -> float:
        """Seconds to wait before try ``attempt`` (0-based)."""
        d = self.base_s * self.factor ** attempt
        cap = d if self.max_s is None else min(d, self.max_s)
        return cap * self.rng.random() if self.jitter else cap

    def __repr__(self) -> str:
        jitter = ", full jitter" if self.jitter else ""
        return (f"ExponentialBackoff(base_s={self.base_s:g}, factor={self.factor:g}, "
                f"max_s={self.max_s}{jitter})")
