"""The events amm records, as typed values, and the one protocol that receives them.

A component reports each event once, to its ``EventSink`` (one line at one place);
the recorder (:mod:`telemetry.recorder`) fans it out to the current span, the metric
instruments, the rolling statistics and any listener (the cost ledger, the durable
performance table). This module imports nothing from OpenTelemetry, so components
and analytics can use it for free.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

__all__ = [
    "HEALTH_CHECK_AGENT",
    "NULL_SINK",
    "SELECTION_CACHE_HIT",
    "SELECTION_FAILOVER",
    "SELECTION_INITIAL",
    "AttemptEvent",
    "BudgetAlertEvent",
    "CacheEvent",
    "DegradationEvent",
    "Event",
    "EventSink",
    "FailoverEvent",
    "HealthChangeEvent",
    "ModelDemotedEvent",
    "NullSink",
    "QualityEvent",
    "RateLimitedEvent",
    "SelectionEvent",
    "StatsSnapshot",
]


HEALTH_CHECK_AGENT = "health"
"""The agent type of health-check probes: billed like traffic, but not traffic, so
rolling statistics and passive health leave them out."""


SELECTION_INITIAL = "initial"
"""``SelectionEvent.stage`` of a request's first selection: the routing decision."""
SELECTION_FAILOVER = "failover"
"""``SelectionEvent.stage`` of a re-selection after a failed attempt (part of the outcome)."""
SELECTION_CACHE_HIT = "cache_hit"
"""``SelectionEvent.stage`` of a request answered from the cache (no routing happened)."""


@dataclass(frozen=True, slots=True)
class SelectionEvent:
    """One selection: every candidate's score, every excluded model and why."""

    agent_type: str
    task_id: str
    chosen: str | None
    reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    excluded: Mapping[str, str] = field(default_factory=dict)
    experiment: str | None = None
    arm: str | None = None
    propensity: float = 1.0
    start_time_ns: int = 0  # epoch ns; 0 = "now" (the recorder builds the span after the fact)
    end_time_ns: int = 0
    # The whole decision, for off-policy evaluation (analytics.ope). ``candidates``: every
    # eligible model, best score first, as (model, score, probability, estimated cost USD,
    # quality, p50 latency ms, success rate): what the policy saw and what it gave each.
    candidates: tuple[tuple[str, float, float, float, float, float, float], ...] = ()
    policy: str = "score"  # the policy kind that decided (amm.policy)
    policy_version: str = ""
    features: Mapping[str, str | int | float] = field(default_factory=dict)
    stage: str = SELECTION_INITIAL  # initial | failover (a re-selection) | cache_hit


@dataclass(frozen=True, slots=True)
class AttemptEvent:
    """One provider attempt, successful or not. Its tokens and cost are billed once:
    the ledger books every AttemptEvent with ``cost_usd`` or tokens > 0."""

    model_id: str
    provider: str
    agent_type: str
    task_id: str
    attempt: int
    latency_ms: float
    success: bool
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    error_type: str | None = None
    error_message: str | None = None
    finish_reason: str | None = None
    response_model: str | None = None
    response_id: str | None = None
    server_address: str | None = None
    server_port: int | None = None
    request_max_tokens: int | None = None
    request_temperature: float | None = None
    start_time_ns: int = 0  # epoch ns of the attempt's start and end (time.time_ns())
    end_time_ns: int = 0
    # Content, recorded only when OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT asks.
    input_messages: tuple[dict[str, object], ...] | None = None
    output_text: str | None = None
    # Agent calls: streaming, tools, estimated usage.
    stream: bool = False
    time_to_first_chunk_s: float | None = None  # streamed: request sent -> first chunk
    output_chunks: int = 0  # streamed: chunks received
    tool_call_count: int = 0
    usage_estimated: bool = False  # the provider reported no usage: tokens are amm's estimate
    tool_definitions: tuple[dict[str, object], ...] | None = None  # content opt-in only
    output_tool_calls: tuple[dict[str, object], ...] | None = None  # content opt-in only
    # The cost split (USD) at the registry's per-token prices; None when the cost came
    # from elsewhere (an adapter's own price, litellm's price map), whose split amm
    # does not know. When given, input + output == cost_usd (to rounding).
    input_cost_usd: float | None = None
    output_cost_usd: float | None = None


@dataclass(frozen=True, slots=True)
class FailoverEvent:
    """A request left ``from_model`` for ``to_model`` (None: nothing was left)."""

    from_model: str
    to_model: str | None
    reason: str
    agent_type: str = ""
    task_id: str = ""


@dataclass(frozen=True, slots=True)
class RateLimitedEvent:
    """A model was limited: by the provider (a 429) or by amm's own limiter (avoided)."""

    model_id: str
    source: str  # "provider" | "local"
    retry_after_s: float | None = None
    agent_type: str = ""
    task_id: str = ""


@dataclass(frozen=True, slots=True)
class CacheEvent:
    """A cache lookup."""

    hit: bool
    agent_type: str = ""
    model_id: str | None = None
    task_id: str = ""


@dataclass(frozen=True, slots=True)
class QualityEvent:
    """The evaluation of one response (scores in [0, 1])."""

    model_id: str
    agent_type: str
    task_id: str
    overall: float
    completeness: float
    relevance: float
    coherence: float
    start_time_ns: int = 0
    end_time_ns: int = 0
    label: str | None = None  # "pass" | "fail": overall against the evaluator's threshold
    explanation: str | None = None  # why this score, in words (the scorer's breakdown)


@dataclass(frozen=True, slots=True)
class BudgetAlertEvent:
    """Spend crossed an alert threshold (50, 80, 100 %) of the daily budget."""

    threshold_percent: float
    utilization_percent: float
    current_spend: float
    daily_budget: float


@dataclass(frozen=True, slots=True)
class HealthChangeEvent:
    """A model became available or unavailable."""

    model_id: str
    is_available: bool
    consecutive_failures: int = 0
    error: str | None = None


@dataclass(frozen=True, slots=True)
class DegradationEvent:
    """A metric of a model degraded against its baseline."""

    model_id: str
    metric: str
    current_value: float
    baseline_value: float
    threshold: float
    agent_type: str | None = None


@dataclass(frozen=True, slots=True)
class ModelDemotedEvent:
    """A model is demoted for an agent type (e.g. low quality over the window)."""

    model_id: str
    agent_type: str
    reason: str


Event = (
    SelectionEvent
    | AttemptEvent
    | FailoverEvent
    | RateLimitedEvent
    | CacheEvent
    | QualityEvent
    | BudgetAlertEvent
    | HealthChangeEvent
    | DegradationEvent
    | ModelDemotedEvent
)


@runtime_checkable
class EventSink(Protocol):
    """Receives events. Must not raise and must not block (it is on the request path)."""

    def record(self, event: Event) -> None: ...


class NullSink:
    """Drops every event: the default sink of a component that nobody wired."""

    __slots__ = ()

    def record(self, event: Event) -> None:
        return None


NULL_SINK = NullSink()


@dataclass(frozen=True, slots=True)
class StatsSnapshot:
    """Rolling statistics of one (model, agent type) over the sliding window.

    ``agent_type`` None means all agent types. ``success_rate`` is a fraction in
    [0, 1]; ``mean_quality`` is None until a response was evaluated.
    """

    model_id: str
    agent_type: str | None
    count: int
    successes: int
    success_rate: float
    mean_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    mean_quality: float | None
    quality_count: int
    cost_usd: float
    input_tokens: int
    output_tokens: int
    errors: Mapping[str, int] = field(default_factory=dict)
