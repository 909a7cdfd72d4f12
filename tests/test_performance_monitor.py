"""PerformanceMonitor: seed figures on known data, degradation semantics, durable warm start,
and a writer killed with SIGKILL between batches."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from amm.errors import InvalidRequestError, PerformanceMonitorError
from amm.performance_monitor import PerformanceMonitor
from telemetry.events import HEALTH_CHECK_AGENT, AttemptEvent, DegradationEvent, QualityEvent

ROOT = Path(__file__).resolve().parent.parent
NOW = 1_760_000_000.0


class Clock:
    def __init__(self, t: float = NOW) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


class Sink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


@pytest.fixture
def clock() -> Clock:
    return Clock()


async def test_get_model_performance_figures_on_known_data(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        for i in range(10):  # latencies 100..1000, two failures, quality 0.5..0.95
            await mon.record_performance("gpt-4-turbo", "implementation", 100.0 * (i + 1),
                                         i not in (3, 7), 0.5 + 0.05 * i, f"t{i}")
        await mon.record_performance("other", "implementation", 5.0, True, 1.0, "x")
        m = await mon.get_model_performance("gpt-4-turbo", window_hours=24)
    assert (m.model_id, m.window_hours) == ("gpt-4-turbo", 24)
    assert (m.total_requests, m.successful_requests, m.failed_requests) == (10, 8, 2)
    assert m.success_rate == 80.0  # percent, as the seed prints it
    assert m.average_latency_ms == 550.0
    assert m.p50_latency_ms == pytest.approx(550.0)
    assert m.p95_latency_ms == pytest.approx(955.0)
    assert m.p99_latency_ms == pytest.approx(991.0)
    assert m.average_quality_score == pytest.approx(0.725)


async def test_get_model_performance_respects_the_window(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        await mon.record_performance("m", "a", 100.0, True, 0.9, "old")
        clock.t += 2 * 3600
        await mon.record_performance("m", "a", 300.0, False, 0.1, "new")
        assert (await mon.get_model_performance("m", window_hours=1)).total_requests == 1
        assert (await mon.get_model_performance("m", window_hours=24)).total_requests == 2
        empty = await mon.get_model_performance("nobody")
    assert (empty.total_requests, empty.success_rate, empty.p95_latency_ms) == (0, 0.0, 0.0)


async def test_bad_input_is_rejected_and_changes_nothing(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        with pytest.raises(InvalidRequestError, match="latency_ms"):
            await mon.record_performance("m", "a", -1.0, True, 0.5, "t")
        with pytest.raises(InvalidRequestError, match="quality_score"):
            await mon.record_performance("m", "a", 1.0, True, 1.5, "t")
        with pytest.raises(InvalidRequestError, match="threshold"):
            await mon.detect_degradation("m", threshold=0)
        assert mon.snapshot("m") is None
        assert (await mon.get_model_performance("m")).total_requests == 0


async def _plant(mon: PerformanceMonitor, clock: Clock, *, base_q: float, recent_q: float,
                 base_lat: float, recent_lat: float, recent_n: int = 20) -> None:
    clock.t = NOW - 2 * 3600  # baseline: the 24 h before the last hour
    for i in range(20):
        await mon.record_performance("m", "a", base_lat, True, base_q, f"b{i}")
        clock.t += 60
    clock.t = NOW - 1800  # recent: the last hour
    for i in range(recent_n):
        await mon.record_performance("m", "a", recent_lat, True, recent_q, f"r{i}")
        clock.t += 10
    clock.t = NOW


async def test_planted_quality_drop_is_detected_and_reported(tmp_path, clock):
    sink = Sink()
    with PerformanceMonitor(tmp_path / "p.db", clock=clock, events=sink) as mon:
        await _plant(mon, clock, base_q=0.9, recent_q=0.6, base_lat=100, recent_lat=100)
        d = await mon.detect_degradation("m", threshold=0.8)
    assert d is not None and d.metric == "quality" and d.model_id == "m"
    assert (d.current_value, d.baseline_value, d.threshold) == (
        pytest.approx(0.6), pytest.approx(0.9), 0.8)
    assert [e.metric for e in sink.events if isinstance(e, DegradationEvent)] == ["quality"]


async def test_planted_latency_rise_is_detected(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        await _plant(mon, clock, base_q=0.9, recent_q=0.9, base_lat=100, recent_lat=200)
        d = await mon.detect_degradation("m", threshold=0.8)
    assert d is not None and d.metric == "p95_latency_ms"
    assert (d.current_value, d.baseline_value) == (200.0, 100.0)


async def test_a_drop_above_the_threshold_ratio_is_not_a_degradation(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        # 0.75 / 0.9 = 0.83 and 100 / 120 = 0.83: both above 0.8
        await _plant(mon, clock, base_q=0.9, recent_q=0.75, base_lat=100, recent_lat=120)
        assert await mon.detect_degradation("m", threshold=0.8) is None
        assert (await mon.detect_degradation("m", threshold=0.9)).metric in (
            "quality", "p95_latency_ms")


async def test_too_few_recent_samples_is_not_a_degradation(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock, min_samples=10) as mon:
        await _plant(mon, clock, base_q=0.9, recent_q=0.1, base_lat=100, recent_lat=900, recent_n=5)
        assert await mon.detect_degradation("m") is None


async def test_listener_events_feed_snapshot_and_table_once(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        attempt = AttemptEvent("m", "openai", "review", "t1", 1, 120.0, True, 10, 20, 0.01)
        mon.record(attempt)
        mon.record(AttemptEvent("m", "openai", "review", "t1", 2, 80.0, False, error_type="E"))
        mon.record(QualityEvent("m", "review", "t1", 0.7, 0.7, 0.7, 0.7))
        mon.record(DegradationEvent("m", "quality", 0.1, 0.9, 0.8))  # ignored
        snap = mon.snapshot("m", "review")
        metrics = await mon.get_model_performance("m")
    assert (snap.count, snap.successes, snap.errors, snap.mean_quality) == (2, 1, {"E": 1}, 0.7)
    assert (snap.cost_usd, snap.input_tokens, snap.output_tokens) == (0.01, 10, 20)
    assert (metrics.total_requests, metrics.success_rate,
            metrics.average_quality_score) == (2, 50.0, 0.7)


async def test_health_check_probes_are_not_counted_as_traffic(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock) as mon:
        mon.record(AttemptEvent("m", "openai", HEALTH_CHECK_AGENT, "health-check", 1, 3.0, True,
                                5, 1, 0.00001))
        assert mon.snapshot("m") is None
        mon.record(AttemptEvent("m", "openai", "review", "t1", 1, 120.0, True, 10, 20, 0.01))
        assert mon.snapshot("m").count == 1
        assert (await mon.get_model_performance("m")).total_requests == 1


async def test_restart_rebuilds_rolling_stats_from_the_table(tmp_path, clock):
    path = tmp_path / "p.db"
    with PerformanceMonitor(path, clock=clock) as first:
        await first.record_performance("m", "a", 100.0, True, 0.8, "t1")
        clock.t -= 3600  # an old row: outside the rolling window on restart
        await first.record_performance("m", "a", 100.0, True, 0.8, "t0")
        clock.t += 3600
    second = PerformanceMonitor(path, clock=clock)
    snap = second.snapshot("m")
    assert (snap.count, snap.mean_quality) == (1, 0.8)
    other = PerformanceMonitor(tmp_path / "other.db", clock=clock)
    assert other.snapshot("m") is None  # two monitors on two files never mix
    second.close()
    second.close()  # idempotent
    other.close()


async def test_background_thread_writes_batches_without_flush(tmp_path, clock):
    with PerformanceMonitor(tmp_path / "p.db", clock=clock, flush_interval_s=0.01) as mon:
        await mon.record_performance("m", "a", 1.0, True, 0.5, "t")
        reader = sqlite3.connect(tmp_path / "p.db")
        for _ in range(500):
            if reader.execute("SELECT COUNT(*) FROM amm_performance").fetchone()[0] == 1:
                break
            await _sleep_briefly()
        assert reader.execute("SELECT COUNT(*) FROM amm_performance").fetchone()[0] == 1


async def _sleep_briefly() -> None:
    import asyncio
    await asyncio.sleep(0.005)


def test_an_unusable_store_raises_performance_monitor_error(tmp_path):
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(PerformanceMonitorError, match=r"dir\.db"):
        PerformanceMonitor(tmp_path / "dir.db")


WRITER = textwrap.dedent("""
    import sys, time
    from opentelemetry.sdk.trace import TracerProvider
    from telemetry.processor import CountingBatchSpanProcessor
    from telemetry.recorder import Recorder
    from telemetry.store import SpanStoreExporter
    from telemetry.events import AttemptEvent
    from amm.performance_monitor import PerformanceMonitor
    from tests.test_telemetry_recorder import failover_request

    path = sys.argv[1]
    monitor = PerformanceMonitor(path, flush_interval_s=3600)
    processor = CountingBatchSpanProcessor(SpanStoreExporter(path), schedule_delay_millis=3600_000)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    rec = Recorder(tracer_provider=tp, listeners=[monitor])
    batch = 0
    while True:
        for _ in range(4):
            failover_request(rec)
        processor.force_flush()
        monitor.flush()
        batch += 1
        print(f"flushed {batch}", flush=True)
        sys.stdin.readline()  # wait between batches: the kill lands here
""")


def test_writer_killed_between_batches_leaves_a_consistent_store(tmp_path):
    path = tmp_path / "crash.db"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(path)], cwd=ROOT, env=env,
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        for expected in (1, 2, 3):
            assert proc.stdout.readline().strip() == f"flushed {expected}"
            if expected < 3:
                proc.stdin.write("\n")
                proc.stdin.flush()
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == -signal.SIGKILL

    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    spans = conn.execute(
        "SELECT COUNT(*), COUNT(DISTINCT TraceId || SpanId) FROM otel_traces").fetchone()
    assert spans == (3 * 4 * 5, 3 * 4 * 5)  # 3 batches x 4 requests x 5 spans, none twice
    traces = conn.execute("SELECT COUNT(DISTINCT TraceId) FROM otel_traces").fetchone()[0]
    assert traces == 12
    rows = conn.execute(
        "SELECT COUNT(*) FROM amm_performance WHERE latency_ms IS NOT NULL").fetchone()
    assert rows[0] == 3 * 4 * 2  # two attempts per request
    conn.close()

    with PerformanceMonitor(path) as restarted:
        ok = restarted.snapshot("claude-3.5-sonnet", "implementation")
        failed = restarted.snapshot("gpt-4-turbo")
    assert (ok.count, ok.successes, ok.mean_quality) == (12, 12, pytest.approx(0.82))
    assert failed.errors == {"ProviderError": 12}
    assert json.loads(json.dumps(failed.errors)) == {"ProviderError": 12}
