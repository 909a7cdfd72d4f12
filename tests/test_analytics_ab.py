"""A/B statistics against known answers: planted effects, no effect under peeking."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats as sps

from analytics import stats
from analytics.stats import (
    bootstrap_diff,
    msprt,
    proportion_ci,
    sample_size_per_arm,
    two_proportion_test,
    welch_test,
)

DAYS, PER_DAY, SD = 14, 40, 0.12


def _daily(rng, effect, sims):
    a = rng.normal(0.8, SD, size=(sims, DAYS, PER_DAY))
    b = rng.normal(0.8 + effect, SD, size=(sims, DAYS, PER_DAY))
    return a, b


def test_msprt_false_positive_rate_under_daily_peeking_stays_at_alpha():
    rng = np.random.default_rng(11)
    a, b = _daily(rng, 0.0, 300)
    rejected = [msprt(list(a[i]), list(b[i]), tau=0.03).reject for i in range(300)]
    assert np.mean(rejected) <= 0.06


def test_naive_daily_t_test_would_inflate_false_positives():
    # The contrast that motivates the mSPRT: same data, stop at the first p < 0.05.
    rng = np.random.default_rng(11)
    a, b = _daily(rng, 0.0, 300)
    hits = 0
    for i in range(300):
        for day in range(1, DAYS + 1):
            if welch_test(a[i, :day].ravel(), b[i, :day].ravel()).p_value < 0.05:
                hits += 1
                break
    assert hits / 300 > 0.10


def test_msprt_finds_a_planted_effect_with_the_right_sign_and_covers_it():
    rng = np.random.default_rng(12)
    a, b = _daily(rng, 0.05, 100)
    results = [msprt(list(a[i]), list(b[i]), tau=0.03) for i in range(100)]
    assert np.mean([r.reject and r.diff.estimate > 0 for r in results]) >= 0.9
    assert np.mean([r.diff.covers(0.05) for r in results]) >= 0.93


def test_welch_interval_covers_the_true_difference_95_percent_of_the_time():
    rng = np.random.default_rng(13)
    covered = [welch_test(rng.normal(0, 1, 50), rng.normal(0.3, 2, 80)).diff.covers(0.3)
               for _ in range(600)]
    assert 0.93 <= np.mean(covered) <= 0.97


def test_welch_matches_scipy_and_reports_cohens_d():
    rng = np.random.default_rng(14)
    a, b = rng.normal(0, 1, 40), rng.normal(0.5, 1, 60)
    res = welch_test(a, b)
    assert res.p_value == pytest.approx(sps.ttest_ind(b, a, equal_var=False).pvalue)
    pooled = np.sqrt((39 * a.var(ddof=1) + 59 * b.var(ddof=1)) / 98)
    assert res.effect_size == pytest.approx((b.mean() - a.mean()) / pooled)


def test_two_proportion_p_value_and_interval_agree():
    res = two_proportion_test(45, 100, 60, 100)
    assert res.diff.estimate == pytest.approx(0.15)
    assert res.p_value == pytest.approx(0.0317, abs=5e-4)  # unpooled, like the interval
    rng = np.random.default_rng(3)
    for _ in range(300):
        na, nb = rng.integers(20, 400, 2)
        sa, sb = rng.binomial(na, 0.5), rng.binomial(nb, 0.58)
        r = two_proportion_test(int(sa), int(na), int(sb), int(nb))
        assert (r.p_value < 0.05) == (not r.diff.covers(0.0))


def test_wilson_interval_known_answer():
    iv = proportion_ci(0, 10)
    assert iv.low == pytest.approx(0.0, abs=1e-12) and iv.high == pytest.approx(0.2775, abs=1e-4)


def test_sample_size_textbook_value():
    assert sample_size_per_arm(1.0, 0.5) == 63
    with pytest.raises(ValueError, match="minimum detectable effect"):
        sample_size_per_arm(1.0, 0.0)


def test_bootstrap_memory_is_bounded_by_resampling_in_chunks(monkeypatch):
    monkeypatch.setattr(stats, "_CHUNK_ELEMENTS", 10_000)
    widths = []

    def p95(s):
        widths.append(s.size)
        return np.quantile(s, 0.95, axis=-1)

    x = np.random.default_rng(0).lognormal(0, 1, 3000)
    res = bootstrap_diff(x, x * 1.5, p95, n_boot=500)
    assert max(widths) <= 10_000 and res.p_value < 0.05


def test_bootstrap_ratio_difference_covers_the_planted_ratio():
    rng = np.random.default_rng(15)
    a = np.column_stack([rng.gamma(4, 0.005, 800), rng.uniform(0.6, 1.0, 800)])  # 0.02/0.8
    b = np.column_stack([rng.gamma(4, 0.0025, 800), rng.uniform(0.6, 1.0, 800)])  # 0.01/0.8

    def ratio(s):
        return s[..., 0].sum(-1) / s[..., 1].sum(-1)

    res = bootstrap_diff(a, b, ratio, n_boot=1000)
    assert res.diff.covers(0.01 / 0.8 - 0.02 / 0.8) and res.p_value < 0.01


