"""Shared state for a fleet of workers: rate-limit windows, budget, health, cache.

No URL (the default): every process keeps its own state, in memory, and needs no
server. ``state_url="redis://host:port/db"`` (or ``AMM_STATE_URL``, or the
registry's ``"state": {"url": ...}``) makes every worker that names the same Redis
share one window per model, one daily budget, health, demotions, provider
cool-downs, the cache's shared level and merged selection statistics.

- :mod:`amm.state.base`: the port (:class:`StateBackend`) and its value objects;
- :mod:`amm.state.memory`: :class:`InProcessState`;
- :mod:`amm.state.redis_backend`: :class:`RedisState` (atomic scripts; one round trip
  per request, its admission);
- :mod:`amm.state.fleet`: :class:`FleetState`, the request path's side (fallback);
- :mod:`amm.state.stats`: :class:`FleetStats`, fleet-merged selection statistics.
"""

from __future__ import annotations

import os

from amm.errors import ConfigurationError
from amm.state.base import (
    Admission,
    CacheEntry,
    Settlement,
    StateBackend,
    StateUnavailable,
    Verdict,
)
from amm.state.fleet import FleetState, FleetTicket
from amm.state.memory import InProcessState
from amm.state.stats import FleetStats

__all__ = [
    "STATE_URL_ENV",
    "Admission",
    "CacheEntry",
    "FleetState",
    "FleetStats",
    "FleetTicket",
    "InProcessState",
    "Settlement",
    "StateBackend",
    "StateUnavailable",
    "Verdict",
    "open_backend",
    "resolve_state_url",
]

STATE_URL_ENV = "AMM_STATE_URL"
"""Environment variable naming the fleet's shared state (``redis://host:port/db``);
an explicit ``state_url=`` wins over it, and it wins over the registry file's."""

_SCHEMES = ("redis://", "rediss://", "unix://", "memory://")


def resolve_state_url(explicit: str | None = None, configured: str | None = None) -> str | None:
    """The state URL in force: ``explicit`` > ``$AMM_STATE_URL`` > ``configured`` (the
    registry's ``state.url``) > None (in-process). An empty string means none."""
    for url in (explicit, os.environ.get(STATE_URL_ENV), configured):
        if url is not None:
            return url.strip() or None
    return None


def open_backend(url: str, **options: float) -> StateBackend:
    """The backend for ``url``: ``redis://``/``rediss://``/``unix://`` -> RedisState,
    ``memory://`` -> InProcessState. ConfigurationError for anything else."""
    if not isinstance(url, str) or not url.startswith(_SCHEMES):
        raise ConfigurationError(
            f"state_url: expected redis://host:port/db (or rediss://, unix://, memory://); "
            f"got {url!r}", field="state_url")
    if url.startswith("memory://"):
        return InProcessState()
    from amm.state.redis_backend import RedisState

    return RedisState(url, **options)  # type: ignore[arg-type]
