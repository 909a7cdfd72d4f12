"""Budget reservations: concurrent calls hold their estimated cost, so one process
never overshoots its daily budget by more than the estimation error in flight."""

from __future__ import annotations

import asyncio
import random
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from amm.cost_tracker import CostTracker, Reservation
from amm.errors import BudgetExceededError, InvalidRequestError
from telemetry.events import AttemptEvent

BUDGET = 0.05
ESTIMATE = 0.002


async def run_calls(tracker: CostTracker, concurrency: int, *, overrun: float = 0.0,
                    reserve: bool = True, seed: int = 1) -> int:
    """``concurrency`` workers make calls until the budget refuses; each call's cost
    is booked by the ledger's listener, as the recorder does; returns calls made."""
    rng = random.Random(seed)
    made = 0
    serial = iter(range(1, 1_000_000))

    async def worker() -> None:
        nonlocal made
        for _ in range(1000):
            hold: Reservation | None = None
            if reserve:
                try:
                    hold = tracker.reserve(ESTIMATE)
                except BudgetExceededError:
                    return
            elif tracker.current_spend() >= tracker.daily_budget:  # the old check
                return
            await asyncio.sleep(rng.uniform(0, 0.002))  # the provider call
            actual = ESTIMATE + overrun if overrun else rng.uniform(ESTIMATE / 4, ESTIMATE)
            n = next(serial)
            await asyncio.to_thread(tracker.record, AttemptEvent(
                "m", "openai", "impl", f"t{n}", 1, 1.0, True, 10, 10, actual,
                start_time_ns=n))
            if hold is not None:
                hold.settle(actual)
            made += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return made


@pytest.mark.parametrize("concurrency", [1, 8, 32])
async def test_spend_stays_within_the_budget_at_any_concurrency(
    tmp_path: Path, concurrency: int
) -> None:
    with CostTracker(tmp_path / "amm.db", daily_budget=BUDGET) as tracker:
        made = await run_calls(tracker, concurrency)
        assert made >= BUDGET / ESTIMATE  # the budget was used, not refused early
        assert tracker.current_spend() <= BUDGET
        assert tracker.reserved() == pytest.approx(0.0, abs=1e-12)


async def test_overshoot_is_bounded_by_the_estimation_error_in_flight(tmp_path: Path) -> None:
    overrun = 0.0005  # every call costs more than estimated
    with CostTracker(tmp_path / "amm.db", daily_budget=BUDGET) as tracker:
        await run_calls(tracker, 32, overrun=overrun)
        assert BUDGET < tracker.current_spend() <= BUDGET + 32 * overrun


async def test_without_reservations_the_same_load_overshoots(tmp_path: Path) -> None:
    # The audit's finding, reproduced: checking spend before a call and booking after
    # lets every call in flight through.
    with CostTracker(tmp_path / "amm.db", daily_budget=BUDGET) as tracker:
        await run_calls(tracker, 32, reserve=False)
        assert tracker.current_spend() > BUDGET * 1.1


def test_settle_and_release_are_idempotent_and_thread_safe(tmp_path: Path) -> None:
    with CostTracker(tmp_path / "amm.db", daily_budget=1.0) as tracker:
        holds = [tracker.reserve(0.01) for _ in range(50)]
        assert tracker.reserved() == pytest.approx(0.5)
        threads = [threading.Thread(target=h.settle, args=(0.01,)) for h in holds] + \
                  [threading.Thread(target=h.release) for h in holds]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert tracker.reserved() == pytest.approx(0.0, abs=1e-12)
        assert tracker.current_spend() == 0.0  # settling books nothing: the ledger does
        with tracker.reserve(0.3) as hold:
            assert tracker.reserved() == pytest.approx(0.3)
        assert hold.settled and tracker.reserved() == pytest.approx(0.0, abs=1e-12)


def test_a_refused_reservation_holds_nothing_and_says_why(tmp_path: Path) -> None:
    with CostTracker(tmp_path / "amm.db", daily_budget=1.0) as tracker:
        tracker.reserve(0.7)
        with pytest.raises(BudgetExceededError, match="reserved") as info:
            tracker.reserve(0.4)
        assert info.value.error_type == "budget_exceeded"
        assert tracker.reserved() == pytest.approx(0.7)
        assert tracker.would_exceed(0.31) and not tracker.would_exceed(0.29)
        with pytest.raises(InvalidRequestError):
            tracker.reserve(-1.0)


def test_reservations_of_yesterday_do_not_hold_todays_budget(tmp_path: Path) -> None:
    now = [datetime(2025, 3, 10, 23, 59, tzinfo=UTC)]
    with CostTracker(tmp_path / "amm.db", daily_budget=1.0, clock=lambda: now[0]) as tracker:
        late = tracker.reserve(0.9)
        now[0] += timedelta(minutes=2)
        assert tracker.reserved() == 0.0
        tracker.reserve(0.9)
        late.release()  # yesterday's hold: today's stays
        assert tracker.reserved() == pytest.approx(0.9)
