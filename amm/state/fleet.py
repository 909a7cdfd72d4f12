"""FleetState: the request path's view of the shared backend, and what keeps it safe.

One object per worker. On the request path, :meth:`FleetState.admit` asks the
backend, in one round trip, whether the model's fleet-wide window, its cool-down and
the fleet's budget let this attempt through; the ticket it returns settles itself
when the attempt's local rate-limit reservation and budget hold end (so the settle
paths of calls and streams need nothing new). Settlements and the responses shared
with the fleet's cache wait in an outbox and go out together, one round trip every
``write_delay_s`` (5 ms) at most, off the request path: a call adds one wake-up of
the event loop to the request path (its admission), not three. The fleet's cache is
asked only for keys it is known to hold (the sync loop reads the keys stored since
its last round): a miss, the common case, makes no round trip; an entry another
worker stored within the last sync interval is not seen until the next round. As a
listener it shares what one worker learns: a provider's 429 cools the model for every
worker, a health change
and a quality demotion are published with an expiry. A background loop (every
``sync_interval_s``) pulls the others' health and demotions, publishes this worker's
statistics and heartbeat, merges the fleet's, and watches for the backend's return.

Redis away never fails a request: the first failure logs one warning, every request
served meanwhile counts on ``amm.state.fallback`` and marks its span
(``amm.state.fallback=true``), and admission falls back to an in-process state in
which this worker keeps its share of the fleet: each model's caps and the budget
left at the last contact divided by the number of live workers then. With
``fail_closed=True`` budgeted calls are refused instead (``BudgetExceededError``,
``error_type="state_unavailable"``). While it is away the request path does not wait
on it: the sync loop pings it every ``retry_interval_s`` and its answer ends the
fallback (one info line).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any

from amm._aio import running_loop
from amm.errors import BudgetExceededError, RateLimitError
from amm.state.base import (
    Admission,
    CacheEntry,
    Settlement,
    StateBackend,
    StateUnavailable,
    Verdict,
)
from amm.state.memory import InProcessState
from telemetry.events import Event, HealthChangeEvent, ModelDemotedEvent, RateLimitedEvent

__all__ = ["FleetState", "FleetTicket"]

logger = logging.getLogger("amm.state")

_DEMOTED = "demoted"
_HEALTH = "health"


class FleetTicket:
    """One admitted attempt; settles on the backend once its local holds have ended.

    Hooked onto the attempt's rate-limit reservation (the tokens used) and budget
    hold (its end), so a call and a stream settle the fleet state the same way.
    """

    __slots__ = ("_fleet", "_parts", "_tokens", "admission", "backend")

    def __init__(self, fleet: FleetState, admission: Admission, backend: StateBackend,
                 parts: int) -> None:
        self._fleet = fleet
        self.admission = admission
        self.backend = backend
        self._parts = parts
        self._tokens: int | None = None

    def tokens_ended(self, tokens: int | None) -> None:
        """The rate-limit reservation ended with ``tokens`` (None: released unsent)."""
        self._tokens = tokens
        self._part_done()

    def budget_ended(self, _actual: float | None) -> None:
        """The budget hold ended (the ledger has booked what was spent)."""
        self._part_done()

    def _part_done(self) -> None:
        self._parts -= 1
        if self._parts == 0:
            self._fleet._settle(self)

    def __repr__(self) -> str:
        return f"FleetTicket({self.admission.model_id!r}, {self.backend.name}, open={self._parts})"


class FleetState:
    """Shared limits, budget, health and cache for one worker of a fleet.

    >>> fleet = FleetState(RedisState(url), limiter=limiter, costs=tracker, worker="w1")
    >>> ticket = await fleet.admit("gpt-4-turbo", reservation, hold)  # or a typed error
    """

    def __init__(
        self,
        backend: StateBackend,
        *,
        limiter: Any,
        costs: Any = None,
        worker: str | None = None,
        enforce_budget: bool = True,
        fail_closed: bool = False,
        health: Any = None,
        on_demoted: Callable[[str, str, float], None] | None = None,
        stats: Any = None,
        sync_interval_s: float = 2.0,
        retry_interval_s: float = 1.0,
        write_delay_s: float = 0.005,
        hold_ttl_s: float = 300.0,
        meter_provider: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self._local = InProcessState(clock=clock)
        self._limiter = limiter
        self._costs = costs
        self.worker = worker or uuid.uuid4().hex[:12]
        self._enforce_budget = enforce_budget
        self.fail_closed = fail_closed
        self._health = health
        self.on_demoted = on_demoted
        self.stats = stats
        self.sync_interval_s = sync_interval_s
        self.retry_interval_s = retry_interval_s
        self.write_delay_s = write_delay_s
        self._hold_ttl = hold_ttl_s
        self._clock = clock
        self._lock = threading.Lock()
        self._up = True
        self.fallbacks = 0  # requests served on the fallback
        self.outages = 0  # times the backend went away
        self.fleet_size = 1  # live workers at the last sync (this one included)
        self._sizes: deque[int] = deque(maxlen=30)  # fleet sizes of the last syncs
        self._fleet_spend = 0.0  # the fleet's spend at the last contact
        self._own_spend_then = 0.0  # this worker's spend at that moment
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task[None] | None = None
        self._pending: set[asyncio.Task[Any]] = set()
        # what calls leave behind, written together (see the module docstring)
        self._settlements: list[tuple[StateBackend, Settlement]] = []
        self._cache_out: list[CacheEntry] = []
        self._write_due = False  # a write of the outbox is scheduled
        self._cache_known: set[int] = set()  # hash() of the keys the fleet's cache holds
        self._cache_cursor = 0.0  # where the next read of the cache's keys starts
        self._meter_provider = meter_provider
        self._counter: Any = None  # made at the first fallback: none costs nothing

    def __repr__(self) -> str:
        mode = self.backend.name if self._up else f"{self._local.name} (fallback)"
        return (f"FleetState({self.backend!r}, worker={self.worker!r}, mode={mode}, "
                f"fleet_size={self.fleet_size}, fallbacks={self.fallbacks})")

    @property
    def shared(self) -> bool:
        """True while the shared backend answers (False: on the in-process fallback)."""
        return self._up

    # -- admission (the request path) ------------------------------------------------

    async def admit(self, model_id: str, reservation: Any, hold: Any = None, *,
                    agent_type: str = "", task_id: str = "") -> FleetTicket:
        """Let one attempt on ``model_id`` through the fleet's window and budget.

        ``reservation`` is the attempt's local rate-limit reservation, ``hold`` its
        local budget hold (None: no budget). Raises RateLimitError (the fleet's window
        is full or the model cools down; the model is then held locally for as long,
        so selection looks elsewhere) or BudgetExceededError (the fleet's budget).
        """
        request_cap, token_cap, window_s = self._limiter.caps(model_id)
        budget = self._budget() if hold is not None else 0.0
        a = Admission(
            ticket=os.urandom(16).hex(), model_id=model_id, tokens=reservation.estimated_tokens,
            request_cap=request_cap, token_cap=token_cap, window_s=window_s,
            day=getattr(hold, "day", ""), worker=self.worker,
            cost_usd=hold.estimated_cost_usd if hold is not None else 0.0,
            budget_usd=budget, worker_spend_usd=self._own_spend(), hold_ttl_s=self._hold_ttl)
        verdict, backend = await self._admit(a, hold is not None)
        if not verdict.admitted:
            self._refuse(a, verdict, agent_type, task_id)
        ticket = FleetTicket(self, a, backend, 2 if hold is not None else 1)
        reservation.on_end(ticket.tokens_ended)
        if hold is not None:
            hold.on_end(ticket.budget_ended)
        return ticket

    async def _admit(self, a: Admission, budgeted: bool) -> tuple[Verdict, StateBackend]:
        if self._up:
            try:
                verdict = await self.backend.admit(a)
            except StateUnavailable as exc:
                self._went_down(exc)
            else:
                self._came_back()
                if a.budget_usd > 0:
                    self._fleet_spend, self._own_spend_then = verdict.fleet_spend_usd, \
                        a.worker_spend_usd
                return verdict, self.backend
        self._count_fallback("admit")
        if budgeted and self.fail_closed and self._enforce_budget:
            raise BudgetExceededError(
                f"the shared budget on {self.backend!r} cannot be checked; budgeted calls "
                "are refused until it answers (fail_closed)", error_type="state_unavailable")
        return await self._admit_share(a), self._local

    def _share_of(self, cap: int) -> int:
        return 0 if cap <= 0 else max(1, cap // self.peak_fleet_size)

    async def _admit_share(self, a: Admission) -> Verdict:
        """The fallback: this worker's share of the fleet's caps and of the budget left
        at the last contact. Its own window (every request it sent, through the shared
        state or not) is the local limiter's, so n workers each holding 1/n of a window
        stay within the window together."""
        requests, tokens = self._limiter.usage(a.model_id)  # this attempt included
        req_share, tok_share = self._share_of(a.request_cap), self._share_of(a.token_cap)
        if (req_share and requests > req_share) or (tok_share and tokens > tok_share
                                                    and requests > 1):
            return Verdict(False, "rate", a.window_s / max(1, req_share or 1))
        budget = a.budget_usd
        if budget > 0:
            left = max(0.0, budget - self._fleet_spend)
            budget = max(self._own_spend_then + left / self.peak_fleet_size, 1e-12)
        return await self._local.admit(replace(a, request_cap=0, token_cap=0,
                                               budget_usd=budget))

    @property
    def peak_fleet_size(self) -> int:
        """The most workers seen alive over the last syncs: the fallback's divisor (a
        worker that just left still counts for a while: the safe side)."""
        return max(self._sizes, default=self.fleet_size)

    def _refuse(self, a: Admission, verdict: Verdict, agent_type: str, task_id: str) -> None:
        if verdict.reason == "budget":
            raise BudgetExceededError(
                f"the fleet's daily budget of ${a.budget_usd:.2f} would be exceeded: spent "
                f"${verdict.fleet_spend_usd:.4f} across workers, this call ${a.cost_usd:.4f}",
                model_id=a.model_id, task_id=task_id or None, error_type="budget_exceeded")
        wait = max(verdict.retry_after_s, 0.001)
        self._limiter.hold(a.model_id, wait)  # selection looks elsewhere meanwhile
        self._limiter.events.record(RateLimitedEvent(
            model_id=a.model_id, source="local", retry_after_s=wait, agent_type=agent_type,
            task_id=task_id))
        what = "cools down after a provider 429" if verdict.reason == "cooldown" \
            else "is at the fleet's rate limit"
        raise RateLimitError(
            f"{a.model_id} {what}", model_id=a.model_id, task_id=task_id or None,
            retry_after_seconds=math.ceil(wait), error_type="rate_limited_local")

    def _settle(self, ticket: FleetTicket) -> None:
        with self._lock:
            self._settlements.append((ticket.backend, Settlement(
                ticket.admission, ticket._tokens, self._own_spend())))
        self._write_soon()

    # -- the outbox: settlements and cache entries, written together ------------------

    def _write_soon(self) -> None:
        """Schedule one write of the outbox ``write_delay_s`` from now (from any thread)."""
        with self._lock:
            if self._write_due:
                return
            self._write_due = True
        running = running_loop()
        loop = self._loop or running
        if loop is None or loop.is_closed():
            with self._lock:
                self._write_due = False
            return
        if running is loop:
            loop.call_later(self.write_delay_s, self._write_now)
        else:
            loop.call_soon_threadsafe(loop.call_later, self.write_delay_s, self._write_now)

    def _write_now(self) -> None:
        self.spawn(self.flush())

    async def flush(self) -> None:
        """Write the outbox now: settlements (to the backend that admitted each) and
        cache entries, one round trip per backend. Never raises."""
        with self._lock:
            settlements, self._settlements = self._settlements, []
            cache, self._cache_out = self._cache_out, []
            self._write_due = False
        if not settlements and not cache:
            return
        by_backend: dict[int, tuple[StateBackend, list[Settlement]]] = {}
        for backend, settlement in settlements:
            by_backend.setdefault(id(backend), (backend, []))[1].append(settlement)
        shared = by_backend.pop(id(self.backend), (self.backend, []))[1]
        for backend, items in by_backend.values():  # admitted on the fallback
            await backend.write(items)
        # While the backend is away its settlements are dropped, not queued: the entries
        # leave with their window and the holds at their TTL (the safe side), and no
        # write task waits out a timeout per batch meanwhile.
        if (shared or cache) and self._up:
            try:
                await self.backend.write(shared, cache)
            except StateUnavailable as exc:
                self._went_down(exc)
    # -- budget ---------------------------------------------------------------------

    def _budget(self) -> float:
        if self._costs is None or not self._enforce_budget:
            return 0.0
        return float(self._costs.daily_budget)

    def _own_spend(self) -> float:
        return float(self._costs.current_spend()) if self._costs is not None else 0.0

    # -- fallback ---------------------------------------------------------------------

    def _went_down(self, exc: BaseException) -> None:
        with self._lock:
            if not self._up:
                return
            self._up = False
            self.outages += 1
        logger.warning("amm state: %r is unreachable (%s); falling back to in-process state "
                       "(this worker's share of the fleet's limits) until it answers",
                       self.backend, exc)

    def _came_back(self) -> None:
        if self._up:
            return
        with self._lock:
            if self._up:
                return
            self._up = True
        logger.info("amm state: %r answers again; shared state resumed", self.backend)

    def _count_fallback(self, operation: str) -> None:
        self.fallbacks += 1
        attrs = {"amm.state.backend": self.backend.name, "amm.state.operation": operation}
        with contextlib.suppress(Exception):  # telemetry never fails a call
            if self._counter is None:
                self._counter = _fallback_counter(self._meter_provider)
            self._counter.add(1, attrs)
            from opentelemetry import trace

            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute("amm.state.fallback", True)

    async def _try(self, work: Callable[[StateBackend], Coroutine[Any, Any, Any]],
                   operation: str, default: Any = None) -> Any:
        """Run ``work`` on the backend, or on the fallback while it is away."""
        if self._up:
            try:
                result = await work(self.backend)
            except StateUnavailable as exc:
                self._went_down(exc)
            else:
                self._came_back()
                return result
        self._count_fallback(operation)
        try:
            return await work(self._local)
        except Exception:  # the fallback is memory: this is a bug, not an outage
            logger.exception("amm state: in-process fallback failed for %s", operation)
            return default

    # -- shared cache, leases ---------------------------------------------------------

    async def cache_get(self, key: str) -> str | None:
        """The fleet's cached payload for ``key`` (None on a miss or while away). A key
        the fleet is not known to hold is a miss without a round trip."""
        if self._up and hash(key) not in self._cache_known:
            return None
        result: str | None = await self._try(lambda b: b.cache_get(key), "cache_get")
        return result

    async def cache_set(self, key: str, payload: str, ttl_s: float) -> None:
        """Share ``payload`` under ``key`` for ``ttl_s`` (with the next write)."""
        with self._lock:
            self._cache_out.append(CacheEntry(key, payload, ttl_s))
        self._cache_known.add(hash(key))
        self._write_soon()

    async def _read_cache_index(self) -> None:
        """Learn the keys stored in the fleet's cache since the last round."""
        if len(self._cache_known) > self._cache_known_max:
            self._cache_known, self._cache_cursor = set(), 0.0  # forget expired ones
        found = await self._try(lambda b: b.cache_index(self._cache_cursor), "cache_index")
        if found is not None and self._up:
            keys, self._cache_cursor = found
            self._cache_known.update(hash(k) for k in keys)

    _cache_known_max = 400_000

    async def lease(self, name: str, ttl_s: float) -> bool:
        """Hold the lease ``name`` for this worker (True), or another worker holds it."""
        result = await self._try(lambda b: b.lease(name, self.worker, ttl_s), "lease", True)
        return bool(result)

    # -- listener: what one worker learns, every worker knows ---------------------------

    def record(self, event: Event) -> None:
        """Listener: share provider 429s, health changes and demotions. Never raises."""
        try:
            if isinstance(event, RateLimitedEvent) and event.source == "provider":
                secs = 60.0 if event.retry_after_s is None else float(event.retry_after_s)
                self.spawn(self._try(lambda b: b.cool_down(event.model_id, secs), "cool_down"))
            elif isinstance(event, HealthChangeEvent):
                value = "up" if event.is_available else f"down|{event.error or ''}"
                ttl = 0.0 if event.is_available else self._health_ttl()
                self.spawn(self._try(
                    lambda b: b.put_flag(_HEALTH, event.model_id, value, ttl), "put_flag"))
            elif isinstance(event, ModelDemotedEvent) and self._demotion_s > 0:
                key = f"{event.agent_type}|{event.model_id}"
                self.spawn(self._try(
                    lambda b: b.put_flag(_DEMOTED, key, event.reason, self._demotion_s),
                    "put_flag"))
        except Exception:  # a listener must never fail the recorder
            logger.warning("amm state: could not share %r", event, exc_info=True)

    _demotion_s = 300.0

    def set_demotion_seconds(self, seconds: float) -> None:
        """How long a shared demotion lasts (the manager's ``demotion_seconds``)."""
        self._demotion_s = float(seconds)

    def _health_ttl(self) -> float:
        interval = float(getattr(self._health, "check_interval_s", 60.0) or 60.0)
        return max(2 * interval, 30.0)

    # -- lifecycle and the sync loop ----------------------------------------------------

    async def start(self) -> None:
        """Start the sync loop on the running event loop. Idempotent."""
        self._loop = asyncio.get_running_loop()
        if self._task is None or self._task.done():
            await self.sync()  # heard of before the first request: the fleet's size is known
            self._task = asyncio.create_task(self._run(), name="amm-state-sync")

    async def stop(self) -> None:
        """Stop the loop, finish pending settlements, close connections. Idempotent."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            # Bounded: a round stuck in a client library that loses the cancellation
            # must not hold the worker's shutdown (it ends with the loop).
            await asyncio.wait({task}, timeout=2.0)
            if not task.done():
                logger.warning("amm state: the sync loop did not stop within 2 s; left behind")
        await self.flush()
        if self._pending:
            await asyncio.wait(list(self._pending), timeout=2.0)
        await self.flush()  # what the last calls left behind
        await self.backend.aclose()

    async def sync(self) -> None:
        """One round: publish statistics and heartbeat, pull the fleet's. Never raises.

        While the backend is away, a round is one ping (the request path does not wait
        on a backend known to be away); its answer ends the fallback."""
        if not self._up:
            try:
                await self.backend.ping()
            except StateUnavailable:
                return
            self._came_back()
        payload = self.stats.payload(self._own_spend()) if self.stats is not None else "{}"
        ttl = max(3 * self.sync_interval_s, 5.0)
        await self._try(lambda b: b.put_stats(self.worker, payload, ttl), "put_stats")
        if not self._up:
            return
        await self._read_cache_index()
        everyone = await self._try(lambda b: b.stats(), "stats", {}) or {}
        self.fleet_size = max(1, len(everyone))
        self._sizes.append(self.fleet_size)
        if self.stats is not None:
            self.stats.merge({w: p for w, p in everyone.items() if w != self.worker})
        if self._health is not None:
            down = await self._try(lambda b: b.flags(_HEALTH), "flags", {}) or {}
            self._health.apply_shared({m: v.partition("|")[2] for m, (v, _) in down.items()
                                       if v.startswith("down")})
        if self.on_demoted is not None:
            for key, (_, left) in (await self._try(lambda b: b.flags(_DEMOTED), "flags", {})
                                   or {}).items():
                agent, _, model = key.partition("|")
                self.on_demoted(agent, model, left)

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(self.sync_interval_s if self._up else self.retry_interval_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:  # one bad round must not end the loop
                logger.exception("amm state: a sync round failed")

    def spawn(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` on the state's loop, from any thread; never awaited by the caller."""
        running = running_loop()
        loop = self._loop or running
        if loop is None or loop.is_closed():
            work.close()
            return
        if running is loop:
            task = loop.create_task(work)
            self._pending.add(task)
            task.add_done_callback(self._pending.discard)
        else:  # another thread (a sync listener): hand it to the state's loop
            asyncio.run_coroutine_threadsafe(work, loop)


def _fallback_counter(meter_provider: Any) -> Any:
    from opentelemetry import metrics

    provider = meter_provider if meter_provider is not None else metrics.get_meter_provider()
    return provider.get_meter("amm.state").create_counter(
        "amm.state.fallback", unit="{request}",
        description="Operations served on in-process state while the shared backend was away")
