"""Degradation: CUSUM change points and the seed's threshold semantics."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest

from analytics.degradation import (
    cusum_change_point,
    degradation_ratio,
    detect_degradations,
    model_timeseries,
)

TOLERANCE = timedelta(hours=3)  # about 45 of the degraded model's attempts


def test_planted_degradation_is_found_within_tolerance_on_every_metric(synthetic_truth,
                                                                        synthetic_data):
    found = detect_degradations(synthetic_data.attempts, threshold=0.8)
    assert {d.model for d in found} == {synthetic_truth.degraded_model}
    assert {d.metric for d in found} == {"success_rate", "p95_latency_ms", "quality"}
    for d in found:
        assert abs(d.change_time - synthetic_truth.degradation_time) <= TOLERANCE, d.describe()
        assert d.ratio < 0.8


def test_threshold_decides_which_changes_are_reported(synthetic_data):
    # Planted: latency x2.5 (ratio ~0.4), success 0.98 -> ~0.7, quality 0.78 -> 0.58.
    strict = detect_degradations(synthetic_data.attempts, threshold=0.5)
    assert [d.metric for d in strict] == ["p95_latency_ms"]


def test_ratio_follows_the_seed_semantics():
    assert degradation_ratio("success_rate", baseline=0.95, current=0.76) == pytest.approx(0.8)
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


def test_cusum_estimates_the_change_index():
    rng = np.random.default_rng(2)
    x = np.r_[rng.normal(0, 1, 400), rng.normal(1.5, 1, 200)]
    change, alarm = cusum_change_point(x, baseline_n=100, shift=1.0)
    assert 390 <= change <= 410 and change <= alarm


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
