"""The errors amm raises. Every one is an :class:`APIModelError`::

    APIModelError (base exception)
    ├── RateLimitError                 429: retryable after ``retry_after_seconds``
    ├── FailoverError                  every model tried failed; see ``failure_reasons``
    ├── ModelUnavailableError          health checks say the model is down
    ├── ConfigurationError             a bad registry file, setting or constructor argument
    ├── AuthenticationError            401 / 403: bad, missing or forbidden key
    ├── InvalidRequestError            400, or a bad request (or call argument) to amm
    │   ├── ContextWindowExceededError     the prompt does not fit the model
    │   └── ModelNotFoundError             404: the provider does not know the model
    ├── ProviderError                  5xx, malformed answers, connection failures
    │   ├── ProviderTimeoutError           no answer within the timeout
    │   ├── QuotaExceededError             429 ``insufficient_quota``: permanent
    │   └── StreamInterruptedError         a stream failed after its first chunk reached the caller
    ├── InvalidToolCallError           a tool call's arguments are not valid JSON
    ├── CacheError                     the response cache is corrupt or unwritable
    ├── BudgetExceededError            the daily budget is spent
    │   └── CostTrackingError              the cost ledger cannot be written: refused (fail closed)
    ├── QualityThresholdError          answers stayed below the quality threshold
    └── PerformanceMonitorError        the performance store failed

This is the seed's tree (``docs/seed.md``) with a few subclasses added, so code written
against the seed catches what it expects. Exceptions of litellm (and httpx) are
converted once, at the adapter boundary: :func:`amm._provider_errors.map_provider_error`,
called by the litellm adapter (:mod:`amm._litellm`), ``raise Mapped(...) from exc``.
Mistakes are split by kind: bad settings or constructor arguments raise
:class:`ConfigurationError`; a bad request, or a bad argument to a per-call method,
raises :class:`InvalidRequestError`. Constructing with a message alone works
(``BudgetExceededError("Daily budget of $100 exceeded")``). No error text ever
carries an API key: the client redacts known keys before building one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amm.models import ErrorResponse

__all__ = [
    "APIModelError",
    "AuthenticationError",
    "BudgetExceededError",
    "CacheError",
    "ConfigurationError",
    "ContextWindowExceededError",
    "CostTrackingError",
    "FailoverError",
    "InvalidRequestError",
    "InvalidToolCallError",
    "ModelNotFoundError",
    "ModelUnavailableError",
    "PerformanceMonitorError",
    "ProviderError",
    "ProviderTimeoutError",
    "QualityThresholdError",
    "QuotaExceededError",
    "RateLimitError",
    "StreamInterruptedError",
]


CANCELLED = "cancelled"
"""``error_type`` (and span ``error.type``) of an attempt the caller ended: it says
nothing about the model, so neither health nor the rolling statistics hold it against
the model (the attempt is still billed and recorded)."""


class APIModelError(Exception):
    """Base of every amm error.

    Attributes: ``error_message``, ``model_id``, ``task_id``, ``is_retryable``,
    ``attempted_models`` (in order), ``failure_reasons`` (model id -> why),
    ``error_type`` (a short stable code, used as the span's ``error.type``) and
    ``status_code`` (the provider's HTTP status, when there was one).
    """

    retryable_by_default = False

    def __init__(
        self,
        error_message: str = "",
        *,
        model_id: str | None = None,
        task_id: str | None = None,
        is_retryable: bool | None = None,
        attempted_models: Iterable[str] = (),
        failure_reasons: Mapping[str, str] | None = None,
        error_type: str | None = None,
        status_code: int | None = None,
    ) -> None:
        self.error_message = error_message or type(self).__name__
        self.model_id = model_id
        self.task_id = task_id
        self.is_retryable = self.retryable_by_default if is_retryable is None else is_retryable
        self.attempted_models: list[str] = list(attempted_models)
        self.failure_reasons: dict[str, str] = dict(failure_reasons or {})
        self.error_type = error_type or type(self).__name__
        self.status_code = status_code
        super().__init__(self.error_message)

    def _details(self) -> list[str]:
        parts = []
        if self.model_id:
            parts.append(f"model={self.model_id}")
        if self.task_id:
            parts.append(f"task={self.task_id}")
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        parts.append("retryable" if self.is_retryable else "permanent")
        return parts

    def __str__(self) -> str:
        text = f"{self.error_message} [{', '.join(self._details())}]"
        if self.failure_reasons:
            tried = "; ".join(f"{m}: {r}" for m, r in self.failure_reasons.items())
            text += f" tried: {tried}"
        return text

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.error_message!r}, model_id={self.model_id!r})"

    def to_error_response(self) -> ErrorResponse:
        """This error as the seed's :class:`~amm.models.ErrorResponse` record."""
        from amm.models import ErrorResponse

        return ErrorResponse(
            error_type=self.error_type,
            error_message=self.error_message,
            model_id=self.model_id or "",
            task_id=self.task_id or "",
            is_retryable=self.is_retryable,
            attempted_models=list(self.attempted_models),
            failure_reasons=dict(self.failure_reasons),
        )


class RateLimitError(APIModelError):
    """The provider (429) or amm's own limiter refused for now; retry after
    ``retry_after_seconds`` (``None`` when the provider did not say)."""

    retryable_by_default = True

    def __init__(
        self, error_message: str = "", *, retry_after_seconds: float | None = None, **kw: Any
    ) -> None:
        kw.setdefault("status_code", 429)
        super().__init__(error_message, **kw)
        self.retry_after_seconds = retry_after_seconds

    def _details(self) -> list[str]:
        parts = super()._details()
        if self.retry_after_seconds is not None:
            parts.append(f"retry after {self.retry_after_seconds:g}s")
        return parts


class FailoverError(APIModelError):
    """Every model tried for a request failed. ``attempted_models`` and
    ``failure_reasons`` say which and why."""


class ModelUnavailableError(APIModelError):
    """The model is marked unavailable (health checks) or nothing is available."""

    retryable_by_default = True


class ConfigurationError(APIModelError):
    """A bad configuration: a registry file, a setting, a constructor argument. The
    message names the file, the model and the field where there are ones,
    e.g. ``config/model_registry.json: models[gpt-4].cost_per_1k_input_tokens: must be >= 0``."""

    def __init__(
        self,
        error_message: str = "",
        *,
        path: str | None = None,
        field: str | None = None,
        **kw: Any,
    ) -> None:
        self.path = path
        self.field = field
        super().__init__(error_message, **kw)


class AuthenticationError(APIModelError):
    """The provider refused the key (401) or the access (403), or no key is set."""


class InvalidRequestError(APIModelError):
    """The request is malformed (400), or a call was given bad input (a bad setting is a
    :class:`ConfigurationError`)."""


class ContextWindowExceededError(InvalidRequestError):
    """The prompt plus ``max_tokens`` does not fit the model's context window."""


class ModelNotFoundError(InvalidRequestError):
    """The provider does not know this model (404)."""


class ProviderError(APIModelError):
    """The provider failed: 5xx, a malformed answer, a dropped connection."""

    retryable_by_default = True


class ProviderTimeoutError(ProviderError):
    """No answer within the timeout."""


class QuotaExceededError(ProviderError):
    """429 with ``insufficient_quota``: the account's quota is spent. Permanent:
    waiting does not help, another provider might."""

    retryable_by_default = False


class StreamInterruptedError(ProviderError):
    """A streamed answer failed after its first chunk reached the caller.

    No failover happens then (the caller has seen text): the error carries what was
    received, ``partial_text`` and ``usage`` (a :class:`~amm.models.TokenUsage`,
    ``usage_estimated`` when the provider reported none), and the attempt is billed
    for it. ``cancelled`` is true when the caller closed the stream.
    """

    retryable_by_default = False

    def __init__(
        self,
        error_message: str = "",
        *,
        partial_text: str = "",
        usage: Any = None,
        usage_estimated: bool = False,
        cost: float = 0.0,
        cancelled: bool = False,
        **kw: Any,
    ) -> None:
        super().__init__(error_message, **kw)
        self.partial_text = partial_text
        self.usage = usage
        self.usage_estimated = usage_estimated
        self.cost = cost
        self.cancelled = cancelled


class InvalidToolCallError(APIModelError):
    """A tool call's ``arguments`` are not a JSON object (see ``ToolCall.parsed``)."""


class CacheError(APIModelError):
    """The response cache is corrupt or unwritable; callers carry on without it."""


class BudgetExceededError(APIModelError):
    """The daily budget is spent and the policy is to refuse."""


class CostTrackingError(BudgetExceededError):
    """The cost ledger cannot be written (disk full, read-only, locked), so spend
    cannot be recorded: calls are refused until it can (fail closed), unless the
    tracker was built with ``fail_open=True``."""


class QualityThresholdError(APIModelError):
    """Responses stayed below the quality threshold on every model tried."""


class PerformanceMonitorError(APIModelError):
    """The performance store failed; callers carry on without metrics."""
