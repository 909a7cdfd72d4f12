"""How the selector scores an eligible model: the replaceable scoring policy.

A :class:`Scorer` turns one :class:`Candidate` (a model plus what is known about it
for this request) and the request's :class:`ScoreContext` (normalisation bounds over
all candidates) into a :class:`ScoreBreakdown`. The built-in :class:`WeightedScorer`
implements the seed's weights (``docs/seed.md``), capability 30 % + cost 25 % + performance 25 % +
availability 20 %, and shifts them with the task priority:

==========  ==========  =====  ===========  ============
priority    capability  cost   performance  availability
==========  ==========  =====  ===========  ============
HIGH        0.35        0.10   0.35         0.20
MEDIUM      0.30        0.25   0.25         0.20
LOW         0.20        0.45   0.15         0.20
==========  ==========  =====  ===========  ============

Each factor is normalised to [0, 1] before weighting:

- **capability** = 0.8 x coverage + 0.2 x breadth; coverage is the fraction of the
  required capabilities the model lists (1.0 when none are required), breadth its
  number of capabilities over the largest number any candidate lists.
- **cost** is log-scaled relative to the cheapest candidate:
  ``1 - (ln(c + e) - ln(c_min + e)) / (ln(c_max + e) - ln(c_min + e))`` with ``c``
  the estimated USD of this request and ``e`` = :data:`COST_EPSILON_USD`; 1.0 when
  every candidate costs the same. Prices span orders of magnitude, so a linear scale
  would call every model but the dearest "free".
- **performance** = 0.4 x success rate + 0.3 x latency + 0.3 x quality, with latency
  = fastest candidate's latency / this one's (1.0 for the fastest). Measured rolling
  values are used once a model has ``min_samples`` requests; before that the priors:
  success :data:`PRIOR_SUCCESS_RATE`, the registry's ``average_response_time_ms``,
  quality :data:`PRIOR_QUALITY`.
- **availability** = headroom x reliability (unhealthy and rate-limited models are
  already filtered out); headroom = min(1, rate-limit headroom /
  :data:`HEADROOM_COMFORT`), so a model is at full availability until less than 20 %
  of its window remains (headroom is 1.0 unless the rate limiter reports it, see
  :class:`~amm.selector.ModelSelector`); reliability = the measured success rate
  (1.0 until measured). Recent failures thus
  count twice, in performance and in availability: a model that fails most requests
  must not win on price alone.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple, Protocol

from amm.errors import ConfigurationError
from amm.models import ModelMetadata, Priority

__all__ = [
    "COST_EPSILON_USD",
    "DEFAULT_WEIGHTS",
    "HEADROOM_COMFORT",
    "HIGH_PRIORITY_WEIGHTS",
    "LOW_PRIORITY_WEIGHTS",
    "PRIOR_QUALITY",
    "PRIOR_SUCCESS_RATE",
    "Candidate",
    "ScoreBreakdown",
    "ScoreContext",
    "Scorer",
    "WeightedScorer",
    "Weights",
]

PRIOR_SUCCESS_RATE = 0.95
"""Success rate assumed for a model with fewer than ``min_samples`` measured requests."""

PRIOR_QUALITY = 0.75
"""Quality assumed for a model with no measured quality yet (between 'fine' and 'good')."""

COST_EPSILON_USD = 1e-5
"""A hundredth of a cent: costs below it count as free in the log-scaled cost factor."""

HEADROOM_COMFORT = 0.2
"""Rate-limit headroom (fraction of the window left) above which availability is full."""


@dataclass(frozen=True, slots=True)
class Weights:
    """Factor weights; non-negative and summing to 1."""

    capability: float
    cost: float
    performance: float
    availability: float

    def __post_init__(self) -> None:
        values = (self.capability, self.cost, self.performance, self.availability)
        if any(not isinstance(v, int | float) or isinstance(v, bool) or v < 0 for v in values):
            raise ConfigurationError(f"weights must be numbers >= 0; got {values}", field="weights")
        if abs(sum(values) - 1.0) > 1e-9:
            raise ConfigurationError(f"weights must sum to 1; got {sum(values):g}", field="weights")


DEFAULT_WEIGHTS = Weights(capability=0.30, cost=0.25, performance=0.25, availability=0.20)
"""The seed's weights, used for MEDIUM priority."""

HIGH_PRIORITY_WEIGHTS = Weights(capability=0.35, cost=0.10, performance=0.35, availability=0.20)
"""HIGH priority: 0.15 of weight moves from cost to capability (+0.05) and performance (+0.10)."""

LOW_PRIORITY_WEIGHTS = Weights(capability=0.20, cost=0.45, performance=0.15, availability=0.20)
"""LOW priority: 0.20 of weight moves to cost from capability (-0.10) and performance (-0.10)."""


class Candidate:
    """One model as the scorer sees it for one request.

    ``latency_ms`` (p50), ``p95_latency_ms``, ``success_rate`` and ``quality`` are
    measured values when ``measured`` is true, else the priors. ``headroom`` is the fraction of the
    rate-limit window left (1.0 when unknown).
    """

    # A plain slotted class: built once per eligible model per request, so it must be cheap.
    __slots__ = (
        "capabilities", "estimated_cost", "headroom", "latency_ms",
        "measured", "model", "p95_latency_ms", "quality", "success_rate",
    )

    def __init__(
        self,
        model: ModelMetadata,
        capabilities: frozenset[str],
        estimated_cost: float,
        latency_ms: float,
        success_rate: float,
        quality: float,
        measured: bool,
        p95_latency_ms: float = 0.0,
        headroom: float = 1.0,
    ) -> None:
        self.model = model
        self.capabilities = capabilities
        self.estimated_cost = estimated_cost
        self.latency_ms = latency_ms
        self.success_rate = success_rate
        self.quality = quality
        self.measured = measured
        self.p95_latency_ms = p95_latency_ms or latency_ms
        self.headroom = headroom

    def __repr__(self) -> str:
        return (f"Candidate({self.model.id!r}, cost={self.estimated_cost:.6f}, "
                f"latency_ms={self.latency_ms:.0f}, success={self.success_rate:.2f}, "
                f"quality={self.quality:.2f}, measured={self.measured})")


@dataclass(frozen=True, slots=True)
class ScoreContext:
    """What a score is relative to: the request and bounds over all its candidates."""

    required_capabilities: frozenset[str]
    priority: Priority
    min_cost: float
    max_cost: float
    fastest_latency_ms: float
    max_capability_count: int


class ScoreBreakdown(NamedTuple):
    """Weighted contribution of each factor; ``total`` is their sum, in [0, 1]."""

    capability: float
    cost: float
    performance: float
    availability: float

    @property
    def total(self) -> float:
        """The suitability score."""
        return self.capability + self.cost + self.performance + self.availability

    def describe(self) -> str:
        """``capability 0.30, cost 0.21, performance 0.19, availability 0.12``."""
        return (f"capability {self.capability:.2f}, cost {self.cost:.2f}, "
                f"performance {self.performance:.2f}, availability {self.availability:.2f}")


_new_breakdown = tuple.__new__  # skips NamedTuple's Python-level __new__ on the hot path


class Scorer(Protocol):
    """A scoring policy: one candidate in its context -> a breakdown."""

    def score(self, candidate: Candidate, context: ScoreContext) -> ScoreBreakdown:
        """Score ``candidate``; higher is better, total in [0, 1]."""
        ...


class WeightedScorer:
    """The seed's weighted sum (see the module docstring for every normalisation).

    >>> WeightedScorer(Weights(0.4, 0.2, 0.2, 0.2))  # custom MEDIUM weights
    """

    __slots__ = ("_by_priority", "_derived")

    def __init__(
        self,
        weights: Weights = DEFAULT_WEIGHTS,
        *,
        high: Weights = HIGH_PRIORITY_WEIGHTS,
        low: Weights = LOW_PRIORITY_WEIGHTS,
    ) -> None:
        for w in (weights, high, low):
            if not isinstance(w, Weights):
                raise ConfigurationError(f"expected Weights, got {type(w).__name__}",
                                         field="weights")
        self._by_priority: Mapping[Priority, Weights] = {
            Priority.HIGH: high, Priority.MEDIUM: weights, Priority.LOW: low,
        }
        self._derived: tuple[Any, ...] = (None,)

    def weights_for(self, priority: Priority) -> Weights:
        """The weight vector used for ``priority``."""
        return self._by_priority[priority]

    def _derive(self, context: ScoreContext) -> tuple[Any, ...]:
        # Everything that is the same for every candidate of one request, computed once
        # per context (a selection scores all its candidates against one context).
        w = self._by_priority[context.priority]
        low = math.log(context.min_cost + COST_EPSILON_USD)
        span = math.log(context.max_cost + COST_EPSILON_USD) - low
        derived = (
            context, w.capability, w.cost, w.performance, w.availability,
            context.required_capabilities, len(context.required_capabilities),
            context.max_capability_count, low, 1.0 / span if span > 0 else 0.0,
            context.fastest_latency_ms,
        )
        self._derived = derived  # one store: a concurrent reader sees old or new, whole
        return derived

    def score(self, candidate: Candidate, context: ScoreContext) -> ScoreBreakdown:
        """Weighted capability, cost, performance and availability of ``candidate``."""
        return self.score_all((candidate,), context)[0]

    def score_all(self, candidates: Sequence[Candidate], context: ScoreContext
                  ) -> list[ScoreBreakdown]:
        """:meth:`score` of each of ``candidates`` (same order): one call per selection,
        the context's terms unpacked once, not once per candidate."""
        d = self._derived
        if d[0] is not context:
            d = self._derive(context)
        (_, w_cap, w_cost, w_perf, w_avail, required, n_required, max_caps, low, inv_span,
         fastest) = d
        log = math.log
        out = []
        for candidate in candidates:
            caps = candidate.capabilities
            # Selection passes only models with every required capability: no set built.
            coverage = (1.0 if not n_required or required <= caps
                        else len(required & caps) / n_required)
            breadth = len(caps) / max_caps if max_caps else 1.0
            capability = 0.8 * coverage + 0.2 * (breadth if breadth < 1.0 else 1.0)

            if inv_span:
                cost = 1.0 - (log(candidate.estimated_cost + COST_EPSILON_USD) - low) * inv_span
                cost = 0.0 if cost < 0.0 else (1.0 if cost > 1.0 else cost)
            else:
                cost = 1.0

            latency = candidate.latency_ms
            speed = fastest / latency if latency > fastest else 1.0
            success = candidate.success_rate
            performance = 0.4 * success + 0.3 * speed + 0.3 * candidate.quality

            headroom = candidate.headroom / HEADROOM_COMFORT
            headroom = 0.0 if headroom < 0.0 else (1.0 if headroom > 1.0 else headroom)
            availability = headroom * (success if candidate.measured else 1.0)

            out.append(_new_breakdown(ScoreBreakdown, (
                w_cap * capability, w_cost * cost, w_perf * performance,
                w_avail * availability,
            )))
        return out

    def __repr__(self) -> str:
        return f"WeightedScorer({self._by_priority[Priority.MEDIUM]})"
