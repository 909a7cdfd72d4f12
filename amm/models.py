"""Value objects of amm: the seed's data models and the few it uses without describing.

Every record is a frozen dataclass with ``slots``: cheap to build on the hot path,
safe to share between tasks, and never a dict passed around as a record. Mutable
defaults use ``default_factory`` (the seed's ``= []`` is prose, not code). Change a
record with :func:`dataclasses.replace`.

Validation that a caller can get wrong (an empty prompt, a negative ``max_tokens``)
raises :class:`amm.errors.InvalidRequestError` at construction, so a bad request
never reaches selection.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol, runtime_checkable

from amm.errors import InvalidRequestError

__all__ = [
    "BudgetStatus",
    "CachedResponse",
    "ErrorResponse",
    "Experiment",
    "FailoverReason",
    "HealthStatus",
    "ModelAvailability",
    "ModelMetadata",
    "ModelRequest",
    "ModelResponse",
    "ModelSelection",
    "PerformanceDegradation",
    "PerformanceMetrics",
    "Priority",
    "ProviderAdapter",
    "QualityScore",
    "RateLimitStatus",
    "RateLimits",
    "SelectionConstraints",
    "TokenUsage",
    "utcnow",
]


def utcnow() -> datetime:
    """The current time, timezone-aware in UTC (every timestamp amm makes is)."""
    return datetime.now(UTC)


class Priority(enum.StrEnum):
    """Task priority: HIGH weights capability and quality up, LOW weights cost up."""

    # Upper-case values: the seed compares ``task.priority == "HIGH"``.
    HIGH = "HIGH"
    MEDIUM = "MEDIUM"
    LOW = "LOW"

    @classmethod
    def parse(cls, value: object) -> Priority:
        """Accept a Priority, or its name/value in any case (``"HIGH"``, ``"low"``)."""
        if isinstance(value, Priority):
            return value
        if isinstance(value, str):
            try:
                return cls(value.upper())
            except ValueError:
                pass
        raise InvalidRequestError(
            f"priority must be one of high, medium, low; got {value!r}", error_type="invalid_priority"
        )


class FailoverReason(enum.StrEnum):
    """Why a request left a model for another one."""

    UNAVAILABLE = "unavailable"
    RATE_LIMITED = "rate_limited"
    ERROR = "error"
    TIMEOUT = "timeout"
    LOW_QUALITY = "low_quality"
    AUTHENTICATION = "authentication"
    MODEL_NOT_FOUND = "model_not_found"
    CONTEXT_TOO_LONG = "context_too_long"
    QUOTA_EXCEEDED = "quota_exceeded"
    BUDGET = "budget"


@dataclass(frozen=True, slots=True)
class RateLimits:
    """A provider's published limits for one model."""

    requests_per_minute: int
    tokens_per_minute: int


@dataclass(frozen=True, slots=True)
class ModelMetadata:
    """Metadata for an AI model, as the registry holds it.

    ``litellm_model`` and ``api_base`` say where litellm sends the request; the
    registry fills ``litellm_model`` from the provider when the config leaves it out.
    """

    id: str
    provider: str
    name: str
    capabilities: list[str]
    cost_per_1k_input_tokens: float
    cost_per_1k_output_tokens: float
    rate_limits: RateLimits
    context_window: int
    average_response_time_ms: float
    enabled: bool = True
    litellm_model: str | None = None
    api_base: str | None = None

    def estimate_cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for the given token counts at this model's prices."""
        return (
            input_tokens * self.cost_per_1k_input_tokens
            + output_tokens * self.cost_per_1k_output_tokens
        ) / 1000.0


@dataclass(frozen=True, slots=True)
class Experiment:
    """An A/B experiment: one agent type's traffic split between models by weight."""

    name: str
    agent_type: str
    arms: Mapping[str, float]
    enabled: bool = True


@dataclass(frozen=True, slots=True)
class ModelRequest:
    """Request to an AI model.

    Give ``prompt`` or chat ``messages`` (a list of ``{"role", "content"}`` dicts).
    ``parameters`` may carry ``temperature`` (it wins over the field, as in the
    seed's examples) and ``priority``.

    >>> ModelRequest(prompt="Hi", parameters={}, task_id="t1", agent_type="research")
    """

    prompt: str = ""
    parameters: dict[str, Any] = field(default_factory=dict)
    task_id: str = ""
    agent_type: str = ""
    max_tokens: int | None = None
    temperature: float = 0.7
    messages: Sequence[Mapping[str, Any]] | None = None
    priority: Priority | str | None = None

    def __post_init__(self) -> None:
        if not self.prompt and not self.messages:
            raise InvalidRequestError(
                "a ModelRequest needs a prompt or messages", task_id=self.task_id or None,
                error_type="empty_request",
            )
        if self.messages is not None:
            for i, m in enumerate(self.messages):
                if not isinstance(m, Mapping) or "role" not in m or "content" not in m:
                    raise InvalidRequestError(
                        f"messages[{i}] must be a mapping with 'role' and 'content'",
                        task_id=self.task_id or None, error_type="invalid_messages",
                    )
        if self.max_tokens is not None and (
            not isinstance(self.max_tokens, int) or isinstance(self.max_tokens, bool)
            or self.max_tokens <= 0
        ):
            raise InvalidRequestError(
                f"max_tokens must be a positive integer; got {self.max_tokens!r}",
                task_id=self.task_id or None, error_type="invalid_max_tokens",
            )
        t = self.effective_temperature
        if not isinstance(t, int | float) or isinstance(t, bool) or not 0.0 <= t <= 2.0:
            raise InvalidRequestError(
                f"temperature must be a number in [0, 2]; got {t!r}",
                task_id=self.task_id or None, error_type="invalid_temperature",
            )
        if self.priority is not None:
            object.__setattr__(self, "priority", Priority.parse(self.priority))

    @property
    def effective_temperature(self) -> float:
        """``parameters["temperature"]`` when given, else the ``temperature`` field."""
        value = self.parameters.get("temperature", self.temperature)
        return value  # type: ignore[no-any-return,unused-ignore]

    @property
    def effective_priority(self) -> Priority:
        """The request's priority: the field, else ``parameters["priority"]``, else MEDIUM."""
        if self.priority is not None:
            return self.priority  # type: ignore[return-value]
        raw = self.parameters.get("priority")
        return Priority.parse(raw) if raw is not None else Priority.MEDIUM

    def chat_messages(self) -> list[dict[str, Any]]:
        """The request as chat messages (the prompt becomes one user message)."""
        if self.messages:
            return [dict(m) for m in self.messages]
        return [{"role": "user", "content": self.prompt}]

    def text(self) -> str:
        """All the request's text, for token estimates and relevance scoring."""
        if self.messages:
            return "\n".join(str(m.get("content", "")) for m in self.messages)
        return self.prompt


@dataclass(frozen=True, slots=True)
class TokenUsage:
    """Token counts of one response; ``total_tokens`` is derived when not given."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int | None = None

    def __post_init__(self) -> None:
        if self.total_tokens is None:
            object.__setattr__(self, "total_tokens", self.input_tokens + self.output_tokens)


@dataclass(frozen=True, slots=True)
class ModelResponse:
    """Response from an AI model. ``metadata`` holds provider details (finish reason,
    response id, provider-reported model, cache flags)."""

    content: str
    model_id: str
    token_usage: TokenUsage
    latency_ms: float
    cost: float
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ModelSelection:
    """Result of model selection.

    Beyond the seed's fields: ``scores`` (every scored candidate), ``excluded`` (each
    filtered-out model and why), the experiment and arm when one decided, and the
    ``propensity`` with which the chosen model was chosen (1.0 when deterministic).
    """

    model_id: str
    model_metadata: ModelMetadata
    suitability_score: float
    alternatives: list[str]
    selection_reason: str
    scores: Mapping[str, float] = field(default_factory=dict)
    excluded: Mapping[str, str] = field(default_factory=dict)
    experiment: str | None = None
    arm: str | None = None
    propensity: float = 1.0


@dataclass(frozen=True, slots=True)
class SelectionConstraints:
    """Constraints for model selection."""

    max_cost_per_request: float | None = None
    required_capabilities: list[str] = field(default_factory=list)
    excluded_providers: list[str] = field(default_factory=list)
    max_latency_ms: float | None = None

    def __post_init__(self) -> None:
        if self.max_cost_per_request is not None and self.max_cost_per_request < 0:
            raise InvalidRequestError(
                f"max_cost_per_request must be >= 0; got {self.max_cost_per_request}",
                error_type="invalid_constraints",
            )
        if self.max_latency_ms is not None and self.max_latency_ms <= 0:
            raise InvalidRequestError(
                f"max_latency_ms must be > 0; got {self.max_latency_ms}",
                error_type="invalid_constraints",
            )
        for name in ("required_capabilities", "excluded_providers"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(v, str) for v in value):
                raise InvalidRequestError(
                    f"{name} must be a list of strings; got {value!r}",
                    error_type="invalid_constraints",
                )


@dataclass(frozen=True, slots=True)
class HealthStatus:
    """Result of one health check."""

    model_id: str
    is_available: bool
    response_time_ms: float
    last_check: datetime
    consecutive_failures: int
    error_message: str | None = None


@dataclass(frozen=True, slots=True)
class ModelAvailability:
    """The health state of one model and why: what a person reads to see its state."""

    model_id: str
    is_available: bool
    consecutive_failures: int = 0
    last_check: datetime | None = None
    last_error: str | None = None
    unavailable_since: datetime | None = None
    next_check: datetime | None = None
    last_response_time_ms: float | None = None

    @property
    def reason(self) -> str:
        """One line: 'available' or why not."""
        if self.is_available:
            return "available"
        since = f" since {self.unavailable_since.isoformat()}" if self.unavailable_since else ""
        return (
            f"unavailable{since} after {self.consecutive_failures} consecutive failures"
            f": {self.last_error or 'unknown error'}"
        )


@dataclass(frozen=True, slots=True)
class RateLimitStatus:
    """Rate limit status for a model."""

    model_id: str
    is_limited: bool
    requests_remaining: int
    tokens_remaining: int
    reset_time: datetime | None


@dataclass(frozen=True, slots=True)
class QualityScore:
    """Response quality evaluation; every score in [0, 1]."""

    overall_score: float
    completeness: float
    relevance: float
    coherence: float
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Budget utilisation for the current (UTC) day."""

    daily_budget: float
    current_spend: float
    utilization_percent: float
    is_over_budget: bool
    remaining_budget: float


@dataclass(frozen=True, slots=True)
class PerformanceMetrics:
    """Performance of a model over a time window. ``success_rate`` is a percentage."""

    model_id: str
    window_hours: int
    total_requests: int
    successful_requests: int
    failed_requests: int
    success_rate: float
    average_latency_ms: float
    p50_latency_ms: float
    p95_latency_ms: float
    p99_latency_ms: float
    average_quality_score: float


@dataclass(frozen=True, slots=True)
class PerformanceDegradation:
    """A metric of a model that got worse: recent window against a baseline window.

    ``threshold`` is the ratio the seed's ``detect_degradation(threshold=0.8)`` takes:
    a degradation is reported when recent/baseline falls below it (for latency,
    baseline/recent, since higher is worse).
    """

    metric: str
    current_value: float
    baseline_value: float
    threshold: float
    model_id: str = ""
    agent_type: str | None = None
    detected_at: datetime = field(default_factory=utcnow)

    @property
    def ratio(self) -> float:
        """How the current value compares with the baseline (1.0 = unchanged)."""
        if self.baseline_value == 0:
            return 1.0
        return self.current_value / self.baseline_value


@dataclass(frozen=True, slots=True)
class ErrorResponse:
    """Standardised error response (see :meth:`amm.errors.APIModelError.to_error_response`)."""

    error_type: str
    error_message: str
    model_id: str
    task_id: str
    is_retryable: bool
    attempted_models: list[str] = field(default_factory=list)
    failure_reasons: dict[str, str] = field(default_factory=dict)
    timestamp: datetime = field(default_factory=utcnow)


@dataclass(frozen=True, slots=True)
class CachedResponse:
    """A cached response with its lifetime and how often it was served."""

    response: ModelResponse
    cached_at: datetime
    expires_at: datetime
    hit_count: int = 0


@runtime_checkable
class ProviderAdapter(Protocol):
    """Sends one request to one provider. amm's built-in adapter is litellm; give
    ``APIClientManager(adapters={"openai": MyAdapter()})`` to replace it per provider.

    Raise :mod:`amm.errors` exceptions (mapped once, at this boundary).
    """

    async def complete(
        self, model: ModelMetadata, request: ModelRequest, *, api_key: str | None, timeout_s: float
    ) -> ModelResponse: ...
