"""When did a model get worse? Per-model time series and change points an operator can act on.

Method, per model and metric, on the attempts in time order (worse is "up": the
error indicator, log latency of successful attempts, minus the quality score):

1. **Scan.** For every split ``t`` of the series (each side at least ``min_samples``)
   the likelihood ratio of "one level before t, a worse level after" against "one
   level throughout": Bernoulli for errors (a change of proportion, so 1% -> 5% is
   a real signal, not a handful of single-error alarms), Gaussian for log latency
   and quality (variance from successive differences, which a step barely moves).
   The split with the largest ratio is where the shift starts (the MLE).
2. **Decide.** A change is real when that largest ratio exceeds ``critical`` (25).
   The threshold is calibrated by simulation, re-running the scan every 100 requests
   as the watch does: on stable series (lognormal latency with log-sd up to 0.8,
   error rates 1-20%, quality) fewer than 1 false report per 10,000 requests
   (``docs/validation.md``). Binary segmentation then looks for further changes
   on each side, so an early blip cannot take credit for a later step.
3. **Report.** Each change where the series got worse is compared with its
   *reference*: the ``reference`` attempts just before it (a rolling window, not
   the first quarter of the load). It is reported only if it also crosses the seed's
   ``detect_degradation(threshold=0.8)`` ratio, used here as a floor on size:
   current/baseline for quality, baseline/current for p95 latency and for the error
   rate (so 1% -> 5% has ratio 0.2). The change comes with an interval (the splits
   whose ratio is within 7 of the best) and the time it became detectable.

With ``since``, data before ``since`` still serve as the reference, and only changes
from ``since`` on are reported.

    for d in detect_degradations(load_attempts("data/amm.db")):
        print(d.describe())
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

from analytics.stats import p95_latency_ms

__all__ = [
    "CRITICAL",
    "METRICS",
    "Change",
    "Degradation",
    "auto_frequency",
    "degradation_ratio",
    "detect_degradations",
    "find_changes",
    "likelihood_ratios",
    "metric_series",
    "model_timeseries",
]

METRICS = ("error_rate", "p95_latency_ms", "quality")
"""Metrics watched for degradation (names as in :class:`Degradation.metric`)."""

CRITICAL = 25.0
"""Likelihood-ratio threshold of a change (calibrated: see the module docstring)."""

_INTERVAL_DROP = 7.0  # ratio drop that bounds the change-point interval (about 95%)
_LOWER_IS_WORSE = {"quality"}


@dataclass(frozen=True, slots=True)
class Degradation:
    """A metric of a model (optionally for one agent type) that got worse at ``change_time``.

    ``ratio`` follows the seed's threshold semantics (below ``threshold`` is worse):
    current/baseline for quality, baseline/current for latency and error rate.
    ``baseline`` is the reference window just before the change; ``current`` the
    segment after it. ``change_low``/``change_high`` bound where the shift started;
    ``detected_at`` is when the data first showed it.
    """

    model: str
    agent_type: str | None
    metric: str
    change_time: datetime
    baseline: float
    current: float
    ratio: float
    threshold: float
    baseline_n: int
    current_n: int
    change_low: datetime | None = None
    change_high: datetime | None = None
    detected_at: datetime | None = None
    statistic: float = math.nan

    def describe(self) -> str:
        """One line for reports: ``gemini-pro: p95_latency_ms 2510 -> 6240 since ...``."""
        who = self.model if self.agent_type is None else f"{self.model} ({self.agent_type})"
        fmt = {"p95_latency_ms": "{:.0f} ms", "error_rate": "{:.1%}"}.get(self.metric, "{:.3f}")
        window = ""
        if self.change_low is not None and self.change_high is not None:
            window = f" (between {self.change_low:%m-%d %H:%M} and {self.change_high:%m-%d %H:%M})"
        return (f"{who}: {self.metric} {fmt.format(self.baseline)} -> "
                f"{fmt.format(self.current)} since {self.change_time:%Y-%m-%d %H:%M} UTC"
                f"{window}, ratio {self.ratio:.2f} < {self.threshold:.2f}")


def degradation_ratio(metric: str, baseline: float, current: float) -> float:
    """The seed's ratio: current/baseline for quality; baseline/current for latency and
    error rate (lower = worse)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    num, den = (current, baseline) if metric in _LOWER_IS_WORSE else (baseline, current)
    if den <= 0:
        return float("inf") if num > 0 else 1.0
    return num / den


_FREQS = ("1s", "5s", "15s", "1min", "5min", "15min", "1h", "3h", "6h", "1D")
_FREQ_SECONDS = (1, 5, 15, 60, 300, 900, 3600, 10800, 21600, 86400)


def auto_frequency(times: pd.Series, points: int = 40) -> str:
    """The coarsest of the usual resolutions that still gives about ``points`` buckets
    over the span of ``times`` (a ten-second demo and a month of traffic both chart)."""
    if times.empty:
        return "1h"
    span = (times.max() - times.min()).total_seconds()
    for freq, seconds in zip(_FREQS, _FREQ_SECONDS, strict=True):
        if span / seconds <= points:
            return freq
    return _FREQS[-1]


def model_timeseries(attempts: pd.DataFrame, freq: str = "1h", *,
                     by_agent: bool = False) -> pd.DataFrame:
    """Per model (and agent type) and time bin: attempts, error_rate, p95_latency_ms
    (of every attempt: :func:`analytics.stats.latency_quantiles`), quality (mean overall
    score)."""
    keys = ["model", "agent_type"] if by_agent else ["model"]
    cols = ["time", *keys, "attempts", "error_rate", "p95_latency_ms", "quality"]
    if attempts.empty:
        return pd.DataFrame(columns=cols)
    df = attempts.assign(error=~attempts["success"])
    grouped = df.groupby([*keys, pd.Grouper(key="time", freq=freq)], observed=True)
    out = grouped.agg(attempts=("error", "size"), error_rate=("error", "mean"),
                      p95_latency_ms=("latency_ms", p95_latency_ms),
                      quality=("quality", "mean")).reset_index()
    return out[cols]


# --- The scan (numpy only: the validation runs it a hundred thousand times) -----------


def _xlogy(k: np.ndarray, p: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(k > 0, k * np.log(np.where(p > 0, p, 1.0)), 0.0)


def _loglik(k: np.ndarray, n: np.ndarray) -> np.ndarray:
    p = k / n
    return np.asarray(_xlogy(k, p) + _xlogy(n - k, 1 - p), dtype=float)


def _ratios(x: np.ndarray, binary: bool, m: int, sigma2: float | None = None) -> np.ndarray:
    """Likelihood ratio of a worse level from each split t in [m, n - m] (0 if not worse)."""
    n = len(x)
    t = np.arange(m, n - m + 1)
    c = np.cumsum(x)
    before, total = c[t - 1], c[-1]
    n1, n2 = t.astype(float), (n - t).astype(float)
    after = total - before
    worse = after / n2 > before / n1
    if binary:
        lr = 2 * (_loglik(before, n1) + _loglik(after, n2) - _loglik(np.full_like(n1, total),
                                                                       np.full_like(n1, n)))
    else:
        s2 = sigma2 if sigma2 is not None else float(np.mean(np.diff(x) ** 2) / 2)
        lr = (after / n2 - before / n1) ** 2 / (max(s2, 1e-12) * (1 / n1 + 1 / n2))
    return np.where(worse, lr, 0.0)


@dataclass(frozen=True, slots=True)
class Change:
    """A change found by :func:`find_changes`: indices into the series."""

    index: int  # first value of the worse level
    low: int  # interval of the change point
    high: int
    detected: int  # the change is significant in values[:detected + 1]
    statistic: float
    reference: tuple[int, int]  # [start, end) of the reference window before it
    segment: tuple[int, int]  # [start, end) of the level after it


def _detected(x: np.ndarray, lo: int, tau: int, binary: bool, m: int, critical: float,
              sigma2: float) -> int:
    """First end (exclusive index - 1) at which the split at ``tau`` of ``x[lo:end]`` passes."""
    c = np.cumsum(x[lo:])
    k = tau - lo
    ends = np.arange(k + m, len(c) + 1)
    n1, n2 = float(k), (ends - k).astype(float)
    before = c[k - 1]
    after = c[ends - 1] - before
    if binary:
        total = before + after
        lr = 2 * (_loglik(np.full_like(n2, before), np.full_like(n2, n1)) + _loglik(after, n2)
                  - _loglik(total, n1 + n2))
    else:
        lr = (after / n2 - before / n1) ** 2 / (max(sigma2, 1e-12) * (1 / n1 + 1 / n2))
    lr = np.where(after / n2 > before / n1, lr, 0.0)
    hit = np.flatnonzero(lr >= critical)
    return lo + int(ends[hit[0]]) - 1 if len(hit) else len(x) - 1


def find_changes(values: np.ndarray, *, binary: bool, min_samples: int = 30,
                 critical: float = CRITICAL, reference: int = 500,
                 max_changes: int = 8) -> list[Change]:
    """Every upward change of level in ``values`` (worse is larger), by binary segmentation
    of the likelihood-ratio scan; in index order."""
    x = np.asarray(values, dtype=float)
    sigma2 = float(np.mean(np.diff(x) ** 2) / 2) if len(x) > 1 else 0.0
    splits: list[tuple[int, float, int, int]] = []
    todo = [(0, len(x))]
    while todo and len(splits) < max_changes:
        lo, hi = todo.pop()
        if hi - lo < 2 * min_samples:
            continue
        lr = _ratios(x[lo:hi], binary, min_samples, None if binary else sigma2)
        if not len(lr) or lr.max() < critical:
            continue
        best = int(lr.argmax())
        tau = lo + min_samples + best
        near = np.flatnonzero(lr >= lr[best] - _INTERVAL_DROP)
        splits.append((tau, float(lr[best]), lo + min_samples + int(near.min()),
                       lo + min_samples + int(near.max())))
        todo += [(lo, tau), (tau, hi)]
    splits.sort()
    bounds = [0] + [s[0] for s in splits] + [len(x)]
    out = []
    for i, (tau, stat, low, high) in enumerate(splits):
        prev, nxt = bounds[i], bounds[i + 2]
        out.append(Change(index=tau, low=low, high=high,
                          detected=_detected(x, prev, tau, binary, min_samples, critical,
                                             sigma2),
                          statistic=stat, reference=(max(prev, tau - reference), tau),
                          segment=(tau, nxt)))
    return out


# --- Per model and metric ------------------------------------------------------------


def likelihood_ratios(values: np.ndarray, *, binary: bool, min_samples: int = 30) -> np.ndarray:
    """The scan's statistic at each split ``t`` in ``[min_samples, n - min_samples]`` of
    ``values`` (0 where the level after ``t`` is not worse): what :func:`find_changes`
    maximises and compares with :data:`CRITICAL`. For plots and teaching."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2 * min_samples:
        return np.zeros(0)
    return _ratios(x, binary, min_samples)


def metric_series(attempts: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, np.ndarray, bool]:
    """``(rows, values, binary)``: one model's attempts (in time order) as the series the
    detector scans for ``metric`` (worse is larger: error indicator, log latency of
    successes, minus quality)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    return _series(attempts.sort_values("time", kind="stable"), metric)


def _series(group: pd.DataFrame, metric: str) -> tuple[pd.DataFrame, np.ndarray, bool]:
    if metric == "error_rate":
        return group, (~group["success"].astype(bool)).to_numpy(float), True
    if metric == "quality":
        rows = group[group["quality"].notna()]
        return rows, -rows["quality"].to_numpy(float), False
    # Answered attempts only: a failure is the error series' signal, and counted here as
    # well one incident would be reported twice (and timeouts would blur the level).
    rows = group[group["success"].astype(bool)]
    return rows, np.log(np.maximum(rows["latency_ms"].to_numpy(float), 1e-3)), False


def _value(metric: str, rows: pd.DataFrame) -> float:
    if metric == "error_rate":
        return float((~rows["success"].astype(bool)).mean())
    if metric == "quality":
        return float(rows["quality"].mean())
    return p95_latency_ms(rows["latency_ms"])


def _time(rows: pd.DataFrame, i: int) -> datetime:
    stamp: datetime = rows["time"].iloc[min(i, len(rows) - 1)].floor("us").to_pydatetime()
    return stamp


def detect_degradations(attempts: pd.DataFrame, *, threshold: float = 0.8,
                        by_agent: bool = False, metrics: Sequence[str] = METRICS,
                        min_samples: int = 30, critical: float = CRITICAL,
                        reference: int = 500, lookback: int = 20_000,
                        since: datetime | None = None) -> list[Degradation]:
    """Every (model[, agent type], metric) change to worse that is significant and crosses
    ``threshold`` (see the module docstring). ``lookback``: attempts per series analysed
    (the newest); ``since``: report only changes from then (older data are reference)."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1), got {threshold}")
    unknown = set(metrics) - set(METRICS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; expected some of {METRICS}")
    found: list[Degradation] = []
    if attempts.empty:
        return found
    keys = ["model", "agent_type"] if by_agent else ["model"]
    ordered = attempts.sort_values("time", kind="stable")
    for key, group in ordered.groupby(keys, sort=True, observed=True):
        key_t = key if isinstance(key, tuple) else (key,)
        for metric in metrics:
            rows, x, binary = _series(group, metric)
            rows, x = rows.iloc[-lookback:], x[-lookback:]
            for ch in find_changes(x, binary=binary, min_samples=min_samples,
                                   critical=critical, reference=reference):
                ref = rows.iloc[ch.reference[0]:ch.reference[1]]
                seg = rows.iloc[ch.segment[0]:ch.segment[1]]
                baseline, current = _value(metric, ref), _value(metric, seg)
                ratio = degradation_ratio(metric, baseline, current)
                change_time = _time(rows, ch.index)
                if ratio >= threshold or (since is not None and change_time < since):
                    continue
                found.append(Degradation(
                    model=str(key_t[0]), agent_type=str(key_t[1]) if by_agent else None,
                    metric=metric, change_time=change_time, baseline=baseline,
                    current=current, ratio=ratio, threshold=threshold, baseline_n=len(ref),
                    current_n=len(seg), change_low=_time(rows, ch.low),
                    change_high=_time(rows, ch.high), detected_at=_time(rows, ch.detected),
                    statistic=ch.statistic))
    return found
