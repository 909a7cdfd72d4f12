"""Degradation: likelihood-ratio change points, a rolling reference and the seed's floor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from analytics.degradation import (
    degradation_ratio,
    detect_degradations,
    find_changes,
    model_timeseries,
)
from analytics.validation import simulate_degradation

TOLERANCE = timedelta(hours=3)  # about 45 of the degraded model's attempts


def test_planted_degradation_is_found_within_tolerance_on_every_metric(synthetic_truth,
                                                                        synthetic_data):
    found = detect_degradations(synthetic_data.attempts, threshold=0.8)
    assert {d.model for d in found} == {synthetic_truth.degraded_model}
    assert {d.metric for d in found} == {"error_rate", "p95_latency_ms", "quality"}
    for d in found:
        assert abs(d.change_time - synthetic_truth.degradation_time) <= TOLERANCE, d.describe()
        assert d.ratio < 0.8
        assert d.change_low <= d.change_time <= d.change_high
        assert d.change_time <= d.detected_at


def test_threshold_decides_which_changes_are_reported(synthetic_data):
    # Planted: latency x2.5 (ratio ~0.4), errors 2% -> 30% (ratio ~0.1), quality 0.78 -> 0.58.
    strict = detect_degradations(synthetic_data.attempts, threshold=0.5)
    assert [d.metric for d in strict] == ["error_rate", "p95_latency_ms"]


def test_ratio_follows_the_seed_semantics():
    assert degradation_ratio("error_rate", baseline=0.01, current=0.05) == pytest.approx(0.2)
    assert degradation_ratio("quality", baseline=0.8, current=0.6) == pytest.approx(0.75)
    assert degradation_ratio("p95_latency_ms", baseline=1000, current=2000) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="unknown metric"):
        degradation_ratio("mean_latency", 1, 1)


def _attempts(quality: np.ndarray, start: datetime, model: str = "m") -> pd.DataFrame:
    n = len(quality)
    return pd.DataFrame({
        "time": pd.date_range(start, periods=n, freq="1min", tz=UTC),
        "model": model, "agent_type": "review", "success": True,
        "latency_ms": 1000.0, "quality": quality,
    })


def test_stationary_series_reports_nothing():
    rng = np.random.default_rng(0)
    frame = _attempts(rng.normal(0.8, 0.1, 3000), datetime(2026, 1, 1, tzinfo=UTC))
    assert detect_degradations(frame) == []


def test_step_change_is_reported_with_before_and_after_values():
    rng = np.random.default_rng(1)
    q = np.r_[rng.normal(0.8, 0.05, 1000), rng.normal(0.55, 0.05, 500)]
    start = datetime(2026, 1, 1, tzinfo=UTC)
    [d] = detect_degradations(_attempts(q, start), metrics=["quality"])
    assert abs(d.change_time - (start + timedelta(minutes=1000))) <= timedelta(minutes=5)
    assert d.baseline == pytest.approx(0.8, abs=0.01)
    assert d.current == pytest.approx(0.55, abs=0.01)
    assert d.ratio == pytest.approx(d.current / d.baseline)


def test_the_change_point_is_placed_where_the_shift_starts_with_an_interval():
    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(0, 1, 400), rng.normal(1.5, 1, 200)]
    [ch] = find_changes(x, binary=False)
    assert 395 <= ch.index <= 405 and ch.low <= 400 <= ch.high
    assert ch.index <= ch.detected <= 430


def _latency(log_latency: np.ndarray, start: datetime) -> pd.DataFrame:
    n = len(log_latency)
    return pd.DataFrame({
        "time": pd.date_range(start, periods=n, freq="1min", tz=UTC), "model": "m",
        "agent_type": "review", "success": True, "latency_ms": 1000 * np.exp(log_latency),
        "quality": 0.8})


def test_an_early_change_is_found():
    # The old baseline was the first quarter of the load: a change at request 600 of
    # 4,000 sat inside it and was placed 410 requests late.
    rng = np.random.default_rng(3)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    x = np.r_[rng.normal(0, 0.5, 600), rng.normal(np.log(2), 0.5, 3400)]
    [d] = detect_degradations(_latency(x, start), metrics=["p95_latency_ms"])
    assert abs(d.change_time - (start + timedelta(minutes=600))) <= timedelta(minutes=10)


def test_since_covering_only_degraded_data_still_finds_the_change():
    rng = np.random.default_rng(4)
    start = datetime(2026, 1, 1, tzinfo=UTC)
    x = np.r_[rng.normal(0, 0.5, 2000), rng.normal(np.log(2), 0.5, 1000)]
    since = start + timedelta(minutes=1990)  # the data before since are the reference
    [d] = detect_degradations(_latency(x, start), metrics=["p95_latency_ms"], since=since)
    assert d.change_time >= since
    assert detect_degradations(_latency(x, start), metrics=["p95_latency_ms"],
                               since=start + timedelta(minutes=2500)) == []


def test_an_error_rise_from_1_to_5_percent_is_reported():
    rng = np.random.default_rng(5)
    n, at = 4000, 2000
    start = datetime(2026, 1, 1, tzinfo=UTC)
    frame = _latency(rng.normal(0, 0.3, n), start).assign(
        success=rng.random(n) >= np.where(np.arange(n) < at, 0.01, 0.05))
    [d] = detect_degradations(frame, metrics=["error_rate"])
    assert abs(d.change_time - (start + timedelta(minutes=at))) <= timedelta(minutes=150)
    assert d.ratio < 0.5
    # Over many series, re-run every 100 requests: found within 1,000 requests.
    cell = simulate_degradation("errors-1:5%", runs=60, change_at=2000, seed=6)
    assert cell.found >= 0.9


@pytest.mark.parametrize("scenario", ["latency-0.8", "latency-0.5", "errors-1", "quality"])
def test_stable_series_rerun_every_100_requests_raise_no_false_reports(scenario):
    cell = simulate_degradation(scenario, runs=40, length=4000, seed=7)
    assert cell.false_reports_per_10k <= 1.0


def test_an_early_false_alarm_cannot_take_credit_for_a_later_step():
    cell = simulate_degradation("latency-0.5:1.5x", runs=60, change_at=2500, seed=8)
    assert cell.found >= 0.95 and cell.median_location_error <= 20


def test_by_agent_reports_each_agent_type(synthetic_data):
    found = detect_degradations(synthetic_data.attempts, by_agent=True, metrics=["p95_latency_ms"])
    assert {d.agent_type for d in found} >= {"planning", "research", "review"}


def test_bad_threshold_is_rejected():
    with pytest.raises(ValueError, match="threshold"):
        detect_degradations(pd.DataFrame(), threshold=1.5)


def test_timeseries_bins_count_every_attempt(synthetic_data):
    series = model_timeseries(synthetic_data.attempts, freq="6h")
    assert series["attempts"].sum() == len(synthetic_data.attempts)
    assert set(series.columns) == {"time", "model", "attempts", "error_rate", "p95_latency_ms",
                                   "quality"}
