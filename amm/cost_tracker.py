"""The cost ledger: every billed token in SQLite exactly once, and the day's spend in memory.

Booking a cost (:meth:`CostTracker.record_cost`, or the listener :meth:`CostTracker.record`
for ``AttemptEvent``) appends to an in-memory batch and adds to the day's running
total at once, so :meth:`check_budget`, :meth:`current_spend` and :meth:`would_exceed`
are exact and instant. A small writer thread (it works with or without an event loop)
writes batches to the table ``amm_cost_ledger`` of a WAL SQLite file every
``flush_interval_s`` or when ``batch_size`` records wait. Each record carries a
client-made unique id and is written with ``INSERT OR IGNORE``, so a retried batch
never books anything twice; a failed write keeps the batch for the next try.
:meth:`flush` writes everything pending now; :meth:`close` flushes and stops, so a
clean shutdown loses nothing, and a crash loses at most what was not flushed yet.

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
from amm.errors import ConfigurationError, InvalidRequestError
from amm.models import BudgetStatus, utcnow
from telemetry.events import NULL_SINK, AttemptEvent, BudgetAlertEvent, Event, EventSink

__all__ = ["LEDGER_TABLE", "CostTracker"]

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
        self._store = LedgerStore(Path(db_path), flush_interval_s=flush_interval_s,
                                  batch_size=batch_size, busy_timeout_s=busy_timeout_s)
        # _lock guards the day's running state; _roll_lock serialises day changes.
        self._lock = threading.Lock()
        self._roll_lock = threading.Lock()
        self._seen: dict[str, None] = {}
        self._today = _day(self._clock())
        self._today_total, self._fired = self._load_day(self._today)
        self._store.set_budget(self._today, self._budget)

    @property
    def db_path(self) -> Path:
        """The SQLite file this component writes."""
        return self._store.path

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
            self._book(event.model_id, event.agent_type, event.task_id, event.input_tokens,
                       event.output_tokens, float(event.cost_usd), "attempt", rec_id)
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
        """Would spending ``estimated_cost`` more take today's spend over the budget?"""
        return self.current_spend() + estimated_cost > self._budget

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

    def close(self) -> None:
        """Flush everything and stop the writer. Idempotent; a record booked later is
        written at once."""
        self._store.close()

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

    def __repr__(self) -> str:
        return (f"CostTracker({str(self.db_path)!r}, day={self._today}, "
                f"spend=${self._today_total:.4f} of ${self._budget:.2f}, "
                f"pending={self.pending()})")
