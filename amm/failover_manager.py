"""Failover: when a model fails a request, try another one, with backoff, and say why.

:meth:`FailoverManager.execute_with_failover` calls ``request_func(model_id)``; on a
failure it classifies the error, asks the selector (an
:class:`~amm.protocols.AlternativeSource`) for an alternative that was not tried yet in
this request, waits the backoff (2 s, 4 s, 8 s by default) and tries again, up to
``max_retries`` failovers. Classification (:func:`classify`):

====================================  ================  ==========================
error                                 reason            what happens
====================================  ================  ==========================
RateLimitError                        RATE_LIMITED      another model
ProviderTimeoutError                  TIMEOUT           another model
QuotaExceededError                    QUOTA_EXCEEDED    another model (provider)
other ProviderError                   ERROR             another model
ModelUnavailableError                 UNAVAILABLE       another model
AuthenticationError                   AUTHENTICATION    another model (provider)
ModelNotFoundError                    MODEL_NOT_FOUND   another model
ContextWindowExceededError            CONTEXT_TOO_LONG  a model with a larger window
QualityThresholdError                 LOW_QUALITY       another model
BudgetExceededError, other            (none)            re-raised at once: another
InvalidRequestError                                     model would not help
any other APIModelError               ERROR             another model
a non-amm exception                   ERROR             wrapped in ProviderError
                                                        (``__cause__`` = original),
                                                        another model
====================================  ================  ==========================

Non-amm exceptions are failed over rather than raised because ``request_func`` is
the caller's code around a provider SDK whose exceptions amm cannot know; the
original stays reachable as ``__cause__`` of the wrapping error. ``CancelledError``
and ``KeyboardInterrupt`` (not ``Exception``) always propagate.

``max_retries`` means two things in the seed's API (``docs/seed.md``), and this is the
one place that says so. Here, on ``FailoverManager``, it counts **failovers**: how many
other models may be tried after the first (3 by default: at most four models). On
:meth:`amm.api_client.APIClientManager.send_request_with_retry` it counts **retries on
one model** with backoff before the error is raised (and then, under the manager,
failed over). Both names are the seed's and stay; amm's own settings say which they
mean: ``ModelManager.from_config(max_failovers=..., retries_per_model=...)``, and a
request's ``max_retries`` is passed to the client (retries per model).

Every failover is kept in a bounded history and reported as a ``FailoverEvent``.
More than ``alert_threshold`` failovers within ``alert_window_s`` raise an alert,
once per crossing (re-armed when the count falls back to the threshold): a log
warning and a :class:`~telemetry.events.DegradationEvent` with metric
``"failovers"`` (current value = the count in the window, baseline and threshold =
``alert_threshold``), which the recorder turns into an ``amm.degradation`` span
event. When every attempt fails, :class:`~amm.errors.FailoverError` carries
``attempted_models`` in order, ``failure_reasons`` per model, the ``task_id``, and
the last error as ``__cause__``.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Any

from amm.backoff import BackoffPolicy, ExponentialBackoff
from amm.errors import (
    APIModelError,
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    ContextWindowExceededError,
    FailoverError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    ProviderError,
    ProviderTimeoutError,
    QualityThresholdError,
    QuotaExceededError,
    RateLimitError,
)
from amm.models import FailoverReason, ModelRequest, ModelResponse, SelectionConstraints
from amm.protocols import AlternativeSource
from amm.timeouts import remaining
from telemetry.events import NULL_SINK, DegradationEvent, EventSink, FailoverEvent

__all__ = [
    "BackoffPolicy",
    "ExponentialBackoff",
    "FailoverManager",
    "FailoverRecord",
    "classify",
]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class FailoverRecord:
    """One failover: ``at`` is the manager's clock (monotonic seconds by default)."""

    original_model: str
    alternative_model: str | None
    reason: FailoverReason
    at: float
    task_id: str = ""
    agent_type: str = ""


# Most specific first: ContextWindowExceededError is an InvalidRequestError, etc.
_CLASSES: tuple[tuple[type[APIModelError], FailoverReason], ...] = (
    (RateLimitError, FailoverReason.RATE_LIMITED),
    (ProviderTimeoutError, FailoverReason.TIMEOUT),
    (QuotaExceededError, FailoverReason.QUOTA_EXCEEDED),
    (ModelUnavailableError, FailoverReason.UNAVAILABLE),
    (AuthenticationError, FailoverReason.AUTHENTICATION),
    (ModelNotFoundError, FailoverReason.MODEL_NOT_FOUND),
    (ContextWindowExceededError, FailoverReason.CONTEXT_TOO_LONG),
    (QualityThresholdError, FailoverReason.LOW_QUALITY),
    (ProviderError, FailoverReason.ERROR),
)


def classify(error: BaseException) -> FailoverReason | None:
    """The failover reason for ``error``, or None when it must not be failed over."""
    if isinstance(error, BudgetExceededError):
        return None
    for cls, reason in _CLASSES:
        if isinstance(error, cls):
            return reason
    if isinstance(error, InvalidRequestError):
        return None  # the request itself is wrong: every model would refuse it
    return FailoverReason.ERROR


def _describe(reason: FailoverReason, error: APIModelError) -> str:
    """``rate_limited: retry after 2s`` — what ``failure_reasons`` says of one model."""
    if isinstance(error, RateLimitError) and error.retry_after_seconds is not None:
        return f"{reason.value}: retry after {error.retry_after_seconds:g}s"
    return f"{reason.value}: {error.error_message}"


class FailoverManager:
    """Runs a request on a model and fails over to alternatives (module docstring).

    >>> manager = FailoverManager(selector, max_retries=3, base_backoff_seconds=2)
    >>> response = await manager.execute_with_failover("gpt-4-turbo", request, send)
    """

    def __init__(
        self,
        model_selector: AlternativeSource,
        max_retries: int = 3,
        base_backoff_seconds: float = 2,
        *,
        agent_type: str | None = None,
        constraints: SelectionConstraints | None = None,
        sleep: Callable[[float], Awaitable[Any]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        events: EventSink = NULL_SINK,
        alert_threshold: int = 3,
        alert_window_s: float = 3600.0,
        backoff: BackoffPolicy | None = None,
        history_size: int = 1000,
    ) -> None:
        for name, value in (("max_retries", max_retries), ("alert_threshold", alert_threshold),
                            ("history_size", history_size)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ConfigurationError(f"{name} must be an int >= 0; got {value!r}",
                                         field=name, error_type="invalid_failover_setting")
        if alert_window_s <= 0:
            raise ConfigurationError(f"alert_window_s must be > 0; got {alert_window_s!r}",
                                     field="alert_window_s",
                                     error_type="invalid_failover_setting")
        self.model_selector = model_selector
        self.max_retries = max_retries
        self.backoff: BackoffPolicy = (backoff if backoff is not None
                                       else ExponentialBackoff(base_backoff_seconds))
        self.agent_type = agent_type
        self.constraints = constraints
        self.alert_threshold = alert_threshold
        self.alert_window_s = float(alert_window_s)
        self._sleep = sleep
        self._clock = clock
        self._events = events
        self._history: deque[FailoverRecord] = deque(maxlen=max(1, history_size))
        self._alerting = False

    # -- the request loop ---------------------------------------------------------------

    async def execute_with_failover(
        self,
        primary_model: str,
        task: ModelRequest,
        request_func: Callable[[str], Awaitable[ModelResponse]],
        *,
        agent_type: str | None = None,
        constraints: SelectionConstraints | None = None,
        demoted: Collection[str] = (),
    ) -> ModelResponse:
        """``request_func(model_id)`` on ``primary_model``, then on alternatives.

        Alternatives are chosen like the first model: same constraints, and models
        ``demoted`` for this agent type only when nothing else is eligible.
        Raises FailoverError when every attempt failed, and re-raises at once the
        errors another model cannot fix (budget, invalid request).
        """
        agent = agent_type or self.agent_type or task.agent_type
        constraints = constraints if constraints is not None else self.constraints
        attempted: list[str] = []
        reasons: dict[str, str] = {}
        model: str | None = primary_model
        last: APIModelError | None = None
        failovers = 0
        gave_up = "no alternative left"
        while model is not None:
            attempted.append(model)
            try:
                return await request_func(model)
            except APIModelError as exc:
                error = exc
            except Exception as exc:  # the caller's SDK: see the module docstring
                error = ProviderError(f"{type(exc).__name__}: {exc}", model_id=model,
                                      task_id=task.task_id or None)
                error.__cause__ = exc
            reason = classify(error)
            if reason is None:
                raise error
            reasons[model] = _describe(reason, error)
            last = error
            if failovers >= self.max_retries:
                gave_up = f"gave up after {self.max_retries} failovers"
                break
            left = remaining()
            if left is not None and left <= 0:
                gave_up = "the request's deadline passed"
                break
            alternative = await self._alternative(model, task, reason, attempted, agent,
                                                  constraints, demoted)
            self.record_failover(model, alternative, reason, task_id=task.task_id,
                                 agent_type=agent)
            if alternative is not None:
                await self._sleep(self.backoff.delay(failovers))
                failovers += 1
            model = alternative
        raise FailoverError(
            f"all {len(attempted)} models tried failed ({gave_up})",
            model_id=primary_model, task_id=task.task_id or None, attempted_models=attempted,
            failure_reasons=reasons, is_retryable=bool(last and last.is_retryable),
            error_type="failover_exhausted",
        ) from last

    async def select_alternative(
        self,
        failed_model: str,
        task: ModelRequest,
        reason: FailoverReason,
        *,
        exclude: Collection[str] = (),
        agent_type: str | None = None,
        constraints: SelectionConstraints | None = None,
    ) -> str | None:
        """Another eligible model for ``task`` (never ``failed_model`` or ``exclude``), or
        None. After CONTEXT_TOO_LONG only models with a larger context window qualify."""
        agent = agent_type or self.agent_type or task.agent_type
        tried = {failed_model, *exclude}
        return await self._alternative(failed_model, task, FailoverReason(reason), tried, agent,
                                       constraints if constraints is not None else self.constraints)

    async def _alternative(self, failed_model: str, task: ModelRequest, reason: FailoverReason,
                           tried: Collection[str], agent_type: str,
                           constraints: SelectionConstraints | None,
                           demoted: Collection[str] = ()) -> str | None:
        exclude = set(tried)
        exclude.add(failed_model)
        if reason is FailoverReason.CONTEXT_TOO_LONG:
            registry = self.model_selector.registry
            failed = registry.get_model(failed_model)
            if failed is not None:
                exclude.update(m.id for m in registry.models()
                               if m.context_window <= failed.context_window)
        selection = await self.model_selector.select_model(task, agent_type, constraints,
                                                           exclude=exclude, demoted=demoted)
        return selection.model_id if selection is not None else None

    # -- history and alerting -----------------------------------------------------------

    def record_failover(
        self,
        original_model: str,
        alternative_model: str | None,
        reason: FailoverReason,
        *,
        task_id: str = "",
        agent_type: str = "",
    ) -> None:
        """Keep the failover in the history, emit a FailoverEvent, alert on a burst."""
        reason = FailoverReason(reason)
        now = self._clock()
        self._history.append(FailoverRecord(original_model, alternative_model, reason, now,
                                            task_id, agent_type))
        log.info("failover %s -> %s (%s) task=%s", original_model, alternative_model or "none",
                 reason.value, task_id)
        self._events.record(FailoverEvent(from_model=original_model, to_model=alternative_model,
                                          reason=reason.value, agent_type=agent_type,
                                          task_id=task_id))
        count = self.failover_count(self.alert_window_s)
        if count <= self.alert_threshold:
            self._alerting = False
        elif not self._alerting:
            self._alerting = True
            log.warning("%d failovers in the last %gs (alert threshold %d); latest %s -> %s: %s",
                        count, self.alert_window_s, self.alert_threshold, original_model,
                        alternative_model or "none", reason.value)
            self._events.record(DegradationEvent(
                model_id=original_model, metric="failovers", current_value=float(count),
                baseline_value=float(self.alert_threshold),
                threshold=float(self.alert_threshold), agent_type=agent_type or None,
            ))

    def history(self, since: float | None = None) -> list[FailoverRecord]:
        """Failovers kept (oldest first), those at or after clock time ``since`` if given."""
        if since is None:
            return list(self._history)
        return [r for r in self._history if r.at >= since]

    def failover_count(self, window_s: float) -> int:
        """Failovers in the last ``window_s`` seconds (of the kept history)."""
        cutoff = self._clock() - window_s
        n = 0
        for record in reversed(self._history):
            if record.at < cutoff:
                break
            n += 1
        return n

    @property
    def alerting(self) -> bool:
        """True while the failover count in the alert window is above the threshold."""
        return self._alerting

    def __repr__(self) -> str:
        return (f"FailoverManager(max_retries={self.max_retries}, backoff={self.backoff!r}, "
                f"history={len(self._history)}, alerting={self._alerting})")
