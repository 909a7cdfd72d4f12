"""Sliding windows of one model's requests and tokens, and the arithmetic on them.

The data and the pure functions behind :class:`amm.rate_limiter.RateLimiter`: a window
is a deque of entries (time, tokens, counts-as-a-request) with running sums, so
counting and expiring are O(1) amortised; :func:`wait_until_fits` answers "how long
until this much more fits under the cap" exactly, by walking the window from its
oldest entry (only when the answer is not "now").
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Callable, Iterable

from amm.models import RateLimits

__all__ = ["INF", "Entry", "Window", "capacity", "wait_until_fits"]

INF = math.inf
"""No limit."""


class Entry:
    """One request in a window: when it was sent, its tokens, and whether it still
    counts as a request (a released reservation counts as nothing)."""

    __slots__ = ("requests", "t", "tokens")

    def __init__(self, t: float, tokens: int) -> None:
        self.t = t
        self.tokens = tokens
        self.requests = 1


class Window:
    """The sliding window of one model plus what the provider told us about it."""

    __slots__ = (
        "entries",
        "extra_requests",
        "extra_requests_until",
        "extra_tokens",
        "extra_tokens_until",
        "limits",
        "memo",
        "provider_until",
        "request_cap",
        "requests",
        "token_cap",
        "tokens",
        "version",
    )

    def __init__(self) -> None:
        self.entries: deque[Entry] = deque()
        self.requests = 0
        self.tokens = 0
        self.limits: RateLimits | None = None
        self.request_cap = INF
        self.token_cap = INF
        # monotonic time until which the provider's 429 holds
        self.provider_until = -INF
        # usage the provider reported beyond our own count, valid until its reset
        self.extra_requests = 0
        self.extra_requests_until = -INF
        self.extra_tokens = 0
        self.extra_tokens_until = -INF
        # Bumped by every change above; ``memo`` is the selector's last read of the window
        # (see RateLimiter._view): (version, registry version, valid until, limited,
        # headroom), replaced whole so a reader without the lock sees one consistent read.
        self.version = 0
        self.memo: tuple[int, object, float, bool, float] = (-1, None, -INF, False, 1.0)


def capacity(limit: int, threshold: float, window_s: float) -> float:
    """Integer capacity of a window at the threshold; no limit when the limit is <= 0."""
    if limit <= 0:
        return INF
    # the epsilon keeps 0.9 * 10 from flooring to 8 through float error
    return float(max(1, math.floor(threshold * limit * window_s / 60.0 + 1e-9)))


def wait_until_fits(
    entries: Iterable[Entry],
    amount: Callable[[Entry], int],
    used: int,
    extra: int,
    extra_until: float,
    cap: float,
    need: int,
    now: float,
    window_s: float,
    empty_admits: bool,
) -> float:
    """Seconds from ``now`` until ``need`` more fits under ``cap`` in one dimension.

    Walks the window from its oldest entry: the answer is the moment the entry whose
    expiry makes room leaves the window; provider-reported extra usage vanishes at
    ``extra_until``. ``empty_admits``: an empty window admits any size, so a request
    larger than the cap is never starved forever.
    """

    def fits(u: int, x: int) -> bool:
        return u + x + need <= cap or (empty_admits and u + x == 0)

    def walk(x: int) -> float:
        if fits(used, x):
            return now
        u = used
        for e in entries:
            u -= amount(e)
            if fits(u, x):
                return e.t + window_s
        return INF

    if extra <= 0 or extra_until <= now:
        return max(0.0, walk(0) - now)
    with_extra = walk(extra)
    without = max(walk(0), extra_until)
    return max(0.0, min(with_extra, without) - now)
