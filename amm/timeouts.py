"""The whole-request deadline, shared by the steps of one request.

``ModelManager.complete`` sets :data:`DEADLINE` (a ``time.monotonic()`` instant) for
the request it runs; the API client gives each attempt at most the time left
(:func:`attempt_timeout`), and the failover manager stops trying alternatives once it
has passed. A contextvar, so concurrent requests each see their own.
"""

from __future__ import annotations

import contextvars
import time

__all__ = ["DEADLINE", "attempt_timeout", "remaining"]

DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar("amm_deadline",
                                                                        default=None)


def remaining() -> float | None:
    """Seconds left before the current request's deadline (None: no deadline)."""
    deadline = DEADLINE.get()
    return None if deadline is None else deadline - time.monotonic()


def attempt_timeout(per_attempt_s: float) -> float:
    """The timeout of the next attempt: ``per_attempt_s``, or less when the request's
    deadline is nearer (never below 1 ms, so an expired deadline times out at once)."""
    left = remaining()
    if left is None:
        return per_attempt_s
    return max(0.001, min(per_attempt_s, left))
