"""The cost ledger: every billed token in SQLite exactly once, and the day's spend in memory.

Booking a cost (:meth:`CostTracker.record_cost`, or the listener :meth:`CostTracker.record`
for ``AttemptEvent``) queues the row on the store's shared writer
(:mod:`telemetry.store_writer`) and adds to the day's running total at once, so
:meth:`check_budget`, :meth:`current_spend` and :meth:`would_exceed` are exact and
instant. The writer commits batches to the table ``amm_cost_ledger`` of a WAL SQLite
file every ``flush_interval_s``, when ``batch_size`` records wait, or at once for a
caller of :meth:`durable`. Each record carries a client-made unique id and is
written with ``INSERT OR IGNORE``, so a retried batch never books anything twice; a
failed write keeps the batch for the next try. :meth:`flush` writes everything
pending now; :meth:`close` flushes and stops, so a clean shutdown loses nothing.

Durability of a returned response: the request path awaits :meth:`durable` before
it returns. It waits for the commit of every row booked so far; callers waiting
together share one commit (group commit), and with ``synchronous=NORMAL`` in WAL a
commit survives a killed process. So a response the caller saw has its ledger row.

Reservations (concurrency-safe budget): before a call, :meth:`reserve` holds its
estimated cost; it raises :class:`~amm.errors.BudgetExceededError` when today's
spend + every held reservation + the estimate passes the budget. The call's actual
cost is booked by the ledger as usual; then :meth:`Reservation.settle` (or
``release()`` when nothing was spent) drops the hold. Bound: spend never passes the
budget by more than the estimation error of the calls in flight, that is
sum(max(0, actual - estimate)) over calls holding a reservation at the same time.

A store that cannot be written: requests are not failed by the ledger, but the
budget **fails closed** by default: while the store is failing (its last commit
failed), :meth:`reserve` refuses with ``BudgetExceededError`` (``CostTrackingError``, a
BudgetExceededError with ``error_type`` ``"ledger_unwritable"``) and :meth:`would_exceed`
says True, since spend that cannot be recorded cannot be bounded. ``fail_open=True``
keeps admitting calls on the in-memory total instead. ``write_failures`` counts the
failed commits.

Days are UTC days. A new instance on an existing file starts the day's running total
from the database, and knows which budget alerts (50/80/100 % by default, each once
per day, kept in ``amm_budget_alerts``) already fired today.

Book each provider call one way: either the listener (AttemptEvents fanned out by
the recorder) or ``record_cost``, not both.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import threading
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, date, datetime, time
from pathlib import Path

from amm._ledger_store import ALERTS_TABLE, LEDGER_TABLE, AlertRow, LedgerStore
from amm.errors import (
    BudgetExceededError,
    ConfigurationError,
    CostTrackingError,
    InvalidRequestError,
)
from amm.models import BudgetStatus, utcnow
from telemetry.events import NULL_SINK, AttemptEvent, BudgetAlertEvent, Event, EventSink
from telemetry.store_writer import StoreWriter

__all__ = ["LEDGER_TABLE", "CostTracker", "Reservation"]

logger = logging.getLogger(__name__)

_SEEN_MAX = 65536  # event ids remembered to drop a re-delivered AttemptEvent


def _ts(dt: datetime) -> str:
    # Fixed width (always microseconds, always +00:00): text order is time order.
    return dt.astimezone(UTC).isoformat(timespec="microseconds")


def _day(dt: datetime) -> str:
    return dt.astimezone(UTC).date().isoformat()


def _as_utc(value: datetime | date, *, end: bool) -> datetime:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, date):
        return datetime.combine(value, time.max if end else time.min, tzinfo=UTC)
    raise InvalidRequestError(
        f"expected a datetime or date; got {value!r}", error_type="invalid_date"
    )


def _check_count(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise InvalidRequestError(
            f"{name} must be a non-negative integer; got {value!r}", error_type=f"invalid_{name}"
        )


class Reservation:
    """A hold on part of today's budget for one call in flight (from
    :meth:`CostTracker.reserve`). ``settle`` or ``release`` ends it; both are
    idempotent and thread-safe, the first one counts. Usable as a context manager
    (released on exit unless settled).

    >>> with tracker.reserve(0.02) as hold:
    ...     response = await call()
    ...     hold.settle(response.cost)
    """

    __slots__ = ("_on_end", "_tracker", "actual_cost_usd", "day", "estimated_cost_usd",
                 "settled")

    def __init__(self, tracker: CostTracker, estimated_cost_usd: float, day: str) -> None:
        self._tracker = tracker
        self.estimated_cost_usd = estimated_cost_usd
        self.day = day
        self.settled = False
        self.actual_cost_usd: float | None = None
        self._on_end: Callable[[float | None], None] | None = None

    def on_end(self, callback: Callable[[float | None], None]) -> None:
        """Call ``callback(actual_cost_usd)`` once the hold ends (None: released): the
        fleet's shared budget drops its hold so. One callback; a later one replaces it."""
        self._on_end = callback

    def settle(self, actual_cost_usd: float) -> None:
        """The call finished and cost ``actual_cost_usd`` (booked by the ledger, not
        here): drop the hold."""
        self._tracker._end(self, float(actual_cost_usd))

    def release(self) -> None:
        """The call will not spend (refused, failed before billing): drop the hold."""
        self._tracker._end(self, None)

    def __enter__(self) -> Reservation:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "settled" if self.settled else "held"
        return f"Reservation(${self.estimated_cost_usd:.6f}, {state})"


class CostTracker:
    """Durable, exact cost ledger with an in-memory daily budget.

    >>> tracker = CostTracker(Path("data/costs.db"), daily_budget=100.0)
    >>> await tracker.record_cost("gpt-4-turbo", "implementation", 1000, 500, 0.025, "task-1")
    >>> (await tracker.check_budget()).utilization_percent
    0.025
    """

    def __init__(
        self,
        db_path: Path | str,
        daily_budget: float = 100.0,
        *,
        alert_thresholds: Iterable[float] = (50, 80, 100),
        clock: Callable[[], datetime] = utcnow,
        events: EventSink = NULL_SINK,
        flush_interval_s: float = 0.5,
        batch_size: int = 256,
        busy_timeout_s: float = 5.0,
        fail_open: bool = False,
        store: StoreWriter | None = None,
    ) -> None:
        if isinstance(daily_budget, bool) or not isinstance(daily_budget, int | float) \
                or not math.isfinite(daily_budget) or daily_budget <= 0:
            raise ConfigurationError(
                f"daily_budget must be a positive number of USD; got {daily_budget!r}",
                field="daily_budget",
            )
        thresholds = sorted(float(t) for t in alert_thresholds)
        if any(t <= 0 for t in thresholds) or flush_interval_s <= 0 or batch_size < 1:
            raise ConfigurationError(
                "alert_thresholds must be > 0 percent, flush_interval_s > 0, batch_size >= 1",
                field="alert_thresholds",
            )
        self._budget = float(daily_budget)
        self._thresholds = thresholds
        self._clock = clock
        self._events = events
        self._fail_open = fail_open
        self._store = LedgerStore(Path(db_path), flush_interval_s=flush_interval_s,
                                  batch_size=batch_size, busy_timeout_s=busy_timeout_s,
                                  store=store)
        # _lock guards the day's running state; _roll_lock serialises day changes.
        self._lock = threading.Lock()
        self._roll_lock = threading.Lock()
        self._seen: dict[str, None] = {}
        self._reserved = 0.0  # today's held reservations
        self._holds = 0  # how many: none held is exactly 0.0, not a float subtraction's residue
        self._today = _day(self._clock())
        self._today_total, self._fired = self._load_day(self._today)
        self._store.set_budget(self._today, self._budget)

    @property
    def db_path(self) -> Path:
        """The SQLite file this component writes."""
        return self._store.path

    @property
    def write_failures(self) -> int:
        """Failed commits of the store this ledger writes (shared with the other
        components of the file); 0 while everything is written."""
        return self._store.writer.write_failures

    @property
    def can_record(self) -> bool:
        """False while the store is failing: spend is not being made durable."""
        return self._store.writer.healthy

    # -- durability barrier ----------------------------------------------------------

    async def durable(self) -> bool:
        """Wait until every cost booked so far is committed to the database.

        The request path awaits this before returning a response, so a response the
        caller saw has its ledger row even if the process is killed next. Callers
        waiting together share one commit. Never raises: False when the store could
        not write (the rows stay queued and are retried; see ``write_failures``).
        """
        return await self._store.wait_async()

    def wait_durable(self, timeout_s: float | None = None) -> bool:
        """:meth:`durable` for code without an event loop (blocks the thread)."""
        return self._store.wait(timeout_s=timeout_s)

    # -- reservations ----------------------------------------------------------------

    def reserve(self, estimated_cost_usd: float) -> Reservation:
        """Hold ``estimated_cost_usd`` of today's budget for a call about to be made.

        Raises BudgetExceededError (nothing held) when spend + reserved + estimate
        would pass the budget, or, unless ``fail_open``, when the store is failing
        (``error_type="ledger_unwritable"``); InvalidRequestError for a negative or
        non-finite estimate. Thread-safe.
        """
        est = estimated_cost_usd
        if isinstance(est, bool) or not isinstance(est, int | float) \
                or not math.isfinite(est) or est < 0:
            raise InvalidRequestError(f"estimated_cost_usd must be a finite number >= 0; "
                                      f"got {est!r}", error_type="invalid_cost")
        if not self._fail_open and not self._store.writer.healthy:
            raise CostTrackingError(
                f"cost ledger {self.db_path} cannot be written: calls are refused until it "
                f"can (fail closed; CostTracker(fail_open=True) admits them)",
                error_type="ledger_unwritable")
        day = _day(self._clock())
        if day > self._today:
            self._roll_to(day)
        with self._lock:
            committed = self._today_total + self._reserved
            if committed + est > self._budget:
                raise BudgetExceededError(
                    f"daily budget of ${self._budget:.2f} would be exceeded: spent "
                    f"${self._today_total:.4f}, reserved ${self._reserved:.4f}, this call "
                    f"${float(est):.4f}", error_type="budget_exceeded")
            self._reserved += est
            self._holds += 1
            return Reservation(self, float(est), self._today)

    def _end(self, hold: Reservation, actual: float | None) -> None:
        with self._lock:
            if hold.settled:
                return
            hold.settled = True
            hold.actual_cost_usd = actual
            if hold.day == self._today:
                self._holds -= 1
                self._reserved = (max(0.0, self._reserved - hold.estimated_cost_usd)
                                  if self._holds > 0 else 0.0)
            callback, hold._on_end = hold._on_end, None
        if callback is not None:
            try:
                callback(actual)
            except Exception:  # ending a hold never fails the call
                logger.warning("cost tracker: an end callback failed", exc_info=True)

    def reserved(self) -> float:
        """USD held today by reservations of calls in flight."""
        day = _day(self._clock())
        if day > self._today:
            self._roll_to(day)
        return self._reserved

    # -- booking ---------------------------------------------------------------------

    async def record_cost(
        self,
        model_id: str,
        agent_type: str,
        input_tokens: int,
        output_tokens: int,
        cost: float,
        task_id: str,
    ) -> None:
        """Book one call's cost. Instant: the write happens in the background.

        Raises InvalidRequestError (and books nothing) for negative or non-finite input.
        """
        self._validate(model_id, input_tokens, output_tokens, cost)
        self._book(model_id, agent_type, task_id, input_tokens, output_tokens, float(cost),
                   "record_cost", uuid.uuid4().hex)

    def record(self, event: Event) -> None:
        """Listener: book each billed ``AttemptEvent`` (cost or tokens > 0, successful
        or not) exactly once. Never raises."""
        if not isinstance(event, AttemptEvent):
            return
        if event.cost_usd <= 0 and event.input_tokens <= 0 and event.output_tokens <= 0:
            return
        try:
            self._validate(event.model_id, event.input_tokens, event.output_tokens,
                           event.cost_usd)
            if event.start_time_ns:
                # Deterministic: the same attempt delivered twice is one ledger row.
                key = f"{event.model_id}|{event.task_id}|{event.attempt}|" \
                      f"{event.start_time_ns}|{event.response_id}"
                rec_id = hashlib.sha256(key.encode()).hexdigest()[:32]
            else:
                rec_id = uuid.uuid4().hex
            # An attempt whose usage the provider did not report is booked at amm's
            # estimate and says so: source 'attempt:estimated'.
            source = "attempt:estimated" if event.usage_estimated else "attempt"
            self._book(event.model_id, event.agent_type, event.task_id, event.input_tokens,
                       event.output_tokens, float(event.cost_usd), source, rec_id)
        except Exception:  # a listener must never fail the recorder
            logger.warning("could not book the cost of an attempt on %s", event.model_id,
                           exc_info=True)

    @staticmethod
    def _validate(model_id: str, input_tokens: int, output_tokens: int, cost: float) -> None:
        if not isinstance(model_id, str) or not model_id:
            raise InvalidRequestError(f"model_id must be a non-empty string; got {model_id!r}",
                                      error_type="invalid_model_id")
        _check_count("input_tokens", input_tokens)
        _check_count("output_tokens", output_tokens)
        if isinstance(cost, bool) or not isinstance(cost, int | float) \
                or not math.isfinite(cost) or cost < 0:
            raise InvalidRequestError(f"cost must be a finite number >= 0; got {cost!r}",
                                      model_id=model_id, error_type="invalid_cost")

    def _book(self, model_id: str, agent_type: str, task_id: str, input_tokens: int,
              output_tokens: int, cost: float, source: str, rec_id: str) -> None:
        while True:
            now = self._clock()
            day = _day(now)
            with self._lock:
                if day <= self._today:  # a record of an earlier day never moves today back
                    if rec_id in self._seen:
                        return
                    self._seen[rec_id] = None
                    if len(self._seen) > _SEEN_MAX:
                        del self._seen[next(iter(self._seen))]
                    alerts: list[BudgetAlertEvent] = []
                    if day == self._today:
                        self._today_total += cost
                        alerts = self._due_alerts_locked()
                    break
            self._roll_to(day)
        rows: list[AlertRow] = [(day, a.threshold_percent, _ts(now)) for a in alerts]
        self._store.add((rec_id, _ts(now), day, model_id, agent_type or "", task_id or "",
                         input_tokens, output_tokens, cost, source), rows)
        for alert in alerts:
            logger.warning(
                "budget alert: %.1f%% of the daily budget of $%.2f spent ($%.4f)",
                alert.utilization_percent, alert.daily_budget, alert.current_spend,
            )
            self._events.record(alert)

    def _due_alerts_locked(self) -> list[BudgetAlertEvent]:
        util = self._today_total / self._budget * 100.0
        due = []
        for threshold in self._thresholds:
            if util >= threshold and threshold not in self._fired:
                self._fired.add(threshold)
                due.append(BudgetAlertEvent(threshold, util, self._today_total, self._budget))
        return due

    # -- budget (instant, from memory) ----------------------------------------------

    @property
    def daily_budget(self) -> float:
        """The daily budget in USD."""
        return self._budget

    def current_spend(self) -> float:
        """USD booked today (UTC) by this process, plus what the file held at start."""
        day = _day(self._clock())
        if day > self._today:
            self._roll_to(day)
        return self._today_total

    def would_exceed(self, estimated_cost: float) -> bool:
        """Would spending ``estimated_cost`` more, on top of today's spend and every
        held reservation, pass the budget? True while the store is failing (fail
        closed) unless ``fail_open``."""
        if not self._fail_open and not self._store.writer.healthy:
            return True
        return self.current_spend() + self.reserved() + estimated_cost > self._budget

    async def check_budget(self) -> BudgetStatus:
        """Today's budget utilisation (exact and instant: from memory)."""
        spend = self.current_spend()
        return BudgetStatus(
            daily_budget=self._budget,
            current_spend=spend,
            utilization_percent=spend / self._budget * 100.0,
            is_over_budget=spend >= self._budget,
            remaining_budget=max(0.0, self._budget - spend),
        )

    # -- reports (from the database, after writing what is pending) -----------------

    async def get_daily_cost(self, date: datetime | date | None = None) -> float:
        """Total USD of one UTC day (today when None), from the ledger."""
        day = _day(_as_utc(date, end=False) if date is not None else self._clock())
        rows = await asyncio.to_thread(
            self._store.query,
            f"SELECT COALESCE(SUM(cost_usd), 0) FROM {LEDGER_TABLE} WHERE day = ?", (day,))
        return float(rows[0][0])

    async def get_cost_by_model(self, start_date: datetime | date,
                                end_date: datetime | date) -> dict[str, float]:
        """USD per model for ``start_date <= ts <= end_date`` (a date covers its whole day)."""
        return await self._cost_by("model_id", start_date, end_date)

    async def get_cost_by_agent(self, start_date: datetime | date,
                                end_date: datetime | date) -> dict[str, float]:
        """USD per agent type for ``start_date <= ts <= end_date``."""
        return await self._cost_by("agent_type", start_date, end_date)

    async def _cost_by(self, column: str, start: datetime | date,
                       end: datetime | date) -> dict[str, float]:
        lo, hi = _as_utc(start, end=False), _as_utc(end, end=True)
        if lo > hi:
            raise InvalidRequestError(f"start_date {lo.isoformat()} is after end_date "
                                      f"{hi.isoformat()}", error_type="invalid_date_range")
        rows = await asyncio.to_thread(
            self._store.query,
            f"SELECT {column}, SUM(cost_usd) FROM {LEDGER_TABLE} WHERE ts >= ? AND ts <= ? "
            f"GROUP BY {column} ORDER BY {column}", (_ts(lo), _ts(hi)))
        return {str(k): float(v) for k, v in rows}

    # -- writing -------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every pending record now; returns how many were written.

        Raises ``sqlite3.Error`` when the database refuses; the records stay pending.
        """
        return self._store.flush()

    def pending(self) -> int:
        """How many booked records are not written yet."""
        return self._store.pending()

    def close(self) -> bool:
        """Flush everything and stop the writer. Idempotent; never raises: False when
        records could not be written (logged once). A record booked later is written
        at once."""
        return self._store.close()

    def __enter__(self) -> CostTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> CostTracker:
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.close()

    # -- days ----------------------------------------------------------------------

    def _load_day(self, day: str) -> tuple[float, set[float]]:
        """The day's total and fired alerts in the file (after writing what is pending)."""
        total = self._store.query(
            f"SELECT COALESCE(SUM(cost_usd), 0) FROM {LEDGER_TABLE} WHERE day = ?", (day,))
        fired = self._store.query(f"SELECT threshold FROM {ALERTS_TABLE} WHERE day = ?", (day,))
        return float(total[0][0]), {float(t) for (t,) in fired}

    def _roll_to(self, day: str) -> None:
        """A new UTC day: its running total starts from the file. Records of the old day
        booked meanwhile go to the old day; none of the new day can be booked yet."""
        with self._roll_lock:
            if day <= self._today:
                return
            total, fired = self._load_day(day)
            with self._lock:
                self._today, self._today_total, self._fired = day, total, fired
                self._reserved = 0.0  # yesterday's holds do not count against today
                self._holds = 0

    def __repr__(self) -> str:
        return (f"CostTracker({str(self.db_path)!r}, day={self._today}, "
                f"spend=${self._today_total:.4f} of ${self._budget:.2f}, "
                f"reserved=${self._reserved:.4f}, pending={self.pending()})")
