"""The shared store layer: one writer per file, group commit, private files,
retention, and a store that cannot be written (locked, read-only, full)."""

from __future__ import annotations

import asyncio
import logging
import os
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from amm._store import open_store
from amm.cache_manager import CacheManager
from amm.cost_tracker import CostTracker
from amm.errors import BudgetExceededError, ConfigurationError
from amm.models import ModelResponse, TokenUsage
from amm.performance_monitor import PerformanceMonitor
from telemetry.store_schema import connect
from telemetry.store_writer import StoreWriter

PERF = ("INSERT INTO amm_performance (ts, model_id, agent_type, task_id, latency_ms, success) "
        "VALUES (?, ?, '', '', 1.0, 1)")


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


# -- one writer ----------------------------------------------------------------------


def test_the_ledger_the_monitor_and_the_cache_share_one_writer_thread(tmp_path: Path) -> None:
    db = tmp_path / "amm.db"
    before = set(threading.enumerate())  # other tests' writers may still be closing
    tracker = CostTracker(db)
    monitor = PerformanceMonitor(db)
    cache = CacheManager(db)
    try:
        assert tracker._store.writer is monitor._store is cache._store
        asyncio.run(tracker.record_cost("m", "a", 1, 1, 0.1, "t"))
        asyncio.run(monitor.record_performance("m", "a", 5.0, True, 0.9, "t"))
        asyncio.run(cache.set("k", ModelResponse("x", "m", TokenUsage(1, 1), 1.0, 0.0)))
        writers = [t for t in threading.enumerate()
                   if t.name.startswith("amm-store") and t not in before]
        assert [t.name for t in writers] == ["amm-store-writer"]
    finally:
        tracker.close()
        monitor.close()
        cache.close()
    assert (count(db, "amm_cost_ledger"), count(db, "amm_performance"), count(db, "amm_cache")) \
        == (1, 1, 1)
    assert not any(t.is_alive() for t in writers)


async def test_concurrent_waiters_share_one_commit(tmp_path: Path) -> None:
    writer = StoreWriter.open(tmp_path / "amm.db", flush_interval_s=3600)
    try:
        commits = 0
        original = writer._commit_locked

        def counting() -> int:
            nonlocal commits
            written = original()
            commits += bool(written)
            return written

        writer._commit_locked = counting  # type: ignore[method-assign]

        async def one(i: int) -> bool:
            ticket = writer.submit(PERF, (time.time(), f"m{i}"))
            return await writer.wait_async(ticket)

        assert all(await asyncio.gather(*(one(i) for i in range(50))))
        assert count(tmp_path / "amm.db", "amm_performance") == 50
        assert 1 <= commits < 50  # grouped: far fewer commits than waiters
    finally:
        writer.release()


# -- permissions ---------------------------------------------------------------------


def test_the_data_directory_is_0700_and_the_files_0600(tmp_path: Path) -> None:
    data = tmp_path / "data" / "nested"
    with CostTracker(data / "amm.db") as tracker:
        asyncio.run(tracker.record_cost("m", "a", 1, 1, 0.1, "t"))
        tracker.flush()
        assert mode(data) == 0o700 and mode(data.parent) == 0o700
        for name in ("amm.db", "amm.db-wal", "amm.db-shm"):
            assert mode(data / name) == 0o600, name


def test_a_stricter_umask_is_respected(tmp_path: Path) -> None:
    old = os.umask(0o277)
    try:
        db = tmp_path / "strict" / "amm.db"
        conn = connect(db)
        conn.close()
    finally:
        os.umask(old)
    assert mode(db.parent) == 0o500 and mode(db) == 0o400


def test_an_existing_world_readable_store_is_made_private(tmp_path: Path) -> None:
    db = tmp_path / "amm.db"
    sqlite3.connect(db).close()
    db.chmod(0o644)
    connect(db).close()
    assert mode(db) == 0o600
    assert mode(tmp_path) == stat.S_IMODE(tmp_path.stat().st_mode)  # not ours: untouched


# -- retention -----------------------------------------------------------------------


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


def test_retention_deletes_old_spans_and_performance_rows_and_keeps_the_ledger(
    tmp_path: Path,
) -> None:
    db = tmp_path / "amm.db"
    now = time.time()
    writer = StoreWriter.open(db, retention_days=30)
    try:
        writer.retention.chunk = 7  # many small transactions
        old, new = now - 40 * 86400, now - 10 * 86400
        for i in range(25):
            for ts in (old, new):
                writer.submit("INSERT INTO otel_traces (Timestamp, TraceId, SpanId, SpanName) "
                              "VALUES (?, ?, ?, 'chat m')", (_iso(ts), f"t{ts}", f"s{i}"))
                writer.submit(PERF, (ts, "m"))
                writer.submit("INSERT INTO amm_cost_ledger VALUES (?,?,?,?,?,?,?,?,?,?)",
                              (f"{ts}-{i}", _iso(ts), "d", "m", "a", "t", 1, 1, 0.1, "attempt"))
        writer.flush()
        assert writer.apply_retention() == 50
        assert count(db, "otel_traces") == 25 and count(db, "amm_performance") == 25
        assert count(db, "amm_cost_ledger") == 50  # kept forever
    finally:
        writer.release()


def test_retention_runs_in_the_background_between_batches(tmp_path: Path) -> None:
    db = tmp_path / "amm.db"
    writer = StoreWriter.open(db, retention_days=1, flush_interval_s=0.02)
    try:
        writer.retention.chunk = 3
        writer.retention.first_run_s = 0  # set before the first write starts the thread
        writer.submit_many(PERF, [(time.time() - 5 * 86400, f"m{i}") for i in range(20)])
        writer.submit(PERF, (time.time(), "fresh"))
        writer.flush()
        deadline = time.monotonic() + 5
        while count(db, "amm_performance") > 1 and time.monotonic() < deadline:
            writer.submit(PERF, (time.time(), "fresh"))  # writers keep being served
            assert writer.wait(timeout_s=2)
            time.sleep(0.01)
        with sqlite3.connect(db) as conn:
            assert {m for (m,) in conn.execute("SELECT model_id FROM amm_performance")} \
                == {"fresh"}
    finally:
        writer.release()


# -- a store that cannot be written --------------------------------------------------


@pytest.fixture
def locked(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    db = tmp_path / "amm.db"
    connect(db).close()
    yield db, sqlite3.connect(db, isolation_level=None, check_same_thread=False)


def test_a_locked_store_warns_once_counts_and_close_does_not_raise(
    locked: tuple[Path, sqlite3.Connection], caplog: pytest.LogCaptureFixture,
) -> None:
    db, blocker = locked
    monitor = PerformanceMonitor(db)
    cache = CacheManager(db)
    writer = monitor._store
    writer._busy_timeout_s = 0.01
    writer._conn.execute("PRAGMA busy_timeout=10")
    blocker.execute("BEGIN EXCLUSIVE")
    caplog.set_level(logging.DEBUG, logger="amm")
    for i in range(30):
        asyncio.run(monitor.record_performance("m", "a", 1.0, True, None, f"t{i}"))
        asyncio.run(cache.set(f"k{i}", ModelResponse("x", "m", TokenUsage(1, 1), 1.0, 0.0)))
        writer.flush_quietly()
    assert writer.write_failures >= 30 and monitor.write_failures == writer.write_failures
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "cannot be written" in warnings[0].getMessage()
    assert "Free disk space" in warnings[0].getMessage()
    assert not any(r.exc_info for r in caplog.records)  # no traceback spam
    assert writer.wait(timeout_s=1) is False  # a waiter is answered at once
    cache.close()
    blocker.execute("ROLLBACK")  # the lock goes: everything queued is written
    monitor.close()
    assert count(db, "amm_performance") == 30 and count(db, "amm_cache") == 30


def test_close_on_a_store_still_locked_reports_instead_of_raising(
    locked: tuple[Path, sqlite3.Connection], caplog: pytest.LogCaptureFixture,
) -> None:
    db, blocker = locked
    tracker = CostTracker(db, busy_timeout_s=0.01, flush_interval_s=3600)
    asyncio.run(tracker.record_cost("m", "a", 1, 1, 0.1, "t"))
    blocker.execute("BEGIN EXCLUSIVE")
    assert tracker.close() is False  # no exception
    assert "could not be written at close" in caplog.text
    blocker.execute("ROLLBACK")


def test_the_budget_fails_closed_while_the_ledger_cannot_be_written(
    locked: tuple[Path, sqlite3.Connection],
) -> None:
    db, blocker = locked
    with CostTracker(db, daily_budget=10.0, busy_timeout_s=0.01, flush_interval_s=3600) as t, \
            CostTracker(db.with_name("open.db"), daily_budget=10.0, fail_open=True) as lenient:
        t.reserve(0.1).release()
        asyncio.run(t.record_cost("m", "a", 1, 1, 0.1, "t"))
        blocker.execute("BEGIN EXCLUSIVE")
        assert asyncio.run(t.durable()) is False  # the request is still answered
        assert t.can_record is False and t.write_failures >= 1
        with pytest.raises(BudgetExceededError) as refused:
            t.reserve(0.1)
        assert refused.value.error_type == "ledger_unwritable"
        assert t.would_exceed(0.0)
        lenient._store.writer._failing = True  # the same state, opted to fail open
        lenient.reserve(0.1).release()
        lenient._store.writer._failing = False
        blocker.execute("ROLLBACK")
        t.flush()  # the store recovers: calls are admitted again
        assert t.can_record and t.reserve(0.1) is not None


def test_starting_on_an_unwritable_directory_raises_configuration_error(
    tmp_path: Path,
) -> None:
    (tmp_path / "file").write_text("a file where the data directory should be")
    with pytest.raises(ConfigurationError, match="cannot open") as info:
        open_store(tmp_path / "file" / "amm.db")
    assert info.value.path == str(tmp_path / "file" / "amm.db")
    assert "file" in str(info.value)


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    mnt = tmp_path / "tiny"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=200k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_full_disk_keeps_requests_served_and_warns_once(
    tiny_fs: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    db = tiny_fs / "data" / "amm.db"
    monitor = PerformanceMonitor(db)
    writer = monitor._store
    big = "x" * 4000
    for i in range(200):  # ~800 KB into a 200 KB filesystem
        asyncio.run(monitor.record_performance(big + str(i), "a", 1.0, True, None, "t"))
        writer.flush_quietly()
    assert writer.write_failures > 0
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and not any(r.exc_info for r in caplog.records)
    assert monitor.snapshot(big + "199") is not None  # in-memory stats still learn
    monitor.close()  # never raises


def test_a_read_only_filesystem_raises_configuration_error_at_start(tiny_fs: Path) -> None:
    if subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot remount read-only")
    with pytest.raises(ConfigurationError, match="cannot open"):
        open_store(tiny_fs / "amm.db")


async def test_durable_commits_the_booked_rows_at_once_and_in_sync_code_too(
    tmp_path: Path,
) -> None:
    db = tmp_path / "amm.db"
    with CostTracker(db, flush_interval_s=3600) as tracker:  # no timed flush would come
        assert await tracker.durable() is True  # nothing booked: returns at once
        await tracker.record_cost("m", "a", 1, 1, 0.1, "t1")
        assert count(db, "amm_cost_ledger") == 0
        assert await tracker.durable() is True
        assert count(db, "amm_cost_ledger") == 1 and tracker.pending() == 0
        await tracker.record_cost("m", "a", 1, 1, 0.1, "t2")
        assert await asyncio.to_thread(tracker.wait_durable, 5.0) is True
        assert count(db, "amm_cost_ledger") == 2


def test_a_bad_record_is_left_out_and_never_blocks_the_rest(
    tmp_path: Path, caplog: pytest.LogCaptureFixture,
) -> None:
    db = tmp_path / "amm.db"
    writer = StoreWriter.open(db, flush_interval_s=3600)
    try:
        writer.submit(PERF, (time.time(), "good-1"))
        writer.submit(PERF, (time.time(), None))  # NOT NULL model_id: a bug upstream
        writer.submit(PERF, (time.time(), "good-2"))
        assert writer.flush() == 3
        assert writer.pending() == 0 and writer.write_failures == 0
        assert count(db, "amm_performance") == 2
        assert "rejected and left out" in caplog.text
    finally:
        writer.release()


def test_multi_row_inserts_leave_the_table_executemany_would(tmp_path: Path) -> None:
    # The writer writes consecutive rows of one INSERT as multi-row statements (fewer GIL
    # hand-offs under load); the table must be what executemany leaves, row for row:
    # OR IGNORE keeps the first of two equal keys, OR REPLACE the last, in any batch size.
    from telemetry.store_batch import run_batch

    def table(path: Path, via_executemany: bool, sql: str, rows: list[tuple[object, ...]]
              ) -> list[tuple[object, ...]]:
        conn = sqlite3.connect(path, isolation_level=None)
        conn.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT, f REAL, b BLOB)")
        conn.execute("BEGIN")
        if via_executemany:
            conn.executemany(sql, rows)
        else:
            run_batch(conn, [(sql, r) for r in rows])
        conn.execute("COMMIT")
        out = conn.execute("SELECT k, v, f, b FROM t ORDER BY k").fetchall()
        conn.close()
        return out

    for n in (2, 3, 31, 32, 33, 300, 1000):
        rows = [(i % (n // 2 + 1), f"v{i}", i / 7, bytes([i % 256])) for i in range(n)]
        for verb in ("INSERT OR IGNORE", "INSERT OR REPLACE"):
            sql = f"{verb} INTO t (k, v, f, b) VALUES (?, ?, ?, ?)"
            expected = table(tmp_path / f"e{n}{verb[-3:]}.db", True, sql, rows)
            assert table(tmp_path / f"m{n}{verb[-3:]}.db", False, sql, rows) == expected


def test_a_row_of_the_wrong_width_still_fails_its_batch_as_executemany_did(
        tmp_path: Path) -> None:
    from telemetry.store_batch import run_batch

    conn = sqlite3.connect(tmp_path / "w.db", isolation_level=None)
    conn.execute("CREATE TABLE t (a, b)")
    sql = "INSERT INTO t (a, b) VALUES (?, ?)"
    with pytest.raises(sqlite3.ProgrammingError):
        run_batch(conn, [(sql, (1, 2)), (sql, (3,)), (sql, (4, 5))])
