"""The shared-state port: what the request path asks of the fleet's common state.

One small interface, two implementations: :class:`~amm.state.memory.InProcessState`
(one process; also the fallback while Redis is away) and
:class:`~amm.state.redis_backend.RedisState` (every worker on one Redis, each request one
server-side script). The components keep their own per-process state either way;
this port adds what must be one number for the whole fleet:

- ``admit``: a model's request and token window (at the 90 % line) and the day's
  budget, reserved together before a call (the request path's one round trip);
- ``write``: what calls leave behind, batched off the request path in one round trip:
  admissions settled with the real tokens and the worker's exact ledger total
  (:class:`Settlement`), responses shared with the fleet's cache (:class:`CacheEntry`);
- ``cool_down``: a provider 429's Retry-After, seen by one worker, holds for all;
- ``put_flag``/``flags``: health, demotions and other facts that expire;
- ``lease``: one holder at a time (the health probe of a model);
- ``cache_get``/``cache_index``: the response cache's shared level (entries with a
  TTL) and the keys stored since a cursor (a worker asks only for keys it knows of);
- ``put_stats``/``stats``: each worker's rolling statistics, for fleet-wide merging.

Every method of a remote backend may raise :class:`StateUnavailable`; the caller
(:class:`~amm.state.fleet.FleetState`) falls back, never fails the request.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

__all__ = ["Admission", "CacheEntry", "Settlement", "StateBackend", "StateUnavailable",
           "Verdict"]


class StateUnavailable(Exception):
    """The shared backend did not answer (down, timed out, refused); carries the cause."""


@dataclass(frozen=True, slots=True)
class Admission:
    """One attempt asking to be let through: its window and its budget hold.

    ``request_cap``/``token_cap`` are the integer capacities at the 90 % line
    (0: unlimited); ``cost_usd`` is the held estimate (0 with ``budget_usd`` 0: no
    budget); ``worker_spend_usd`` is this worker's exact ledger total for ``day``,
    which keeps the fleet counter reconciled with the ledgers.
    """

    ticket: str
    model_id: str
    tokens: int
    request_cap: int
    token_cap: int
    window_s: float
    day: str = ""
    worker: str = ""
    cost_usd: float = 0.0
    budget_usd: float = 0.0
    worker_spend_usd: float = 0.0
    hold_ttl_s: float = 300.0


@dataclass(frozen=True, slots=True)
class Verdict:
    """The answer to an :class:`Admission`.

    ``reason`` is ``""`` when admitted, else ``"rate"`` (the window is full),
    ``"cooldown"`` (a provider 429 holds) or ``"budget"``. ``retry_after_s`` says
    when the refused request would fit. ``fleet_spend_usd`` is the day's booked
    spend over every worker (when a budget was asked about).
    """

    admitted: bool
    reason: str = ""
    retry_after_s: float = 0.0
    fleet_spend_usd: float = 0.0
    in_window: int = 0


@dataclass(frozen=True, slots=True)
class Settlement:
    """The end of an :class:`Admission`: ``tokens`` used (None: nothing was sent, the
    slot is given back), its budget hold dropped, the worker's ledger total then."""

    admission: Admission
    tokens: int | None
    worker_spend_usd: float


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A response shared through the fleet's cache: its key, payload and lifetime."""

    key: str
    payload: str
    ttl_s: float


class StateBackend(Protocol):
    """Where the fleet's shared state lives. Async; remote ones raise StateUnavailable."""

    name: str

    async def admit(self, a: Admission) -> Verdict:
        """Check the model's window, cool-down and the budget; reserve all or nothing."""
        ...

    async def write(self, settlements: Sequence[Settlement] = (),
                    cache: Sequence[CacheEntry] = ()) -> None:
        """Settle ``settlements`` and store ``cache`` entries, together (one round trip)."""
        ...

    async def cool_down(self, model_id: str, seconds: float) -> None:
        """Hold the model for everyone for ``seconds`` (never shortens a longer hold)."""
        ...

    async def put_flag(self, kind: str, key: str, value: str, ttl_s: float) -> None:
        """Set ``kind/key`` to ``value`` for ``ttl_s`` seconds (ttl 0: delete)."""
        ...

    async def flags(self, kind: str) -> dict[str, tuple[str, float]]:
        """Every live ``kind/key``: its value and the seconds it has left."""
        ...

    async def lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take or renew the lease ``name`` for ``owner``; False while another holds it."""
        ...

    async def cache_get(self, key: str) -> str | None:
        """The cached payload under ``key``, or None."""
        ...

    async def cache_index(self, since: float) -> tuple[list[str], float]:
        """The cache keys stored after cursor ``since`` (0: every live key) and the
        cursor to ask with next time."""
        ...

    async def put_stats(self, worker: str, payload: str, ttl_s: float) -> None:
        """This worker's statistics (opaque JSON), kept ``ttl_s`` seconds."""
        ...

    async def stats(self) -> dict[str, str]:
        """Every live worker's statistics payload."""
        ...

    async def ping(self) -> None:
        """Raise StateUnavailable unless the backend answers now."""
        ...

    async def aclose(self) -> None:
        """Release connections. Idempotent."""
        ...
