"""ModelManager: the composition root that orders the request path.

Each step is a call to one component (``docs/architecture.md`` has the full table)::

    complete(request)
      cache lookup              CacheManager           (hit -> return, recorded)
      budget check              CostTracker + BudgetPolicy (refuse or downgrade)
      selection                 ModelSelector          (registry x health x limits x stats
                                                        x experiment)
      execute with failover     FailoverManager -> RateLimiter.acquire -> APIClientManager
      quality evaluation        ResponseEvaluator      (low quality over the window demotes)
      cache store               CacheManager

Two policies of the request path itself live here, because they join components: the
budget policy (:class:`BudgetPolicy`: refuse, or downgrade to the cheapest model the
selector finds eligible; see ``_apply_budget``) and demotion (a model whose quality the
evaluator finds low is held back for the agent type for
``ManagerSettings.demotion_s``; see ``_evaluate``). Every other policy (scoring,
routing, backoff, eviction, quality metrics, A/B assignment) belongs to a component.

Recording happens where each event occurs: every component reports to the one
``Recorder``, which fans each event out to spans, metrics and its listeners, added in
:meth:`ModelManager.from_config`: the cost ledger (``CostTracker``), the performance
table and rolling statistics (``PerformanceMonitor``), passive health
(``HealthChecker``) and provider rate limits (``RateLimiter``).

>>> async with ModelManager.from_config("config/model_registry.json", data_dir="data") as m:
...     reply = await m.complete(ModelRequest(prompt="Hi", task_id="t1", agent_type="research"))
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import difflib
import enum
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from amm._drains import StreamDrains
from amm.errors import (
    APIModelError,
    BudgetExceededError,
    CacheError,
    ConfigurationError,
    InvalidRequestError,
    ModelUnavailableError,
    QualityThresholdError,
    RateLimitError,
)
from amm.models import (
    DEFAULT_OUTPUT_TOKENS,
    ModelRequest,
    ModelResponse,
    RateLimitInfo,
    SelectionConstraints,
    estimate_tokens,
)
from amm.structured import answer_problems
from amm.timeouts import DEADLINE
from telemetry.events import ModelDemotedEvent, RateLimitedEvent

if TYPE_CHECKING:
    from amm.api_client import APIClientManager
    from amm.cache_manager import CacheManager
    from amm.cost_tracker import CostTracker
    from amm.evaluator import ResponseEvaluator
    from amm.failover_manager import FailoverManager
    from amm.health_checker import HealthChecker
    from amm.performance_monitor import PerformanceMonitor
    from amm.rate_limiter import RateLimiter
    from amm.registry import ModelRegistry
    from amm.selector import ModelSelector
    from amm.state import FleetState
    from amm.streaming import ManagedStream
    from telemetry.recorder import Recorder
    from telemetry.setup import Telemetry

__all__ = ["ACTIVE_AGENT", "BudgetPolicy", "ManagerSettings", "ModelManager", "OnCancel",
           "warm_up"]

#: (agent type, task id) of the agent invocation whose span is open in this context.
#: ``@managed_model`` sets it; ``complete`` then records under that span instead of
#: opening a second ``invoke_agent`` span for the same call.
ACTIVE_AGENT: contextvars.ContextVar[tuple[str, str] | None] = contextvars.ContextVar(
    "amm_active_agent", default=None
)

log = logging.getLogger("amm.manager")


def warm_up() -> threading.Thread:
    """Import litellm on a background thread (once), so that the first request does not
    pay the 5-8 s import. ``ModelManager.start()`` calls it unless ``warm=False``;
    ``await manager.warmed()`` waits for it. Returns the (started) thread."""
    global _warming
    with _warm_lock:
        if _warming is None:
            from amm._litellm import warm_litellm

            _warming = threading.Thread(target=warm_litellm, name="amm-warm-up", daemon=True)
            _warming.start()
        return _warming


_warming: threading.Thread | None = None
_warm_lock = threading.Lock()


class BudgetPolicy(enum.StrEnum):
    """What ``complete`` does once the daily budget is spent.

    Every call first reserves its estimated cost (output priced at ``max_tokens``, an
    upper bound), so concurrent calls cannot overshoot together: under REFUSE a call
    whose reservation would pass the budget is refused, and spend stays within the
    budget up to the error of the input-token estimate. Under DOWNGRADE such calls go
    to the cheapest model that fits and are served even past the budget (that is
    what downgrading means). When the ledger cannot be written, calls are refused
    (fail closed) under both.
    """

    REFUSE = "refuse"  # raise BudgetExceededError
    DOWNGRADE = "downgrade"  # route to the cheapest model that fits the request


class OnCancel(enum.StrEnum):
    """What a stream does when its caller leaves it before the end (``break``,
    ``aclose()``, leaving ``async with``, the caller's task cancelled).

    Either way the caller gets control back at once and its rate-limit and budget holds
    are settled then. The difference is the bill (see :mod:`amm._drains`).
    """

    # Read the provider's stream to its end in the background (cancel_drain_timeout_s at
    # most) and book its own final usage report: exact, but the rest is generated and paid.
    DRAIN = "drain"
    # Close the connection at once: the provider stops when it notices; amm books its
    # estimate of what was used, flagged (ledger source ``attempt:estimated``).
    CLOSE = "close"


DRAIN_GRACE_S = 5.0
"""How long :meth:`ModelManager.stop` lets pending stream drains finish before it closes
them (each then books amm's estimate, flagged)."""


def _stream_settings(on_cancel: object, cancel_drain_timeout_s: object) -> OnCancel:
    """``on_cancel`` as an OnCancel; a ConfigurationError naming a bad value."""
    try:
        mode = OnCancel(on_cancel)  # type: ignore[arg-type]  # checked: a ValueError
    except ValueError:
        raise ConfigurationError(
            f"on_cancel: must be one of {', '.join(m.value for m in OnCancel)}; got "
            f"{on_cancel!r}", field="on_cancel") from None
    t = cancel_drain_timeout_s
    if isinstance(t, bool) or not isinstance(t, int | float) or not 0 < t < float("inf"):
        raise ConfigurationError(
            f"cancel_drain_timeout_s: must be a number of seconds > 0; got {t!r}",
            field="cancel_drain_timeout_s")
    return mode


@dataclass(frozen=True, slots=True)
class ManagerSettings:
    """Settings of the request path (not of any one component)."""

    budget_policy: BudgetPolicy = BudgetPolicy.REFUSE
    cache_enabled: bool = True
    retries_per_model: int = 1  # transient retries on one model before failing over
    demotion_s: float = 300.0  # how long a low-quality model stays demoted
    degradation_check_interval_s: float = 60.0  # 0 turns the background check off
    degradation_threshold: float = 0.8
    request_timeout_s: float = 120.0  # the whole request: every retry and failover within it
    # start() imports litellm in the background: the first call does not wait 5-8 s
    warm: bool = True
    # a stream its caller leaves: read to the end for an exact bill, or closed (OnCancel)
    on_cancel: OnCancel = OnCancel.DRAIN
    cancel_drain_timeout_s: float = 60.0  # how long at most a drain reads on

    def __post_init__(self) -> None:
        object.__setattr__(self, "on_cancel",
                           _stream_settings(self.on_cancel, self.cancel_drain_timeout_s))


class ModelManager:
    """Wires every component and runs the request path of one call.

    Build it with :meth:`from_config` (one line, the seed's Example 8
    wiring; ``docs/seed.md``), or
    from explicit components. ``async with manager:`` starts health checks and, on
    exit, stops them and flushes the ledger, the stores and telemetry.
    """

    def __init__(
        self,
        *,
        registry: ModelRegistry,
        api_client: APIClientManager,
        health_checker: HealthChecker,
        rate_limiter: RateLimiter,
        performance_monitor: PerformanceMonitor,
        selector: ModelSelector,
        failover_manager: FailoverManager,
        evaluator: ResponseEvaluator,
        cache_manager: CacheManager | None,
        cost_tracker: CostTracker,
        recorder: Recorder,
        settings: ManagerSettings | None = None,
        telemetry: Telemetry | None = None,
        start_health_checks: bool = True,
        clock: Any = time.monotonic,
        store: Any = None,
    ) -> None:
        self.registry = registry
        self.api_client = api_client
        self.health_checker = health_checker
        self.rate_limiter = rate_limiter
        self.performance_monitor = performance_monitor
        self.selector = selector
        self.failover_manager = failover_manager
        self.evaluator = evaluator
        self.cache_manager = cache_manager
        self.cost_tracker = cost_tracker
        self.recorder = recorder
        self.settings = settings or ManagerSettings()
        self.telemetry = telemetry
        self._start_health_checks = start_health_checks
        self._clock = clock
        self._store = store  # the shared writer of amm.db, released on stop()
        self._demoted: dict[tuple[str, str], float] = {}  # (agent_type, model) -> until
        self._started = False
        self._closed = False
        self._watch: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.state: FleetState | None = None  # the fleet's shared state (state_url)
        self.stream_drains = StreamDrains()  # streams callers left, read on (on_cancel)

    # ------------------------------------------------------------------ building

    @classmethod
    def from_config(
        cls,
        config_path: str | Path = "config/model_registry.json",
        *,
        data_dir: str | Path = "data",
        daily_budget: float = 100.0,
        budget_policy: BudgetPolicy | str = BudgetPolicy.REFUSE,
        key_manager: Any = None,
        telemetry: bool = True,
        service_name: str | None = None,
        health_check_interval_s: float = 60.0,
        start_health_checks: bool = True,
        base_backoff_seconds: float = 2.0,
        max_failovers: int = 3,
        quality_threshold: float = 0.7,
        evaluation_window: int = 10,
        cache_enabled: bool = True,
        timeout_s: float = 30.0,
        request_timeout_s: float = 120.0,
        warm: bool = True,
        retention_days: float = 30.0,
        retries_per_model: int = 1,
        degradation_check_interval_s: float = 60.0,
        performance_windows_s: tuple[float, float] = (3600.0, 86400.0),
        recorder: Recorder | None = None,
        # The routing policy (amm.policy): {"kind": "softmax", ...}; None: the registry's.
        policy: Any = None,
        state_url: str | None = None,  # the fleet's shared state; None: $AMM_STATE_URL, registry
        on_cancel: OnCancel | str = OnCancel.DRAIN,
        cancel_drain_timeout_s: float = 60.0,
    ) -> ModelManager:
        """Build every component from one registry file and one data directory.

        Everything durable goes to ``{data_dir}/amm.db`` (spans, cost ledger,
        performance table, response cache), which the dashboard reads. Give
        ``recorder=`` to record on providers of your own (tests, embedding apps).

        Spans and performance rows older than ``retention_days`` are deleted in the
        background (the cost ledger is kept). Time limits: ``timeout_s`` bounds one
        provider attempt (30 s), and
        ``request_timeout_s`` the whole request with its retries and failovers (120 s):
        each attempt gets at most the time that is left. If building fails (a bad
        registry, an unwritable data directory), nothing is left running or open.

        A stream its caller leaves early (``on_cancel``): ``"drain"`` reads the provider's
        stream to its end in the background, ``cancel_drain_timeout_s`` (60 s) at most,
        and bills the provider's own usage report, exact, paying for the rest of the
        answer; ``"close"`` closes the connection at once and bills amm's estimate,
        flagged (:class:`OnCancel`, :mod:`amm._drains`).
        """
        from amm._store import open_store
        from amm.api_client import APIClientManager
        from amm.api_key_manager import APIKeyManager
        from amm.cache_manager import CacheManager
        from amm.cost_tracker import CostTracker
        from amm.evaluator import ResponseEvaluator
        from amm.failover_manager import FailoverManager
        from amm.health_checker import HealthChecker
        from amm.performance_monitor import PerformanceMonitor
        from amm.rate_limiter import RateLimiter
        from amm.registry import ModelRegistry
        from amm.selector import ModelSelector
        from amm.state.wiring import open_fleet, share_demotions
        from telemetry.recorder import Recorder

        # The registry and settings first: bad input fails before any thread, file or
        # exporter exists.
        registry = ModelRegistry(Path(config_path))
        cancel_mode = _stream_settings(on_cancel, cancel_drain_timeout_s)
        try:
            budget = BudgetPolicy(budget_policy)
        except ValueError:
            raise ConfigurationError(
                f"budget_policy: must be one of {', '.join(p.value for p in BudgetPolicy)}; "
                f"got {budget_policy!r}", field="budget_policy") from None
        db_path = Path(data_dir) / "amm.db"
        opened: list[Any] = []  # closed again, in reverse, if building fails half-way
        tel = None
        try:
            # One writer for the whole file (ledger, performance, cache, spans); an
            # unwritable data directory is a ConfigurationError naming it, here.
            store = open_store(db_path, retention_days=retention_days)
            opened.append(store)
            if telemetry and recorder is None:
                from telemetry.setup import setup

                tel = setup(service_name=service_name, store_path=db_path)
                opened.append(tel)
            if recorder is None:
                # Bound to this Telemetry's own providers (the globals can be set once only).
                recorder = (tel.recorder(quality_threshold=quality_threshold) if tel is not None
                            else Recorder())
            keys = key_manager if key_manager is not None else APIKeyManager()
            if key_manager is None:
                keys.load_keys()
            api_client = APIClientManager(keys, registry=registry, timeout_s=timeout_s,
                                          events=recorder)
            opened.append(api_client)
            health = HealthChecker(
                registry, check_interval_seconds=int(health_check_interval_s),
                api_client=api_client, events=recorder,
            )
            limiter = RateLimiter(registry, events=recorder)
            recent_s, baseline_s = performance_windows_s
            perf = PerformanceMonitor(db_path, events=recorder, recent_window_s=recent_s,
                                      baseline_window_s=baseline_s, store=store)
            opened.append(perf)
            costs = CostTracker(db_path, daily_budget=daily_budget, events=recorder, store=store)
            opened.append(costs)
            cache = (CacheManager(db_path, events=recorder, store=store) if cache_enabled
                     else None)
            if cache is not None:
                opened.append(cache)
            evaluator = ResponseEvaluator(
                quality_threshold=quality_threshold, evaluation_window=evaluation_window,
                events=recorder,
            )
            # The fleet's shared state (state_url > $AMM_STATE_URL > registry "state"),
            # None in-process; selection then sees the fleet-merged statistics.
            fleet = open_fleet(state_url, registry=registry, limiter=limiter, costs=costs,
                               health=health, monitor=perf, recorder=recorder,
                               data_dir=data_dir, enforce_budget=budget is BudgetPolicy.REFUSE,
                               meter_provider=tel.meter_provider if tel is not None else None)
            selector = ModelSelector(registry, health, limiter,
                                     fleet.stats if fleet is not None else perf, events=recorder,
                                     key_check=api_client.can_call, policy=policy)
            failover = FailoverManager(
                selector, max_retries=max_failovers, base_backoff_seconds=base_backoff_seconds,
                events=recorder,
            )
            for listener in (costs, perf, health, limiter):
                recorder.add_listener(listener)
            recorder.observe_budget(lambda: costs.current_spend() / costs.daily_budget * 100.0
                                    if costs.daily_budget else 0.0)
            recorder.observe_availability(
                lambda: {m.id: health.is_model_available(m.id) for m in registry.models()}
            )
            manager = cls(
                registry=registry, api_client=api_client, health_checker=health,
                rate_limiter=limiter,
                performance_monitor=perf, selector=selector, failover_manager=failover,
                evaluator=evaluator, cache_manager=cache, cost_tracker=costs, recorder=recorder,
                settings=ManagerSettings(
                    budget_policy=budget, cache_enabled=cache_enabled,
                    retries_per_model=retries_per_model,
                    degradation_check_interval_s=degradation_check_interval_s,
                    request_timeout_s=request_timeout_s, warm=warm, on_cancel=cancel_mode,
                    cancel_drain_timeout_s=cancel_drain_timeout_s,
                ),
                telemetry=tel, start_health_checks=start_health_checks, store=store,
            )
            if fleet is not None:
                manager.state = fleet
                share_demotions(fleet, manager._demoted, manager._clock,
                                manager.settings.demotion_s)
                if cache is not None:
                    cache.share(fleet)
            return manager
        except BaseException:
            for component in reversed(opened):
                with contextlib.suppress(Exception):
                    (getattr(component, "shutdown", None) or getattr(component, "release", None)
                     or component.close)()
            raise

    # ----------------------------------------------------------------- lifecycle

    async def start(self) -> None:
        """Start background work (health checks). Safe to call twice."""
        if self._started:
            return
        self._started = True
        self._closed = False
        self._loop = asyncio.get_running_loop()  # background work lives on this loop
        if self.settings.warm:
            warm_up()
        if self._start_health_checks:
            await self.health_checker.start()
        if self.state is not None:
            await self.state.start()
        if self.settings.degradation_check_interval_s > 0:
            self._watch = asyncio.create_task(self._watch_degradation(), name="amm-degradation")

    async def warmed(self, timeout_s: float | None = None) -> bool:
        """Wait until litellm is imported (see :func:`warm_up`), e.g. before a service
        reports ready; True when it is."""
        thread = warm_up()
        await asyncio.to_thread(thread.join, timeout_s)
        return not thread.is_alive()

    async def stop(self) -> None:
        """Stop background work and flush every store and exporter. Safe to call twice."""
        if self._closed:
            return
        loop = self._loop
        if loop is not None and loop.is_running() and loop is not asyncio.get_running_loop():
            # Started elsewhere (a sync agent's portal loop): stop where the tasks live.
            await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(self.stop(), loop))
            return
        self._closed = True
        self._started = False
        self._loop = None
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
            self._watch = None
        await self.health_checker.stop()
        # Streams callers left are booked before the ledger and the clients close.
        await self.stream_drains.close(DRAIN_GRACE_S)
        if self.state is not None:
            await self.state.stop()  # pending settlements first, then the connections
        self.recorder.end_pending()
        for component in (self.cost_tracker, self.performance_monitor, self.cache_manager):
            if component is not None:
                component.close()  # never raises: a write it could not do is logged
        store, self._store = self._store, None
        if store is not None:
            store.release()
        await self.api_client.aclose()
        if self.telemetry is not None:
            self.telemetry.force_flush()

    async def check_degradation(self) -> list[Any]:
        """Compare each model's recent window with its baseline now; each degradation
        found is recorded (a ``DegradationEvent``) and returned."""
        found = []
        for model in self.registry.enabled_models():
            d = await self.performance_monitor.detect_degradation(
                model.id, threshold=self.settings.degradation_threshold)
            if d is not None:
                found.append(d)
        return found

    async def _watch_degradation(self) -> None:
        while True:
            await asyncio.sleep(self.settings.degradation_check_interval_s)
            try:
                await self.check_degradation()
            except Exception:  # background work never crashes the caller
                log.exception("degradation check failed")

    def close(self) -> None:
        """Blocking :meth:`stop`, for code without an event loop (sync agents)."""
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self.stop(), loop).result()
        else:
            asyncio.run(self.stop())

    async def __aenter__(self) -> ModelManager:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def drain_streams(self, timeout_s: float | None = None) -> bool:
        """Wait until every stream a caller left (``on_cancel="drain"``) has been read to
        its end and its attempt booked in the ledger; ``timeout_s`` at most (None: up to
        each drain's own ``cancel_drain_timeout_s``). True when none is pending
        (``manager.stream_drains.pending`` counts them). ``stop()`` does this too, for
        :data:`DRAIN_GRACE_S`, then closes what is left (booked as flagged estimates).

        >>> await manager.drain_streams()   # e.g. before reading the ledger
        """
        return await self.stream_drains.wait(timeout_s)

    def flush(self) -> None:
        """Write everything pending (ledger, performance rows, spans) now."""
        self.cost_tracker.flush()
        self.performance_monitor.flush()
        if self.telemetry is not None:
            self.telemetry.force_flush()

    # -------------------------------------------------------------- request path

    async def complete(
        self, request: ModelRequest, constraints: SelectionConstraints | None = None
    ) -> ModelResponse:
        """Run one request: cache, budget, selection, failover, evaluation, cache store.

        Returns a :class:`ModelResponse` or raises an :class:`amm.errors.APIModelError`
        whose ``attempted_models`` and ``failure_reasons`` say what happened. Besides the
        steps below, each attempt's event reaches the recorder's listeners (added in
        :meth:`from_config`): the cost ledger (``CostTracker``, durable before this
        returns), the performance table and rolling statistics (``PerformanceMonitor``),
        passive health (``HealthChecker``) and the provider's 429s (``RateLimiter``).
        """
        if not self._started:
            await self.start()
        deadline = DEADLINE.set(time.monotonic() + (request.timeout_s
                                                     or self.settings.request_timeout_s))
        try:
            response = await self._complete(request, constraints)
        finally:
            DEADLINE.reset(deadline)
        # The ledger row of every attempt is committed before the caller sees the answer.
        await self.cost_tracker.durable()
        return response

    async def _complete(
        self, request: ModelRequest, constraints: SelectionConstraints | None
    ) -> ModelResponse:
        with self._request_span(request):
            cache_key = self._cache_key(request)
            if cache_key is not None:
                cached = await self._cache_get(cache_key, request.agent_type, request.task_id)
                if cached is not None:
                    return cached
            response = await self._route(request, constraints, _Attempt(self, request))
            response = await self._evaluate(request, response)
            self._check_answer(request, response)
            if cache_key is not None:
                await self._cache_set(cache_key, response)
            return response

    def stream(
        self, request: ModelRequest, constraints: SelectionConstraints | None = None
    ) -> ManagedStream:
        """The request, streamed: ``async for chunk in manager.stream(request)``.

        Every step of :meth:`complete` applies (cache, budget, selection of a model
        that streams, rate limits, failover until the first chunk, cost, quality once
        on the whole answer, cache store); ``stream.response`` holds the whole
        :class:`ModelResponse` after the loop. See :mod:`amm.streaming`.
        """
        from amm.streaming import ManagedStream

        return ManagedStream(self, replace(request, stream=True), constraints)

    async def _open_stream(self, stream: ManagedStream) -> None:
        """The request path of a stream up to its first chunk (called by ManagedStream)."""
        if not self._started:
            await self.start()
        deadline = DEADLINE.set(time.monotonic() + (stream.request.timeout_s
                                                     or self.settings.request_timeout_s))
        try:
            await self._open_stream_steps(stream)
        finally:
            DEADLINE.reset(deadline)

    async def _open_stream_steps(self, stream: ManagedStream) -> None:
        request, constraints = stream.request, stream.constraints
        cache_key = self._cache_key(request)
        if cache_key is not None:
            cached = await self._cache_get(cache_key, request.agent_type, request.task_id)
            if cached is not None:
                stream.serve_cached(cached)
                return
        attempt = _StreamAttempt(self, request)
        opened = await self._route(request, constraints, attempt)
        stream.serve(opened, attempt.reservation, cache_key)

    async def _close_stream(self, request: ModelRequest, response: ModelResponse,
                            cache_key: str | None) -> ModelResponse:
        """The request path of a stream after its last chunk: quality, the cache, and the
        ledger row committed before the loop ends (as ``complete`` does before it returns)."""
        response = await self._evaluate(request, response)
        self._check_answer(request, response)
        if cache_key is not None:
            await self._cache_set(cache_key, response)
        await self.cost_tracker.durable()
        return response

    # ------------------------------------------------------------------- steps

    def _request_span(self, request: ModelRequest) -> contextlib.AbstractContextManager[Any]:
        md = request.metadata
        if ACTIVE_AGENT.get() == (request.agent_type, request.task_id):
            if md:  # the agent's span is open: the call's metadata goes on it
                _annotate_current_span(_metadata_attributes(md))
            return contextlib.nullcontext()
        if not md:
            return self.recorder.agent_span(request.agent_type, request.task_id)
        return self.recorder.agent_span(
            request.agent_type, request.task_id,
            session_id=_first(md, "session.id", "session_id"),
            user_id=_first(md, "user.id", "user_id"), attributes=_metadata_attributes(md))

    async def _route(self, request: ModelRequest, constraints: SelectionConstraints | None,
                     attempt: Any) -> Any:
        """Budget, selection, then the attempt with failover: the middle of complete and
        stream. A pinned model (``model=``) is selected alone; failover may go only to
        its ``fallbacks``."""
        constraints = self._apply_budget(request, self._narrow(request, constraints))
        demoted = self._demoted_for(request.agent_type)
        first = constraints
        if request.model is not None:
            first = replace(constraints or SelectionConstraints(),
                            only_models=frozenset({request.model}))
        selection = await self.selector.select_model(request, request.agent_type, first,
                                                     demoted=demoted)
        if selection is None:
            raise self._no_match(request, first)
        return await self.failover_manager.execute_with_failover(
            selection.model_id, request, attempt, agent_type=request.agent_type,
            constraints=constraints, demoted=demoted,
        )

    def _narrow(self, request: ModelRequest,
                constraints: SelectionConstraints | None) -> SelectionConstraints | None:
        """The call's own narrowing (model, fallbacks, exclude_models, providers) added to
        the agent's constraints; an id the registry lacks is an error, before any call."""
        if request.model is None and not request.exclude_models and request.providers is None:
            return constraints
        named = [request.model, *request.fallbacks, *request.exclude_models]
        unknown = [m for m in named if m is not None and self.registry.get_model(m) is None]
        if unknown:
            raise InvalidRequestError(
                f"not in the registry: {', '.join(unknown)} (known: "
                f"{', '.join(m.id for m in self.registry.models())})",
                task_id=request.task_id or None, error_type="unknown_model")
        base = constraints or SelectionConstraints()
        return replace(
            base,
            excluded_models=base.excluded_models | frozenset(request.exclude_models),
            only_models=(frozenset({request.model, *request.fallbacks})
                         if request.model is not None else base.only_models),
            only_providers=(frozenset(request.providers) if request.providers is not None
                            else base.only_providers),
        )

    def _cache_key(self, request: ModelRequest) -> str | None:
        cache = self.cache_manager
        if cache is None or not self.settings.cache_enabled or not request.cache \
                or not cache.is_cacheable(request):
            return None
        return cache.generate_cache_key(request)

    async def _cache_get(self, key: str, agent_type: str, task_id: str) -> ModelResponse | None:
        assert self.cache_manager is not None
        try:
            hit = await self.cache_manager.get(key, agent_type=agent_type, task_id=task_id)
        except CacheError as exc:  # graceful degradation: carry on without the cache
            log.warning("cache unavailable, continuing without it: %s", exc)
            return None
        if hit is None:
            return None
        model = self.registry.get_model(hit.response.model_id)
        if model is None or not model.enabled:
            return None  # answered by a model no longer in the registry: a miss
        self.selector.record_cache_hit(agent_type, task_id, hit.response.model_id)
        return replace(hit.response, latency_ms=0.0, cost=0.0,
                       metadata={**hit.response.metadata, "cache_hit": True})

    async def _cache_set(self, key: str, response: ModelResponse) -> None:
        assert self.cache_manager is not None
        try:
            await self.cache_manager.set(key, response)
        except CacheError as exc:
            log.warning("cache unavailable, response not cached: %s", exc)

    def _apply_budget(
        self, request: ModelRequest, constraints: SelectionConstraints | None
    ) -> SelectionConstraints | None:
        tracker = self.cost_tracker
        spend = tracker.current_spend() + tracker.reserved()
        if tracker.daily_budget <= 0 or spend < tracker.daily_budget:
            return constraints
        if self.settings.budget_policy is BudgetPolicy.REFUSE:
            raise BudgetExceededError(
                f"daily budget of ${tracker.daily_budget:.2f} exceeded (spent ${spend:.4f})",
                task_id=request.task_id,
            )
        cheapest = self._cheapest_cost(request, constraints)
        if cheapest is None:
            raise BudgetExceededError(
                f"daily budget of ${tracker.daily_budget:.2f} exceeded and no model fits "
                "the request",
                task_id=request.task_id,
            )
        base = constraints or SelectionConstraints()
        return replace(base, max_cost_per_request=cheapest * (1 + 1e-9))

    def _cheapest_cost(
        self, request: ModelRequest, constraints: SelectionConstraints | None
    ) -> float | None:
        """The estimated cost of the request on the cheapest model the selector finds
        eligible for it (its filters, not a copy of them), or None when none is."""
        costs = self.selector.eligible_costs(request, request.agent_type, constraints)
        return min(costs.values()) if costs else None

    async def _evaluate(self, request: ModelRequest, response: ModelResponse) -> ModelResponse:
        quality = await self.evaluator.evaluate_response(response, request)
        agent = request.agent_type
        self.evaluator.record_score(response.model_id, agent, quality.overall_score)
        if self.evaluator.should_demote(response.model_id, agent):
            key = (agent, response.model_id)
            if key not in self._demoted or self._demoted[key] <= self._clock():
                self._demoted[key] = self._clock() + self.settings.demotion_s
                self.recorder.record(ModelDemotedEvent(
                    model_id=response.model_id, agent_type=agent,
                    reason=f"mean quality below {self.evaluator.quality_threshold:g} "
                           f"over the last {self.evaluator.evaluation_window} answers",
                ))
        return replace(response, metadata={**response.metadata, "quality": quality.overall_score})

    def _no_match(self, request: ModelRequest,
                  constraints: SelectionConstraints | None) -> APIModelError:
        """The error when no model passes the filters: every model and why, retryable
        only when some reason passes with time (health, rate limit, demotion, a key
        resting after a 401/403)."""
        required = set(constraints.required_capabilities) if constraints else set()
        unknown = sorted(required - self.selector.known_capabilities())
        if unknown:
            known = sorted(self.selector.known_capabilities())
            hints = []
            for cap in unknown:
                close = difflib.get_close_matches(cap, known, n=1)
                hints.append(f"{cap!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            return InvalidRequestError(
                f"no registered model has the capability {', '.join(hints)}; known "
                f"capabilities: {', '.join(known)}", task_id=request.task_id or None,
                error_type="unknown_capability")
        from amm.selector import Exclusion, Reason

        reasons = self.selector.exclusions(request, request.agent_type, constraints,
                                           demoted=self._demoted_for(request.agent_type))
        if reasons and all(isinstance(r, Reason) and r.code is Exclusion.CONTEXT
                           for r in reasons.values()):
            largest = max((m.context_window for m in self.registry.models()), default=0)
            return InvalidRequestError(
                f"the request (~{estimate_tokens(request.text()):,} tokens with max_tokens) fits "
                f"no model's context window (the largest is {largest:,})",
                task_id=request.task_id or None, failure_reasons=reasons,
                error_type="context_too_long")
        temporary = any(isinstance(r, Reason) and r.code.temporary for r in reasons.values())
        listed = "; ".join(f"{m}: {r}" for m, r in reasons.items()) or "no models registered"
        return ModelUnavailableError(
            f"no model matches the request of agent type {request.agent_type!r}: {listed}",
            task_id=request.task_id or None, failure_reasons=reasons, is_retryable=temporary,
            error_type="no_model_matches")

    @staticmethod
    def _check_answer(request: ModelRequest, response: ModelResponse) -> None:
        """``on_invalid="raise"``: an answer that breaks the tools or the schema is an error."""
        if request.on_invalid != "raise" or not (request.tools or request.wants_json):
            return
        problems = answer_problems(response, request)
        if problems:
            raise QualityThresholdError(
                f"{response.model_id}: the answer is not valid: {'; '.join(problems)}",
                model_id=response.model_id, task_id=request.task_id or None,
                error_type="invalid_answer", is_retryable=False)

    def _demoted_for(self, agent_type: str) -> frozenset[str]:
        if not self._demoted:
            return frozenset()
        now = self._clock()
        return frozenset(m for (a, m), until in self._demoted.items()
                         if a == agent_type and until > now)

    def demoted_models(self) -> Mapping[tuple[str, str], float]:
        """(agent type, model) pairs demoted for low quality, with the monotonic time they end."""
        return dict(self._demoted)


def _first(md: Mapping[str, Any], *names: str) -> str | None:
    for name in names:
        if md.get(name):
            return str(md[name])
    return None


def _metadata_attributes(md: Mapping[str, Any]) -> dict[str, Any]:
    """A call's metadata as span attributes: ``amm.metadata.<key>``; the session and
    user keys also under the names viewers group by."""
    attrs: dict[str, Any] = {f"amm.metadata.{k}": v for k, v in md.items()}
    session, user = _first(md, "session.id", "session_id"), _first(md, "user.id", "user_id")
    if session:
        attrs["session.id"] = attrs["gen_ai.conversation.id"] = session
    if user:
        attrs["user.id"] = user
    return attrs


def _annotate_current_span(attrs: Mapping[str, Any]) -> None:
    from opentelemetry import trace

    span = trace.get_current_span()
    if span.is_recording():
        span.set_attributes(dict(attrs))


class _Attempt:
    """The request function given to the failover manager: one model, one request.

    It reserves rate-limit headroom atomically first, so concurrent requests never
    overshoot a model's limit; a model without headroom fails over at once.
    """

    __slots__ = ("_manager", "_request", "_retries", "_tokens")

    def __init__(self, manager: ModelManager, request: ModelRequest) -> None:
        self._manager = manager
        self._request = request
        self._tokens = estimate_tokens(request.text()) + (request.max_tokens
                                                          or DEFAULT_OUTPUT_TOKENS)
        self._retries = (request.max_retries if request.max_retries is not None
                         else manager.settings.retries_per_model)

    def _reserve(self, model_id: str) -> Any:
        """Rate-limit headroom for one attempt, or RateLimitError (fail over at once)."""
        m = self._manager
        reservation = m.rate_limiter.acquire(model_id, self._tokens)
        if reservation is None:
            retry = m.rate_limiter.get_time_until_reset(model_id)
            m.recorder.record(RateLimitedEvent(
                model_id=model_id, source="local", retry_after_s=retry,
                agent_type=self._request.agent_type, task_id=self._request.task_id,
            ))
            raise RateLimitError(
                f"{model_id} is at its local rate limit", model_id=model_id,
                task_id=self._request.task_id, retry_after_seconds=retry,
                error_type="rate_limited_local",
            )
        return reservation

    def _hold_budget(self, model_id: str) -> Any:
        """Reserve the call's estimated cost on ``model_id`` (an upper bound: the output is
        priced at ``max_tokens``), so concurrent calls cannot overshoot the budget
        together; None when there is no budget."""
        m = self._manager
        tracker = m.cost_tracker
        if tracker.daily_budget <= 0:
            return None
        model = m.registry.get_model(model_id)
        if model is None:
            return None
        estimate = model.estimate_cost(estimate_tokens(self._request.text()),
                                       self._request.max_tokens or DEFAULT_OUTPUT_TOKENS)
        try:
            return tracker.reserve(estimate)
        except BudgetExceededError as exc:
            if m.settings.budget_policy is BudgetPolicy.DOWNGRADE \
                    and exc.error_type == "budget_exceeded":
                return None  # downgrade keeps serving, on the cheapest model that fits
            exc.task_id = exc.task_id or self._request.task_id or None
            exc.model_id = exc.model_id or model_id
            raise

    async def _admit_shared(self, model_id: str, reservation: Any, budget: Any) -> None:
        """The fleet's window, cool-down and budget (one round trip to the shared state);
        its ticket settles itself when ``reservation`` and ``budget`` end."""
        state = self._manager.state
        assert state is not None
        try:
            await state.admit(model_id, reservation, budget,
                              agent_type=self._request.agent_type, task_id=self._request.task_id)
        except BaseException:
            reservation.release()
            if budget is not None:
                budget.release()
            raise

    async def _hold(self, model_id: str) -> tuple[Any, Any]:
        """The attempt's holds: budget, then rate-limit headroom, then the fleet's share
        (when a state backend is set); all released again if one is refused."""
        budget = self._hold_budget(model_id)
        try:
            reservation = self._reserve(model_id)
        except BaseException:
            if budget is not None:
                budget.release()
            raise
        if self._manager.state is not None:
            await self._admit_shared(model_id, reservation, budget)
        return reservation, budget

    @staticmethod
    def _drop(reservation: Any, budget: Any) -> None:
        """A failed attempt: no tokens used of the window, the budget hold released (an
        attempt that billed anyway is booked by the ledger from its event)."""
        reservation.settle(0)
        if budget is not None:
            budget.release()

    async def __call__(self, model_id: str) -> ModelResponse:
        m = self._manager
        reservation, budget = await self._hold(model_id)
        try:
            response = await m.api_client.send_request_with_retry(
                model_id, self._request, max_retries=self._retries
            )
        except BaseException:
            self._drop(reservation, budget)
            raise
        reservation.settle(response.token_usage.total_tokens or 0)
        if budget is not None:
            budget.settle(response.cost)
        _correct_limits(m, model_id, response.rate_limit)
        if self._request.on_invalid == "failover" and (self._request.tools
                                                      or self._request.wants_json):
            problems = answer_problems(response, self._request)
            if problems:  # billed already (the attempt was recorded); try another model
                raise QualityThresholdError(
                    f"{model_id}: the answer is not valid: {'; '.join(problems)}",
                    model_id=model_id, task_id=self._request.task_id or None,
                    error_type="invalid_answer", is_retryable=True)
        return response


class _StreamAttempt(_Attempt):
    """Opens a stream on one model, up to its first chunk; the rate-limit reservation
    stays open until the stream settles (:class:`~amm.streaming.ManagedStream`)."""

    __slots__ = ("reservation",)

    def __init__(self, manager: ModelManager, request: ModelRequest) -> None:
        super().__init__(manager, request)
        self.reservation: Any = None

    async def __call__(self, model_id: str) -> Any:
        m = self._manager
        reservation, budget = await self._hold(model_id)
        try:
            opened = await m.api_client.open_stream_with_retry(
                model_id, self._request, max_retries=self._retries
            )
        except BaseException:
            self._drop(reservation, budget)
            raise
        self.reservation = (reservation, budget)
        _correct_limits(m, model_id, opened.rate_limit)
        return opened


def _correct_limits(manager: ModelManager, model_id: str, limits: RateLimitInfo | None) -> None:
    if limits is not None:  # the provider's own count of what is left corrects ours
        manager.rate_limiter.update_from_headers(
            model_id, remaining_requests=limits.remaining_requests,
            remaining_tokens=limits.remaining_tokens, reset_requests_s=limits.reset_requests_s,
            reset_tokens_s=limits.reset_tokens_s)
