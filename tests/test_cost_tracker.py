"""CostTracker: budget numbers, alerts once per day, durability, flush on close,
exactly-once booking under concurrency and crashes, the listener and bad input."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import textwrap
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from amm.cost_tracker import CostTracker
from amm.errors import ConfigurationError, InvalidRequestError
from telemetry.events import AttemptEvent, BudgetAlertEvent, CacheEvent

REPO = Path(__file__).resolve().parents[1]


class WallClock:
    def __init__(self) -> None:
        self.now = datetime(2025, 3, 10, 9, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class ListSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


@pytest.fixture
def clock() -> WallClock:
    return WallClock()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "amm.db"


def rows(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(
            "SELECT model_id, agent_type, task_id, input_tokens, output_tokens, cost_usd, "
            "source, day FROM amm_cost_ledger ORDER BY ts").fetchall()


def attempt(cost: float, *, tokens: int = 10, start_ns: int = 0, success: bool = True,
            model: str = "m1") -> AttemptEvent:
    return AttemptEvent(model, "openai", "impl", "t1", 1, 12.0, success, tokens, tokens, cost,
                        start_time_ns=start_ns)


async def test_budget_status_reports_spend_utilisation_and_remaining(
    db: Path, clock: WallClock
) -> None:
    with CostTracker(db, daily_budget=10.0, clock=clock) as tracker:
        await tracker.record_cost("m1", "impl", 1000, 500, 2.5, "t1")
        status = await tracker.check_budget()
        assert status.daily_budget == 10.0
        assert status.current_spend == pytest.approx(2.5)
        assert status.utilization_percent == pytest.approx(25.0)
        assert status.remaining_budget == pytest.approx(7.5)
        assert not status.is_over_budget
        assert tracker.would_exceed(7.6) and not tracker.would_exceed(7.4)
        await tracker.record_cost("m1", "impl", 1000, 500, 8.0, "t2")
        status = await tracker.check_budget()
        assert status.is_over_budget and status.remaining_budget == 0.0
        assert status.utilization_percent == pytest.approx(105.0)


async def test_each_alert_threshold_fires_once_per_day(
    db: Path, clock: WallClock, sink: ListSink, caplog: pytest.LogCaptureFixture
) -> None:
    with CostTracker(db, daily_budget=10.0, clock=clock, events=sink) as tracker:
        for cost in (4.0, 1.0, 0.5, 3.0, 2.0, 1.0):
            await tracker.record_cost("m1", "impl", 1, 1, cost, "t")
        alerts = [e for e in sink.events if isinstance(e, BudgetAlertEvent)]
        assert [a.threshold_percent for a in alerts] == [50.0, 80.0, 100.0]
        assert [a.current_spend for a in alerts] == pytest.approx([5.0, 8.5, 10.5])
        assert all(a.daily_budget == 10.0 for a in alerts)
        assert "budget alert" in caplog.text
        clock.now += timedelta(days=1)
        await tracker.record_cost("m1", "impl", 1, 1, 9.0, "t")  # 90 %: crosses 50 and 80
        later = [e.threshold_percent for e in sink.events if isinstance(e, BudgetAlertEvent)]
        assert later[3:] == [50.0, 80.0]


async def test_alerts_already_fired_today_do_not_fire_again_in_a_new_instance(
    db: Path, clock: WallClock, sink: ListSink
) -> None:
    with CostTracker(db, daily_budget=10.0, clock=clock) as first:
        await first.record_cost("m1", "impl", 1, 1, 6.0, "t")
    with CostTracker(db, daily_budget=10.0, clock=clock, events=sink) as second:
        await second.record_cost("m1", "impl", 1, 1, 0.5, "t")
        assert sink.events == []
        await second.record_cost("m1", "impl", 1, 1, 2.0, "t")
        assert [e.threshold_percent for e in sink.events] == [80.0]  # type: ignore[attr-defined]


async def test_a_new_instance_sees_every_flushed_record_and_starts_from_todays_total(
    db: Path, clock: WallClock
) -> None:
    with CostTracker(db, clock=clock) as tracker:
        await tracker.record_cost("m1", "impl", 100, 50, 0.25, "t1")
        await tracker.record_cost("m2", "review", 10, 5, 0.5, "t2")
    reopened = CostTracker(db, clock=clock)
    assert reopened.db_path == db
    try:
        assert reopened.current_spend() == pytest.approx(0.75)
        assert await reopened.get_daily_cost() == pytest.approx(0.75)
        assert await reopened.get_cost_by_model(clock.now - timedelta(hours=1), clock.now) \
            == pytest.approx({"m1": 0.25, "m2": 0.5})
    finally:
        reopened.close()
    assert rows(db) == [("m1", "impl", "t1", 100, 50, 0.25, "record_cost", "2025-03-10"),
                        ("m2", "review", "t2", 10, 5, 0.5, "record_cost", "2025-03-10")]


async def test_close_flushes_what_the_writer_has_not_written(db: Path, clock: WallClock) -> None:
    tracker = CostTracker(db, clock=clock, flush_interval_s=3600)
    await tracker.record_cost("m1", "impl", 1, 1, 0.1, "t")
    assert tracker.pending() == 1
    assert rows(db) == []
    tracker.close()
    tracker.close()  # idempotent
    assert len(rows(db)) == 1


async def test_the_background_writer_flushes_without_being_asked(db: Path) -> None:
    with CostTracker(db, flush_interval_s=0.01) as tracker:
        await tracker.record_cost("m1", "impl", 1, 1, 0.1, "t")
        deadline = time.monotonic() + 5
        while not rows(db) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert len(rows(db)) == 1 and tracker.pending() == 0


async def test_two_hundred_concurrent_records_are_each_booked_exactly_once(
    db: Path, clock: WallClock
) -> None:
    with CostTracker(db, daily_budget=1000.0, clock=clock, batch_size=16,
                     flush_interval_s=0.001) as tracker:
        await asyncio.gather(*(
            tracker.record_cost("m1", "impl", 10, 10, 0.01, f"task-{i}") for i in range(100)))
        threads = [threading.Thread(target=tracker.record, args=(attempt(0.01, start_ns=i + 1),))
                   for i in range(100)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert tracker.current_spend() == pytest.approx(2.0)
        assert await tracker.get_daily_cost() == pytest.approx(2.0)
    assert len(rows(db)) == 200


def test_listener_books_billed_attempts_once_and_ignores_the_rest(
    db: Path, clock: WallClock
) -> None:
    # No event loop here: the listener and the writer work from plain threads.
    with CostTracker(db, clock=clock) as tracker:
        billed = attempt(0.2, start_ns=123)
        tracker.record(billed)
        tracker.record(billed)  # the same attempt delivered twice
        tracker.record(attempt(0.0, tokens=40, success=False, start_ns=124))  # billed tokens
        tracker.record(attempt(0.0, tokens=0, start_ns=125))  # nothing billed
        tracker.record(CacheEvent(hit=True))
        tracker.record(attempt(-1.0, start_ns=126))  # bad: logged, not booked, no raise
        assert tracker.current_spend() == pytest.approx(0.2)
        tracker.flush()
    assert [(r[3], r[5], r[6]) for r in rows(db)] == [(10, 0.2, "attempt"), (40, 0.0, "attempt")]


def test_a_crashed_process_keeps_what_it_flushed_and_nothing_twice(db: Path) -> None:
    script = textwrap.dedent(f"""
        import asyncio, os
        from amm.cost_tracker import CostTracker
        from telemetry.events import AttemptEvent
        t = CostTracker({str(db)!r}, flush_interval_s=3600)
        ev = AttemptEvent("m1", "openai", "impl", "t1", 1, 5.0, True, 1, 1, 0.5, start_time_ns=7)
        t.record(ev)
        t.flush()
        t.record(ev)          # re-delivered after the flush: the same ledger row
        asyncio.run(t.record_cost("m2", "impl", 1, 1, 0.25, "t2"))
        t.flush()
        asyncio.run(t.record_cost("m3", "impl", 1, 1, 9.0, "t3"))  # never flushed
        os._exit(1)           # crash: no close, no atexit
    """)
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 1, proc.stderr
    assert sorted((r[0], r[5]) for r in rows(db)) == [("m1", 0.5), ("m2", 0.25)]
    with CostTracker(db) as again:
        assert again.current_spend() == pytest.approx(0.75)


def test_a_failed_write_keeps_the_batch_and_a_later_flush_writes_it_once(
    db: Path, clock: WallClock
) -> None:
    tracker = CostTracker(db, clock=clock, flush_interval_s=3600, busy_timeout_s=0.05)
    try:
        tracker.record(attempt(0.3, start_ns=1))
        blocker = sqlite3.connect(db, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        with pytest.raises(sqlite3.OperationalError, match="locked"):
            tracker.flush()
        assert tracker.pending() == 1
        blocker.execute("ROLLBACK")
        blocker.close()
        assert tracker.flush() == 1
        assert tracker.flush() == 0
    finally:
        tracker.close()
    assert len(rows(db)) == 1


async def test_costs_group_by_model_and_agent_over_a_date_range(
    db: Path, clock: WallClock
) -> None:
    with CostTracker(db, clock=clock) as tracker:
        await tracker.record_cost("m1", "impl", 1, 1, 1.0, "t")
        clock.now += timedelta(days=1)
        await tracker.record_cost("m1", "review", 1, 1, 2.0, "t")
        await tracker.record_cost("m2", "review", 1, 1, 4.0, "t")
        assert tracker.current_spend() == pytest.approx(6.0)  # the new UTC day only
        assert await tracker.get_daily_cost(date(2025, 3, 10)) == pytest.approx(1.0)
        assert await tracker.get_daily_cost(datetime(2025, 3, 11, 23, 0)) == pytest.approx(6.0)
        both = (date(2025, 3, 10), date(2025, 3, 11))
        assert await tracker.get_cost_by_model(*both) == pytest.approx({"m1": 3.0, "m2": 4.0})
        assert await tracker.get_cost_by_agent(*both) == pytest.approx(
            {"impl": 1.0, "review": 6.0})
        assert await tracker.get_cost_by_model(date(2025, 3, 11), date(2025, 3, 11)) \
            == pytest.approx({"m1": 2.0, "m2": 4.0})
        with pytest.raises(InvalidRequestError, match="after end_date"):
            await tracker.get_cost_by_model(date(2025, 3, 12), date(2025, 3, 11))


async def test_the_running_total_restarts_at_utc_midnight(db: Path, clock: WallClock) -> None:
    clock.now = datetime(2025, 3, 10, 23, 59, 59, tzinfo=UTC)
    with CostTracker(db, clock=clock) as tracker:
        await tracker.record_cost("m1", "impl", 1, 1, 5.0, "t")
        clock.now += timedelta(seconds=2)
        assert tracker.current_spend() == 0.0
        assert (await tracker.check_budget()).utilization_percent == 0.0


async def test_bad_input_raises_invalid_request_and_books_nothing(
    db: Path, clock: WallClock
) -> None:
    with CostTracker(db, clock=clock) as tracker:
        for args, field in [
            (("m1", "impl", -1, 0, 0.1, "t"), "input_tokens"),
            (("m1", "impl", 0, -5, 0.1, "t"), "output_tokens"),
            (("m1", "impl", 1, 1, -0.01, "t"), "cost"),
            (("m1", "impl", 1, 1, float("nan"), "t"), "cost"),
            (("", "impl", 1, 1, 0.1, "t"), "model_id"),
        ]:
            with pytest.raises(InvalidRequestError, match=field):
                await tracker.record_cost(*args)  # type: ignore[arg-type]
        assert tracker.pending() == 0 and tracker.current_spend() == 0.0
    assert rows(db) == []


def test_bad_settings_raise_configuration_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="daily_budget"):
        CostTracker(tmp_path / "a.db", daily_budget=0)
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(ConfigurationError, match="cannot open"):
        CostTracker(tmp_path / "file" / "a.db")


async def test_two_trackers_on_two_files_do_not_see_each_others_records(
    tmp_path: Path, clock: WallClock
) -> None:
    with CostTracker(tmp_path / "a.db", clock=clock) as a, \
            CostTracker(tmp_path / "b.db", clock=clock) as b:
        await a.record_cost("m1", "impl", 1, 1, 1.0, "t")
        assert b.current_spend() == 0.0 and await b.get_daily_cost() == 0.0


async def test_a_record_after_close_is_written_at_once(db: Path, clock: WallClock) -> None:
    tracker = CostTracker(db, clock=clock)
    tracker.close()
    await tracker.record_cost("m1", "impl", 1, 1, 0.1, "t")
    assert len(rows(db)) == 1


def test_the_store_records_the_budget_in_force_for_its_readers(tmp_path):
    from analytics.source import SQLiteSource

    with CostTracker(tmp_path / "ledger.db", daily_budget=5.0):
        pass
    assert SQLiteSource(tmp_path / "ledger.db").daily_budget() == 5.0
    with CostTracker(tmp_path / "ledger.db", daily_budget=7.5):
        pass
    assert SQLiteSource(tmp_path / "ledger.db").daily_budget() == 7.5
