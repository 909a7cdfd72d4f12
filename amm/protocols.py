"""What the selector and the failover manager need of their collaborators, as Protocols.

:class:`~amm.selector.ModelSelector` reads four components: the registry
(:class:`ModelSource`), the health checker (:class:`AvailabilitySource`), the rate
limiter (:class:`LimitSource`) and the statistics (:class:`StatsSource`: the
performance monitor, or a fleet's merged statistics). Each needs one or two cheap
synchronous queries; amm's own components satisfy them, and so do the small fakes of
the tests. A few richer queries are optional, each a Protocol of its own, checked
once when the selector is built (an absent one means "no information"):

- :class:`StatusSource` (``get_model_status``): the last error of an unavailable
  model, quoted in its exclusion reason;
- :class:`HeadroomSource` (``headroom``): the fraction of the rate-limit window left,
  for the availability factor (without it headroom counts as full);
- :class:`ResetSource` (``get_time_until_reset``): when a rate-limited model frees up;
- :class:`PolicySource` (``policy_config``): the registry's routing policy.

:class:`~amm.failover_manager.FailoverManager` needs an :class:`AlternativeSource`:
something that selects a model with ``exclude`` and ``demoted`` and exposes its
registry (for the context windows after a CONTEXT_TOO_LONG failure).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from amm.models import (
        Experiment,
        ModelAvailability,
        ModelMetadata,
        ModelRequest,
        ModelSelection,
        SelectionConstraints,
    )
    from telemetry.events import StatsSnapshot

__all__ = [
    "AlternativeSource",
    "AvailabilitySource",
    "HeadroomSource",
    "LimitSource",
    "ModelSource",
    "PolicySource",
    "ResetSource",
    "StatsSource",
    "StatusSource",
]


class ModelSource(Protocol):
    """The registry as selection reads it (:class:`~amm.registry.ModelRegistry`)."""

    @property
    def version(self) -> int:
        """Changes whenever the models do (selection re-indexes then)."""
        ...

    def models(self) -> Sequence[ModelMetadata]:
        """Every model, enabled or not."""
        ...

    def get_model(self, model_id: str) -> ModelMetadata | None:
        """The model with this id, or None."""
        ...

    def experiment_for(self, agent_type: str) -> Experiment | None:
        """The A/B experiment running on this agent type, or None."""
        ...


@runtime_checkable
class PolicySource(Protocol):
    """Optional: a registry that configures the routing policy."""

    def policy_config(self) -> Mapping[str, Any] | None:
        """The registry's ``"policy"`` object, or None."""
        ...


class AvailabilitySource(Protocol):
    """Health as selection reads it (:class:`~amm.health_checker.HealthChecker`)."""

    def is_model_available(self, model_id: str) -> bool:
        """Whether the model may be sent requests now."""
        ...


@runtime_checkable
class StatusSource(Protocol):
    """Optional: why a model is unavailable."""

    def get_model_status(self, model_id: str) -> ModelAvailability:
        """The model's availability with its last error."""
        ...


class LimitSource(Protocol):
    """Rate limits as selection reads them (:class:`~amm.rate_limiter.RateLimiter`)."""

    def is_rate_limited(self, model_id: str) -> bool:
        """Whether the model is at its limit now."""
        ...


@runtime_checkable
class HeadroomSource(Protocol):
    """Optional: how much of a model's rate-limit window is left."""

    def headroom(self, model_id: str) -> float:
        """The fraction of the window left, in [0, 1]."""
        ...


@runtime_checkable
class ResetSource(Protocol):
    """Optional: when a rate-limited model frees up."""

    def get_time_until_reset(self, model_id: str) -> int | None:
        """Whole seconds until the limit resets, or None."""
        ...


@runtime_checkable
class StatsSource(Protocol):
    """Measured statistics (:class:`~amm.performance_monitor.PerformanceMonitor`,
    :class:`~amm.state.stats.FleetStats`, or :class:`telemetry.stats.RollingStats`)."""

    def snapshot(self, model_id: str, agent_type: str | None = None) -> StatsSnapshot | None:
        """The rolling window of one model (for one agent type, or all when None)."""
        ...


class AlternativeSource(Protocol):
    """What the failover manager asks for alternatives (:class:`~amm.selector.ModelSelector`)."""

    @property
    def registry(self) -> ModelSource:
        """The registry the selection reads."""
        ...

    async def select_model(
        self,
        task: ModelRequest,
        agent_type: str,
        constraints: SelectionConstraints | None = None,
        *,
        exclude: Collection[str] = (),
        demoted: Collection[str] = (),
    ) -> ModelSelection | None:
        """The best eligible model not in ``exclude``, or None."""
        ...
