"""Building a worker's :class:`~amm.state.fleet.FleetState` from its settings.

``ModelManager.from_config`` calls :func:`open_fleet` once with the components it
built; no URL in force means no fleet state at all (the in-process default, at no
cost on the request path).
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

from amm.state import STATE_URL_ENV, open_backend, resolve_state_url
from amm.state.fleet import FleetState
from amm.state.stats import FleetStats

__all__ = ["FAIL_CLOSED_ENV", "STATE_URL_ENV", "open_fleet", "share_demotions", "worker_id"]

FAIL_CLOSED_ENV = "AMM_STATE_FAIL_CLOSED"
"""``1``/``true``: while the shared state is away, refuse budgeted calls rather than
fall back to this worker's share of the budget (default: fall back)."""


def worker_id(data_dir: Path | str) -> str:
    """A stable id for the worker that owns ``data_dir`` on this host: its budget spend
    field in the shared state survives a restart (the same ledger, the same field)."""
    where = f"{socket.gethostname()}:{Path(data_dir).resolve()}"
    return f"{socket.gethostname()}-{hashlib.sha256(where.encode()).hexdigest()[:10]}"


def open_fleet(
    state_url: str | None,
    *,
    registry: Any,
    limiter: Any,
    costs: Any,
    health: Any,
    monitor: Any,
    recorder: Any,
    data_dir: Path | str,
    enforce_budget: bool = True,
    meter_provider: Any = None,
) -> FleetState | None:
    """The fleet state for the URL in force (argument > ``$AMM_STATE_URL`` > the
    registry's ``state.url``), wired into the components; None for in-process."""
    configured = registry.state_config() or {}
    url = resolve_state_url(state_url, configured.get("url"))
    if url is None:
        return None
    env_closed = os.environ.get(FAIL_CLOSED_ENV, "").strip().lower()
    fail_closed = (env_closed in ("1", "true", "yes") if env_closed
                   else bool(configured.get("fail_closed", False)))
    fleet = FleetState(
        open_backend(url), limiter=limiter, costs=costs, worker=worker_id(data_dir),
        enforce_budget=enforce_budget, fail_closed=fail_closed, health=health,
        stats=FleetStats(monitor), meter_provider=meter_provider)
    health.set_lease(fleet.lease)
    recorder.add_listener(fleet)
    return fleet


def share_demotions(fleet: FleetState, demoted: MutableMapping[tuple[str, str], float],
                    clock: Callable[[], float], seconds: float) -> None:
    """Demotions another worker published land in ``demoted`` ((agent, model) -> the
    monotonic time they end), the manager's own table; this worker's are published
    for ``seconds``."""
    fleet.set_demotion_seconds(seconds)

    def landed(agent: str, model: str, left_s: float) -> None:
        until = clock() + left_s
        if demoted.get((agent, model), 0.0) < until:
            demoted[(agent, model)] = until

    fleet.on_demoted = landed

