"""RollingStats: sliding window, percentiles within 5 %, bounded memory, cheap snapshots."""

from __future__ import annotations

import random
import threading
import tracemalloc

import pytest

from telemetry.stats import RollingStats


class Clock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_snapshot_counts_successes_errors_cost_tokens_and_quality():
    clock = Clock()
    stats = RollingStats(clock=clock)
    stats.observe_attempt("m", "review", 100.0, True, cost_usd=0.01, input_tokens=10,
                          output_tokens=5)
    stats.observe_attempt("m", "review", 300.0, False, error_type="RateLimitError")
    stats.observe_quality("m", "review", 0.8)
    stats.observe_quality("m", "review", 0.6)
    snap = stats.snapshot("m", "review")
    assert (snap.count, snap.successes, snap.success_rate) == (2, 1, 0.5)
    assert snap.errors == {"RateLimitError": 1}
    assert snap.mean_latency_ms == 200.0
    assert snap.mean_quality == pytest.approx(0.7) and snap.quality_count == 2
    assert (snap.cost_usd, snap.input_tokens, snap.output_tokens) == (0.01, 10, 5)


def test_agent_none_merges_every_agent_type():
    stats = RollingStats(clock=Clock())
    stats.observe_attempt("m", "review", 100.0, True)
    stats.observe_attempt("m", "planning", 100.0, False)
    merged = stats.snapshot("m")
    assert merged.agent_type is None and merged.count == 2 and merged.success_rate == 0.5
    assert stats.snapshot("m", "review").count == 1
    assert stats.snapshot("other") is None
    assert stats.models() == ["m"]


def test_observations_leave_the_window_as_time_passes():
    clock = Clock()
    stats = RollingStats(window_s=60.0, bucket_s=15.0, clock=clock)
    stats.observe_attempt("m", "a", 10.0, True)
    clock.t += 30
    stats.observe_attempt("m", "a", 10.0, False)
    assert stats.snapshot("m").count == 2
    clock.t += 45  # the first bucket is now out of the 60 s window
    assert stats.snapshot("m").count == 1
    clock.t += 60
    assert stats.snapshot("m") is None
    assert stats.models() == []


def test_observations_older_than_the_window_are_ignored():
    clock = Clock(10_000.0)
    stats = RollingStats(window_s=60.0, bucket_s=15.0, clock=clock)
    stats.observe_attempt("m", "a", 10.0, True, at=clock.t - 3600)
    assert stats.snapshot("m") is None


def test_latency_percentiles_are_within_five_percent():
    rng = random.Random(7)
    stats = RollingStats(clock=Clock())
    values = [rng.lognormvariate(6, 0.8) for _ in range(5000)]
    for v in values:
        stats.observe_attempt("m", "a", v, True)
    ordered = sorted(values)
    snap = stats.snapshot("m")
    for q, got in ((0.50, snap.p50_latency_ms), (0.95, snap.p95_latency_ms),
                   (0.99, snap.p99_latency_ms)):
        exact = ordered[int(q * len(ordered)) - 1]
        assert got == pytest.approx(exact, rel=0.05)


def test_snapshot_is_cached_until_the_key_changes():
    stats = RollingStats(clock=Clock())
    stats.observe_attempt("m", "a", 10.0, True)
    first = stats.snapshot("m")
    assert stats.snapshot("m") is first
    stats.observe_attempt("m", "a", 10.0, True)
    assert stats.snapshot("m").count == 2


def test_memory_stays_bounded_over_100k_observations():
    clock = Clock()
    stats = RollingStats(window_s=900.0, bucket_s=15.0, clock=clock)
    rng = random.Random(1)

    def run(n: int) -> None:
        for i in range(n):
            clock.t += 0.05  # 100k observations span ~83 minutes: the ring wraps 5 times
            stats.observe_attempt(f"m{i % 5}", f"a{i % 3}", rng.uniform(1, 5000), i % 7 != 0,
                                  error_type=f"E{i % 4}", cost_usd=0.001)
            if i % 3 == 0:
                stats.observe_quality(f"m{i % 5}", f"a{i % 3}", 0.5)

    run(30_000)  # the window is full and every key exists
    tracemalloc.start()
    run(35_000)  # the ring has been replaced once: the live structure is traced now
    steady, _ = tracemalloc.get_traced_memory()
    run(35_000)
    current, _ = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # Allocator noise (dict resizes, free lists) is a few tens of KiB; a leak of even
    # 4 bytes per observation would be 140 KiB over these 35,000.
    assert current - steady < 128 * 1024, f"grew by {current - steady} bytes"
    assert max(len(s.slots) for s in stats._series.values()) <= 61


def test_concurrent_observers_lose_nothing():
    stats = RollingStats(clock=Clock())

    def work() -> None:
        for _ in range(2000):
            stats.observe_attempt("m", "a", 5.0, True)
            stats.snapshot("m")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert stats.snapshot("m").count == 8000


def test_bad_window_is_rejected():
    with pytest.raises(ValueError, match="bucket_s"):
        RollingStats(window_s=10.0, bucket_s=15.0)


def test_a_kept_snapshot_always_equals_one_made_afresh():
    """Snapshots are kept per key and read without the lock while the key and the bucket
    tick stand: over 3,000 random steps (attempts, quality scores, time moving within a
    bucket and across the window) each kept snapshot equals one computed afresh."""
    rng = random.Random(5)
    now = [1000.0]
    stats = RollingStats(window_s=60.0, bucket_s=15.0, clock=lambda: now[0])
    keys = [("m1", "review"), ("m1", None), ("m2", "review"), ("m2", "plan"), ("m2", None)]
    for step in range(3_000):
        action = rng.randrange(4)
        model, agent = rng.choice([("m1", "review"), ("m2", "review"), ("m2", "plan")])
        if action == 0:
            stats.observe_attempt(model, agent, rng.uniform(10, 900), rng.random() < 0.9,
                                  cost_usd=0.001)
        elif action == 1:
            stats.observe_quality(model, agent, rng.random())
        elif action == 2:
            now[0] += rng.choice([0.5, 7.0, 15.0, 70.0])
        for agent in ("review", "plan", None):
            assert stats.snapshots(["m1", "m2", "m3"], agent) == [
                stats.snapshot(m, agent) for m in ("m1", "m2", "m3")]
        for key in keys:
            kept = stats.snapshot(*key)
            series = stats._series.get(key)
            if series is not None:
                series.memo = (-1, -1, None)  # forget: compute afresh
            assert kept == stats.snapshot(*key), (step, key)
