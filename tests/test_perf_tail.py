"""The tail-latency work of issue 17: the store's group commit on the loop, the span
store's slices, and the frozen heap. Behaviour only; timings live in ``make bench``."""

from __future__ import annotations

import asyncio
import gc
import sqlite3
import threading
import time
from pathlib import Path

from opentelemetry.sdk.trace.export import SpanExportResult

from benchmarks.gc_pauses import GcPauses
from telemetry.gc_tuning import freeze_warm_heap
from telemetry.store import SpanStoreExporter
from telemetry.store_writer import StoreWriter
from tests.test_telemetry_export import _readable_spans

PERF = ("INSERT INTO amm_performance (ts, model_id, agent_type, task_id, latency_ms, success) "
        "VALUES (?, ?, '', '', 1.0, 1)")


def _rows(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        return int(conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0])


def _commit_threads(writer: StoreWriter) -> list[threading.Thread]:
    threads: list[threading.Thread] = []
    original = writer._commit_locked

    def recording() -> int:
        if writer.pending():  # noted before the commit answers its waiters
            threads.append(threading.current_thread())
        return original()

    writer._commit_locked = recording  # type: ignore[method-assign]
    return threads


async def test_a_loop_waiter_commits_its_few_rows_on_the_loop_thread(tmp_path: Path) -> None:
    writer = StoreWriter.open(tmp_path / "amm.db", flush_interval_s=3600)
    try:
        threads = _commit_threads(writer)
        for i in range(3):
            assert await writer.wait_async(writer.submit(PERF, (time.time(), f"m{i}"))) is True
        assert threads == [threading.current_thread()] * 3
        assert _rows(tmp_path / "amm.db", "amm_performance") == 3
    finally:
        writer.release()


async def test_waiters_of_one_loop_iteration_share_one_commit_on_the_loop(tmp_path: Path) -> None:
    writer = StoreWriter.open(tmp_path / "amm.db", flush_interval_s=3600)
    try:
        threads = _commit_threads(writer)

        async def one(i: int) -> bool:
            return await writer.wait_async(writer.submit(PERF, (time.time(), f"m{i}")))

        assert all(await asyncio.gather(*(one(i) for i in range(20))))
        assert threads == [threading.current_thread()]
    finally:
        writer.release()


async def test_a_long_queue_is_committed_by_the_writer_thread_not_the_loop(tmp_path: Path) -> None:
    writer = StoreWriter.open(tmp_path / "amm.db", flush_interval_s=3600)
    try:
        threads = _commit_threads(writer)
        ticket = 0
        for i in range(200):
            ticket = writer.submit(PERF, (time.time(), f"m{i}"))
        assert await writer.wait_async(ticket) is True
        assert threading.current_thread() not in threads and len(threads) >= 1
        assert _rows(tmp_path / "amm.db", "amm_performance") == 200
    finally:
        writer.release()


def test_the_span_store_commits_a_large_batch_in_slices_and_stores_every_span(
        tmp_path: Path) -> None:
    spans = _readable_spans(20)  # 100 spans
    store = SpanStoreExporter(tmp_path / "s.db")
    try:
        assert store._writer is not None
        threads = _commit_threads(store._writer)
        assert store.export(spans) is SpanExportResult.SUCCESS
        assert len(threads) == -(-len(spans) // 32)  # one commit per slice of 32
    finally:
        store.shutdown()
    assert _rows(tmp_path / "s.db", "otel_traces") == len(spans)


def test_freeze_warm_heap_collects_then_freezes_what_is_alive() -> None:
    try:
        frozen = freeze_warm_heap()
        # Frozen objects that die (another test's thread may free some) leave the count;
        # nothing joins it without another freeze.
        assert frozen > 1000 and 0 < gc.get_freeze_count() <= frozen
        pauses = GcPauses()
        pauses.start()
        gc.collect()
        stats = pauses.stop()
        assert stats["gen2"]["count"] == 1 and stats["gen2"]["max_ms"] >= 0
    finally:
        gc.unfreeze()
