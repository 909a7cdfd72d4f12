"""Which models are up: active pings on a schedule, plus passive health from real traffic.

A model starts available. It becomes unavailable after ``failure_threshold`` (3)
consecutive failures and available again after one success. Only transient
failures count (timeouts, 5xx, dropped connections, malformed answers): a 429, a
spent quota, another 4xx or a request refused before it was sent says nothing about
whether the model is up (:func:`counts_against_health`).

The last error is kept for the model's status, and so reaches other requests'
selection reasons and log lines: it passes :func:`telemetry.redaction.redact`
with the failed request's own texts, whatever the content opt-in (one request's
prompt is never another request's business).

Failures come from two places. A check (:meth:`HealthChecker.check_model_health`)
sends a one-token request through the API client (``ModelRequest(prompt="ping",
max_tokens=1, temperature=0)``, agent ``health``, task ``health-check``). And, as a
listener, :meth:`HealthChecker.record` reads every ``AttemptEvent`` of real traffic,
so a model in use needs no pings: each success or counted failure is a check. The
pings' own AttemptEvents (agent ``health``, task ``health-check``) are ignored there,
so nothing is counted twice.

``start()`` runs one background task that checks every enabled model that is due:
a healthy model ``check_interval_seconds`` after its last check, a failing one with
exponential backoff (interval, 2x, 4x, ... up to ``max_backoff_s``), at most
``max_concurrent_checks`` at a time. Checks cost money: disabled models are never
pinged, and nothing is pinged at start unless ``check_on_start``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any

from amm.errors import CANCELLED, APIModelError, ConfigurationError, InvalidRequestError
from amm.models import HealthStatus, ModelAvailability, ModelRequest, utcnow
from telemetry.events import (
    HEALTH_CHECK_AGENT,
    NULL_SINK,
    AttemptEvent,
    Event,
    EventSink,
    HealthChangeEvent,
)
from telemetry.redaction import message_texts, redact

__all__ = [
    "HEALTH_AGENT_TYPE",
    "HEALTH_TASK_ID",
    "HealthChecker",
    "counts_against_health",
    "ping_request",
]

logger = logging.getLogger(__name__)

HEALTH_AGENT_TYPE = HEALTH_CHECK_AGENT
"""Agent type of health-check requests (their AttemptEvents are not traffic)."""
HEALTH_TASK_ID = "health-check"
"""Task id of health-check requests."""

# error.type values that say nothing about whether the model is up.
_NOT_HEALTH = frozenset({
    "rate_limited", "rate_limited_local", "insufficient_quota", "authentication",
    "permission_denied", "missing_api_key", "bad_request", "context_window_exceeded",
    "model_not_found", "client_closed", "budget_exceeded", "client_error", CANCELLED,
    # class names, for errors raised without an explicit error_type
    "RateLimitError", "QuotaExceededError", "AuthenticationError", "InvalidRequestError",
    "ContextWindowExceededError", "ModelNotFoundError", "BudgetExceededError", "CacheError",
})


def counts_against_health(error_type: str | None) -> bool:
    """Does a failure of this ``error.type`` count against the model's health?

    Yes for timeouts, 5xx, connection failures, malformed answers and anything
    unknown (a failure we cannot explain is treated as the model's); no for 429s,
    quota, auth, other 4xx and requests refused before sending (``client_error``),
    which say nothing about whether the model is up.
    """
    if not error_type:
        return True
    if error_type.isdigit():
        return int(error_type) >= 500
    return error_type not in _NOT_HEALTH


def ping_request() -> ModelRequest:
    """The lightweight request a health check sends."""
    return ModelRequest(prompt="ping", max_tokens=1, temperature=0,
                        task_id=HEALTH_TASK_ID, agent_type=HEALTH_AGENT_TYPE)


class _State:
    """Health of one model; mutated under the checker's lock."""

    __slots__ = ("available", "failures", "last_check", "last_error", "last_response_time_ms",
                 "next_check", "unavailable_since")

    def __init__(self, next_check: float) -> None:
        self.available = True
        self.failures = 0
        self.last_check: datetime | None = None
        self.last_error: str | None = None
        self.unavailable_since: datetime | None = None
        self.last_response_time_ms: float | None = None
        self.next_check = next_check  # monotonic


class HealthChecker:
    """Availability of every registered model, from pings and from real traffic.

    >>> checker = HealthChecker(registry, check_interval_seconds=60)
    >>> await checker.start()
    >>> checker.is_model_available("gpt-4-turbo")
    True
    """

    def __init__(
        self,
        registry: Any,
        check_interval_seconds: float = 60,
        *,
        api_client: Any = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = utcnow,
        sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
        events: EventSink = NULL_SINK,
        failure_threshold: int = 3,
        max_backoff_s: float = 600.0,
        check_on_start: bool = False,
        max_concurrent_checks: int = 4,
    ) -> None:
        if check_interval_seconds <= 0 or failure_threshold < 1 or max_backoff_s <= 0 \
                or max_concurrent_checks < 1:
            raise ConfigurationError(
                "check_interval_seconds and max_backoff_s must be > 0, failure_threshold and "
                f"max_concurrent_checks >= 1; got {check_interval_seconds!r}, "
                f"{max_backoff_s!r}, {failure_threshold!r}, {max_concurrent_checks!r}",
                error_type="invalid_health_settings")
        self._registry = registry
        self._interval = float(check_interval_seconds)
        self._client = api_client
        self._owns_client = False
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._events = events
        self._threshold = failure_threshold
        self._max_backoff = max(float(max_backoff_s), self._interval)
        self._check_on_start = check_on_start
        self._max_concurrent = max_concurrent_checks
        self._lock = threading.Lock()  # record() may come from any thread
        self._states: dict[str, _State] = {}
        self._task: asyncio.Task[None] | None = None
        self._lease: Callable[[str, float], Awaitable[bool]] | None = None
        self._fleet_down: set[str] = set()  # marked down by another worker's report

    @property
    def check_interval_s(self) -> float:
        """Seconds between two checks of a healthy model."""
        return self._interval

    # -- a fleet's shared health ------------------------------------------------------

    def set_lease(self, lease: Callable[[str, float], Awaitable[bool]] | None) -> None:
        """Probe a model only while holding ``lease(f"probe:{model_id}", ttl_s)``: in a
        fleet one worker at a time pings each model, and shares what it finds."""
        self._lease = lease

    def apply_shared(self, down: dict[str, str]) -> None:
        """The fleet's view: ``down`` maps each model another worker found unavailable
        to its error. Those become unavailable here too; models no longer listed that
        were down only by the fleet's word become available again. Records no event
        (the worker that saw the failure reported it)."""
        wall = self._wall_clock()
        with self._lock:
            for model_id, error in down.items():
                s = self._states.get(model_id)
                if s is None:
                    if self._registry.get_model(model_id) is None:
                        continue
                    s = self._state(model_id)
                if s.available:
                    s.available, s.unavailable_since = False, wall
                    s.last_error = f"reported by another worker: {error}" if error else \
                        "reported by another worker"
                    self._fleet_down.add(model_id)
                    logger.warning("health: %s is unavailable (%s)", model_id, s.last_error)
            for model_id in list(self._fleet_down):
                if model_id not in down:
                    self._fleet_down.discard(model_id)
                    s = self._states[model_id]
                    if not s.available and s.failures < self._threshold:
                        s.available, s.unavailable_since, s.last_error = True, None, None
                        logger.info("health: %s is available again (fleet)", model_id)

    # -- reads (hot path) ------------------------------------------------------------

    def is_model_available(self, model_id: str) -> bool:
        """O(1): False for a model the registry does not know."""
        state = self._states.get(model_id)
        if state is not None:
            return state.available
        return self._registry.get_model(model_id) is not None

    def get_model_status(self, model_id: str) -> ModelAvailability:
        """The model's availability and why (last error, failures, next check...)."""
        with self._lock:
            state = self._known_state(model_id)
            return self._availability(model_id, state)

    def statuses(self) -> dict[str, ModelAvailability]:
        """Availability of every registered model (and any other model seen)."""
        with self._lock:
            for model in self._registry.models():
                self._state(model.id)
            return {mid: self._availability(mid, s) for mid, s in self._states.items()}

    # -- checks ------------------------------------------------------------------------

    async def check_model_health(self, model_id: str) -> HealthStatus:
        """Ping the model now and update its health. Never raises for a provider failure
        (the failure is the result); InvalidRequestError for an unknown model."""
        with self._lock:
            self._known_state(model_id)
        client = self._api_client()
        started = self._clock()
        error: str | None = None
        try:
            response = await client.send_request(model_id, ping_request())
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            elapsed_ms = (self._clock() - started) * 1000.0
            if isinstance(exc, APIModelError):
                error, kind = redact(exc.error_message), exc.error_type
            else:  # a broken client is still a failed check
                error, kind = redact(f"{type(exc).__name__}: {exc}"), type(exc).__name__
            counted = counts_against_health(kind)
            change = self._result(model_id, ok=False if counted else None, error=error,
                                  response_ms=None)
        else:
            elapsed_ms = float(response.latency_ms)
            change = self._result(model_id, ok=True, error=None, response_ms=elapsed_ms)
        if change is not None:
            self._emit(change)
        with self._lock:
            state = self._states[model_id]
            return HealthStatus(
                model_id=model_id, is_available=state.available, response_time_ms=elapsed_ms,
                last_check=state.last_check or self._wall_clock(),
                consecutive_failures=state.failures, error_message=error)

    def record(self, event: Event) -> None:
        """Listener: passive health from real traffic's ``AttemptEvent``. Never raises."""
        if not isinstance(event, AttemptEvent):
            return
        if event.agent_type == HEALTH_AGENT_TYPE and event.task_id == HEALTH_TASK_ID:
            return  # a ping: check_model_health has counted it already
        try:
            if event.success:
                change = self._result(event.model_id, ok=True, error=None,
                                      response_ms=event.latency_ms)
            elif counts_against_health(event.error_type):
                error = redact(event.error_message or event.error_type or "",
                               contents=message_texts(event.input_messages))
                change = self._result(event.model_id, ok=False, error=error or None,
                                      response_ms=None)
            else:
                return
            if change is not None:
                self._emit(change)
        except Exception:  # a listener must never fail the recorder
            logger.warning("health: could not use an attempt on %s", event.model_id,
                           exc_info=True)

    # -- the background loop ----------------------------------------------------------

    async def start(self) -> None:
        """Start the one background task that checks due models. Idempotent."""
        if self._task is not None and not self._task.done():
            return
        if self._check_on_start:
            now = self._clock()
            with self._lock:
                for model in self._registry.models():
                    self._state(model.id).next_check = now
        self._task = asyncio.create_task(self._run(), name="amm-health-checker")

    async def stop(self) -> None:
        """Cancel and await the background task; close a client built here. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._owns_client and self._client is not None:
            client, self._client, self._owns_client = self._client, None, False
            await client.aclose()

    @property
    def running(self) -> bool:
        """Is the background task running?"""
        return self._task is not None and not self._task.done()

    async def _run(self) -> None:
        while True:
            try:
                await self._check_due()
                delay = self._next_delay()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the loop
                logger.exception("health: a round of checks failed")
                delay = self._interval
            await self._sleep(delay)

    async def _check_due(self) -> None:
        now = self._clock()
        with self._lock:
            due = [m.id for m in self._registry.models()
                   if m.enabled and self._state(m.id).next_check <= now]
        if not due:
            return
        gate = asyncio.Semaphore(self._max_concurrent)

        async def check(model_id: str) -> None:
            async with gate:
                try:
                    if self._lease is not None and not await self._lease(
                            f"probe:{model_id}", self._interval):
                        with self._lock:  # another worker probes it this round
                            self._state(model_id).next_check = self._clock() + self._interval
                        return
                    await self.check_model_health(model_id)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    logger.exception("health: the check of %s failed", model_id)
                    with self._lock:  # never re-check it in a tight loop
                        self._state(model_id).next_check = self._clock() + self._interval

        await asyncio.gather(*(check(mid) for mid in due))

    def _next_delay(self) -> float:
        now = self._clock()
        with self._lock:
            pending = [self._state(m.id).next_check for m in self._registry.models()
                       if m.enabled]
        if not pending:
            return self._interval
        return min(self._interval, max(0.0, min(pending) - now))

    # -- state (called with the lock held unless said otherwise) ----------------------

    def _state(self, model_id: str) -> _State:
        state = self._states.get(model_id)
        if state is None:
            state = self._states[model_id] = _State(self._clock() + self._interval)
        return state

    def _known_state(self, model_id: str) -> _State:
        if model_id not in self._states and self._registry.get_model(model_id) is None:
            raise InvalidRequestError(f"unknown model {model_id!r}: not in the registry",
                                      model_id=model_id, error_type="unknown_model")
        return self._state(model_id)

    def _result(self, model_id: str, *, ok: bool | None, error: str | None,
                response_ms: float | None) -> HealthChangeEvent | None:
        """Apply one check result (takes the lock). ``ok`` None: a failure that does
        not count. Returns the transition to report, if any."""
        now, wall = self._clock(), self._wall_clock()
        with self._lock:
            s = self._state(model_id)
            s.last_check = wall
            if ok is None:
                s.next_check = now + self._interval
                return None
            if ok:
                s.failures = 0
                s.last_error = None
                s.next_check = now + self._interval
                if response_ms is not None:
                    s.last_response_time_ms = response_ms
                if s.available:
                    return None
                s.available, s.unavailable_since = True, None
                return HealthChangeEvent(model_id, True, 0)
            s.failures += 1
            s.last_error = error
            s.next_check = now + min(self._interval * 2 ** min(s.failures - 1, 32),
                                     self._max_backoff)
            if not s.available or s.failures < self._threshold:
                return None
            s.available, s.unavailable_since = False, wall
            return HealthChangeEvent(model_id, False, s.failures, error)

    def _emit(self, change: HealthChangeEvent) -> None:
        if change.is_available:
            logger.info("health: %s is available again", change.model_id)
        else:
            logger.warning("health: %s is unavailable after %d consecutive failures: %s",
                           change.model_id, change.consecutive_failures, change.error)
        self._events.record(change)

    def _availability(self, model_id: str, s: _State) -> ModelAvailability:
        return ModelAvailability(
            model_id=model_id, is_available=s.available, consecutive_failures=s.failures,
            last_check=s.last_check, last_error=s.last_error,
            unavailable_since=s.unavailable_since,
            next_check=self._wall_clock() + timedelta(seconds=s.next_check - self._clock()),
            last_response_time_ms=s.last_response_time_ms)

    def _api_client(self) -> Any:
        if self._client is None:
            # Built on first use: importing the client (and litellm) is not free.
            from amm.api_client import APIClientManager
            from amm.api_key_manager import APIKeyManager

            keys = APIKeyManager()
            keys.load_keys()
            # No event sink: a ping is counted here, not as traffic.
            self._client = APIClientManager(keys, registry=self._registry)
            self._owns_client = True
        return self._client

    def __repr__(self) -> str:
        down = sorted(m for m, s in self._states.items() if not s.available)
        return (f"HealthChecker(interval={self._interval:g}s, models={len(self._states)}, "
                f"unavailable={down}, running={self.running})")
