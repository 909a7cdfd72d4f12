"""The statistics the A/B report uses, each a small pure function with a known answer.

- :func:`mean_ci`, :func:`proportion_ci` (Wilson), :func:`bootstrap_ci`: 95% CIs of one arm.
- :func:`welch_test` (means), :func:`two_proportion_test` (rates), :func:`bootstrap_diff`
  (any statistic, e.g. cost per quality point): differences between arms.
- :func:`sample_size_per_arm`: n per arm for a minimum detectable effect at power 0.8.
- :func:`msprt`: the always-valid test that the decision rule uses, so that looking
  at the experiment every day does not inflate false positives.
- :func:`latency_quantiles`, :func:`p50_latency_ms`, :func:`p95_latency_ms`: the one
  definition of a latency percentile that the report, the degradation series and the
  A/B latency use (and that the SQL of the pushed-down sources reproduces).

On the sequential rule: a fixed-n test checked daily and stopped at the first
p < 0.05 has a false-positive rate far above 5% (about 20% over 14 looks). The
mixture sequential probability ratio test (mSPRT; Robbins 1970; Johari, Pekelis &
Walsh, "Always valid inference", 2017) mixes the likelihood ratio of the
difference of means over a normal prior N(0, tau^2) on the effect. With the
difference estimate d and its variance V at a look,

    Lambda = sqrt(V / (V + tau^2)) * exp(tau^2 d^2 / (2 V (V + tau^2)))

is (asymptotically) a martingale under no effect, so by Ville's inequality
P(Lambda ever >= 1/alpha) <= alpha: the always-valid p-value ``min over looks of
1/Lambda`` may be read at every look. The confidence sequence is the set of
effects not rejected: d +- sqrt(V (V + tau^2) / tau^2 * (log((V + tau^2) / V) + 2 log(1/alpha))).
``tau`` is set to the minimum detectable effect: the prior puts its mass on
effects of the size the experiment is meant to find.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

__all__ = [
    "Interval",
    "SequentialResult",
    "TestResult",
    "bootstrap_ci",
    "bootstrap_diff",
    "latency_quantiles",
    "mean_ci",
    "msprt",
    "p50_latency_ms",
    "p95_latency_ms",
    "proportion_ci",
    "sample_size_per_arm",
    "two_proportion_test",
    "welch_test",
]


@dataclass(frozen=True, slots=True)
class Interval:
    """An estimate with its confidence interval."""

    estimate: float
    low: float
    high: float

    def covers(self, value: float) -> bool:
        """``low <= value <= high``."""
        return self.low <= value <= self.high


@dataclass(frozen=True, slots=True)
class TestResult:
    """A difference ``b - a`` with its 95% CI, p-value and effect size."""

    diff: Interval
    p_value: float
    effect_size: float  # Cohen's d for means; the difference itself for rates
    test: str


@dataclass(frozen=True, slots=True)
class SequentialResult:
    """The mSPRT over looks: always-valid p-value and confidence sequence at the last look."""

    diff: Interval
    p_value: float
    reject: bool
    looks: int


def mean_ci(x: np.ndarray, level: float = 0.95) -> Interval:
    """Mean with a t interval."""
    x = np.asarray(x, dtype=float)
    n = len(x)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    m = float(x.mean())
    if n < 2:
        return Interval(m, math.nan, math.nan)
    half = sps.t.ppf(0.5 + level / 2, n - 1) * x.std(ddof=1) / math.sqrt(n)
    return Interval(m, float(m - half), float(m + half))


def proportion_ci(successes: int, n: int, level: float = 0.95) -> Interval:
    """A proportion with Wilson's score interval (sane near 0 and 1)."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan)
    z = sps.norm.ppf(0.5 + level / 2)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return Interval(p, centre - half, centre + half)


_CHUNK_ELEMENTS = 4_000_000
"""At most this many resampled values in memory at once (32 MB of float64)."""


def latency_quantiles(latency_ms: np.ndarray, q: float) -> np.ndarray:
    """The ``q`` quantile of attempt latencies along the last axis (one per row of a
    ``(B, n)`` bootstrap sample; a 0-d array for one sample): the definition of
    :func:`telemetry.stats.exact_percentile` (linear interpolation), vectorised.

    Over every attempt that got an answer or failed, as in every report of amm's (why:
    :mod:`telemetry.stats`); the error rate says how many failed.

    >>> float(latency_quantiles(np.array([100.0, 200.0, 300.0]), 0.5))
    200.0
    """
    return np.asarray(np.quantile(latency_ms, q, axis=-1), dtype=float)


def _sample_quantile(latency_ms: np.ndarray, q: float) -> float:
    x = np.asarray(latency_ms, dtype=float)
    return float(latency_quantiles(x, q)) if x.size else math.nan


def p50_latency_ms(latency_ms: np.ndarray) -> float:
    """The median latency of a sample of attempts (see :func:`latency_quantiles`)."""
    return _sample_quantile(latency_ms, 0.50)


def p95_latency_ms(latency_ms: np.ndarray) -> float:
    """The p95 latency of a sample of attempts (see :func:`latency_quantiles`).

    >>> p95_latency_ms(np.arange(1.0, 102.0))
    96.0
    """
    return _sample_quantile(latency_ms, 0.95)


def _resample_stat(x: np.ndarray, stat: Callable[[np.ndarray], np.ndarray],
                   rng: np.random.Generator, n_boot: int) -> np.ndarray:
    # Resample in chunks: a (n_boot, n) index array at 30k requests per arm was 1.6 GB.
    width = int(np.prod(x.shape)) or 1
    per_chunk = max(1, _CHUNK_ELEMENTS // width)
    out = []
    for start in range(0, n_boot, per_chunk):
        idx = rng.integers(0, len(x), size=(min(per_chunk, n_boot - start), len(x)))
        out.append(stat(x[idx]))
    return np.concatenate(out)


def bootstrap_ci(x: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], *,
                 n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> Interval:
    """Percentile bootstrap CI of ``stat``, which maps (B, n[, k]) samples to (B,)."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2:
        est = float(stat(x[None, ...])[0]) if len(x) else math.nan
        return Interval(est, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    boots = _resample_stat(x, stat, rng, n_boot)
    if np.isnan(boots).all():  # the statistic is undefined on every resample
        return Interval(float(stat(x[None, ...])[0]), math.nan, math.nan)
    lo, hi = np.nanquantile(boots, [0.5 - level / 2, 0.5 + level / 2])
    return Interval(float(stat(x[None, ...])[0]), float(lo), float(hi))


def bootstrap_diff(a: np.ndarray, b: np.ndarray, stat: Callable[[np.ndarray], np.ndarray], *,
                   n_boot: int = 2000, level: float = 0.95, seed: int = 0) -> TestResult:
    """``stat(b) - stat(a)`` with a percentile CI and a two-sided bootstrap p-value."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    est = float(stat(b[None, ...])[0] - stat(a[None, ...])[0])
    if len(a) < 2 or len(b) < 2:
        return TestResult(Interval(est, math.nan, math.nan), math.nan, est, "bootstrap")
    rng = np.random.default_rng(seed)
    diffs = _resample_stat(b, stat, rng, n_boot) - _resample_stat(a, stat, rng, n_boot)
    if np.isnan(diffs).all():
        return TestResult(Interval(est, math.nan, math.nan), math.nan, est, "bootstrap")
    lo, hi = np.nanquantile(diffs, [0.5 - level / 2, 0.5 + level / 2])
    # p: twice the share of resampled differences on the other side of zero.
    p = min(1.0, 2 * min(np.mean(diffs <= 0), np.mean(diffs >= 0)) + 1 / n_boot)
    return TestResult(Interval(est, float(lo), float(hi)), float(p), est, "bootstrap")


def welch_test(a: np.ndarray, b: np.ndarray, level: float = 0.95) -> TestResult:
    """Welch's t test of ``mean(b) - mean(a)``; effect size is Cohen's d (pooled sd)."""
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    na, nb = len(a), len(b)
    diff = float(b.mean() - a.mean()) if na and nb else math.nan
    if na < 2 or nb < 2:
        return TestResult(Interval(diff, math.nan, math.nan), math.nan, math.nan, "welch")
    va, vb = a.var(ddof=1) / na, b.var(ddof=1) / nb
    se = math.sqrt(va + vb)
    if se == 0:
        return TestResult(Interval(diff, diff, diff), 1.0 if diff == 0 else 0.0, 0.0, "welch")
    dof = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    t = diff / se
    half = sps.t.ppf(0.5 + level / 2, dof) * se
    pooled = math.sqrt(((na - 1) * a.var(ddof=1) + (nb - 1) * b.var(ddof=1)) / (na + nb - 2))
    d = diff / pooled if pooled > 0 else 0.0
    return TestResult(Interval(diff, float(diff - half), float(diff + half)),
                      float(2 * sps.t.sf(abs(t), dof)), d, "welch")


def two_proportion_test(sa: int, na: int, sb: int, nb: int, level: float = 0.95) -> TestResult:
    """Two-proportion z test of ``pb - pa``.

    The p-value and the interval use the same (unpooled) standard error, so the
    interval leaves 0 exactly when ``p < 1 - level``: they never disagree.
    """
    if na == 0 or nb == 0:
        return TestResult(Interval(math.nan, math.nan, math.nan), math.nan, math.nan, "z")
    pa, pb = sa / na, sb / nb
    diff = pb - pa
    se = math.sqrt(pa * (1 - pa) / na + pb * (1 - pb) / nb)
    z = sps.norm.ppf(0.5 + level / 2)
    p = float(2 * sps.norm.sf(abs(diff) / se)) if se > 0 else (1.0 if diff == 0 else 0.0)
    return TestResult(Interval(diff, diff - z * se, diff + z * se), p, diff, "two-proportion z")


def sample_size_per_arm(sd: float, mde: float, *, alpha: float = 0.05,
                        power: float = 0.8) -> int:
    """n per arm for a two-sided test of a mean difference ``mde`` with sd ``sd``.

    For a rate p use ``sd = sqrt(p (1 - p))``.
    """
    if mde <= 0:
        raise ValueError(f"minimum detectable effect must be > 0, got {mde}")
    z = float(sps.norm.ppf(1 - alpha / 2) + sps.norm.ppf(power))
    return math.ceil(2 * (z * sd / mde) ** 2)


def msprt(looks_a: Sequence[np.ndarray], looks_b: Sequence[np.ndarray], *, tau: float,
          alpha: float = 0.05) -> SequentialResult:
    """The mSPRT of ``mean(b) - mean(a)`` over looks (each element: the data that
    arrived before that look, e.g. one day). See the module docstring."""
    if tau <= 0:
        raise ValueError(f"tau must be > 0, got {tau}")
    tau2 = tau * tau
    sa = sb = sa2 = sb2 = 0.0
    na = nb = 0
    p_value, low, high = 1.0, -math.inf, math.inf
    diff = math.nan
    looks = 0
    for xa, xb in zip(looks_a, looks_b, strict=True):
        xa, xb = np.asarray(xa, dtype=float), np.asarray(xb, dtype=float)
        na, nb = na + len(xa), nb + len(xb)
        sa, sb = sa + xa.sum(), sb + xb.sum()
        sa2, sb2 = sa2 + (xa * xa).sum(), sb2 + (xb * xb).sum()
        if na < 2 or nb < 2:
            continue
        looks += 1
        va = max((sa2 - sa * sa / na) / (na - 1), 0.0)
        vb = max((sb2 - sb * sb / nb) / (nb - 1), 0.0)
        v = max(va / na + vb / nb, 1e-18)
        diff = sb / nb - sa / na
        log_lambda = 0.5 * math.log(v / (v + tau2)) + tau2 * diff * diff / (2 * v * (v + tau2))
        p_value = min(p_value, math.exp(-log_lambda) if log_lambda < 700 else 0.0)
        half = math.sqrt(v * (v + tau2) / tau2 * (math.log((v + tau2) / v)
                                                   + 2 * math.log(1 / alpha)))
        # The confidence sequence: intersect the intervals of every look.
        low, high = max(low, diff - half), min(high, diff + half)
    if low > high:  # the intersection can empty out by chance; fall back to the last look
        low, high = diff - half, diff + half
    return SequentialResult(Interval(float(diff), float(low), float(high)),
                            min(float(p_value), 1.0), p_value <= alpha, looks)
