"""When did a model get worse? Time series per model and CUSUM change points.

Method: a one-sided CUSUM (Page, 1954) per model and metric, on the attempts in
time order. Each metric is oriented so that "worse" is "up" (error indicator,
log latency of successful attempts, minus quality), standardised by a baseline
(the first quarter of the data, at least ``min_samples``), and accumulated as
``S = max(0, S + z - k)``; an alarm is raised when ``S > h``, and the change time
is the last time ``S`` was zero before the alarm (the CUSUM's change estimate).

Why CUSUM and not Page-Hinkley: Page-Hinkley compares with a running mean that
itself drifts into a slow degradation, while CUSUM against a fixed baseline keeps
the "before" explicit, which is what the seed's threshold semantics compare with;
and its reference shift ``k`` can be set from that same threshold (half the
smallest shift that breaches it), so it is tuned to the changes worth reporting.

Whether a change is reported uses the seed's ``detect_degradation(model_id,
threshold=0.8)`` semantics on before/after the change: recent/baseline < threshold
for success rate and quality, baseline/recent < threshold for p95 latency. An
alarm that does not cross the threshold is dropped and the CUSUM restarts after it.

    for d in detect_degradations(load_attempts("data/amm.db")):
        print(d.model, d.metric, d.change_time, d.ratio)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pandas as pd

__all__ = [
    "METRICS",
    "Degradation",
    "auto_frequency",
    "cusum_change_point",
    "degradation_ratio",
    "detect_degradations",
    "model_timeseries",
]

METRICS = ("success_rate", "p95_latency_ms", "quality")
"""Metrics watched for degradation (names as in :class:`Degradation.metric`)."""


@dataclass(frozen=True, slots=True)
class Degradation:
    """A metric of a model (optionally for one agent type) that got worse at ``change_time``.

    ``ratio`` follows the seed's threshold semantics (below ``threshold`` is worse):
    current/baseline for success rate and quality, baseline/current for latency.
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

    def describe(self) -> str:
        """One line for reports: ``gemini-pro p95_latency_ms 2510 -> 6240 since ...``."""
        who = self.model if self.agent_type is None else f"{self.model} ({self.agent_type})"
        fmt = "{:.0f}" if self.metric == "p95_latency_ms" else "{:.3f}"
        return (f"{who}: {self.metric} {fmt.format(self.baseline)} -> "
                f"{fmt.format(self.current)} since {self.change_time:%Y-%m-%d %H:%M} UTC "
                f"(ratio {self.ratio:.2f} < {self.threshold:.2f})")


def degradation_ratio(metric: str, baseline: float, current: float) -> float:
    """The seed's ratio: current/baseline, or baseline/current for latency (lower = worse)."""
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {METRICS}")
    num, den = (baseline, current) if metric == "p95_latency_ms" else (current, baseline)
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
    (successful attempts), quality (mean overall score)."""
    keys = ["model", "agent_type"] if by_agent else ["model"]
    cols = ["time", *keys, "attempts", "error_rate", "p95_latency_ms", "quality"]
    if attempts.empty:
        return pd.DataFrame(columns=cols)
    df = attempts.assign(error=~attempts["success"],
                         ok_latency=attempts["latency_ms"].where(attempts["success"]))
    grouped = df.groupby([*keys, pd.Grouper(key="time", freq=freq)], observed=True)
    out = grouped.agg(attempts=("error", "size"), error_rate=("error", "mean"),
                      p95_latency_ms=("ok_latency", lambda s: s.quantile(0.95)),
                      quality=("quality", "mean")).reset_index()
    return out[cols]


def cusum_change_point(values: np.ndarray, *, baseline_n: int, shift: float,
                       h: float = 5.0, start: int = 0) -> tuple[int, int] | None:
    """First upward CUSUM alarm in ``values[start:]``: ``(change_index, alarm_index)``.

    ``values`` are oriented so that worse is larger; the baseline mean and standard
    deviation come from ``values[:baseline_n]``; ``shift`` is the smallest mean
    increase worth detecting (raw units), so ``k = shift / 2`` in standard units.
    """
    x = np.asarray(values, dtype=float)
    base = x[:baseline_n]
    mu = float(base.mean())
    # A floor on sigma: a flawless baseline (no errors at all) must not make any
    # single error an infinitely large step.
    sigma = max(float(base.std(ddof=1)) if len(base) > 1 else 0.0, shift / 2, 1e-9)
    k = shift / (2 * sigma)
    s, last_zero = 0.0, start - 1
    for i in range(start, len(x)):
        s = max(0.0, s + (x[i] - mu) / sigma - k)
        if s == 0.0:
            last_zero = i
        elif s > h:
            return last_zero + 1, i
    return None


def _oriented(group: pd.DataFrame, metric: str, threshold: float,
              baseline_n: int) -> tuple[pd.DataFrame, np.ndarray, float] | None:
    """Rows used for ``metric``, their values oriented worse-is-up, and the shift."""
    if metric == "success_rate":
        rows = group
    elif metric == "quality":
        rows = group[group["quality"].notna()]
    else:
        rows = group[group["success"]]
    if len(rows) < 2 * baseline_n:  # too few rows for a baseline and a recent window
        return None
    if metric == "success_rate":
        x = (~rows["success"]).to_numpy(float)
        shift = (1 - x[:baseline_n].mean()) * (1 - threshold)
    elif metric == "quality":
        x = -rows["quality"].to_numpy(float)
        shift = -x[:baseline_n].mean() * (1 - threshold)
    else:
        x = np.log(np.maximum(rows["latency_ms"].to_numpy(float), 1e-3))
        shift = float(np.log(1 / threshold))
    if shift <= 0:
        return None
    return rows, x, shift


def _value(metric: str, rows: pd.DataFrame) -> float:
    if metric == "success_rate":
        return float(rows["success"].mean())
    if metric == "quality":
        return float(rows["quality"].mean())
    return float(rows["latency_ms"].quantile(0.95))


def _detect_one(group: pd.DataFrame, metric: str, threshold: float, min_samples: int,
                baseline_fraction: float, h: float
                ) -> tuple[pd.Timestamp, float, float, float, int, int] | None:
    baseline_n = max(min_samples, int(len(group) * baseline_fraction))
    oriented = _oriented(group, metric, threshold, baseline_n)
    if oriented is None:
        return None
    rows, x, shift = oriented
    start = baseline_n
    while start < len(x) - min_samples:
        found = cusum_change_point(x, baseline_n=baseline_n, shift=shift, h=h, start=start)
        if found is None:
            return None
        change, alarm = found
        before, after = rows.iloc[:change], rows.iloc[change:]
        # Judge the change on the window right after it as well as on everything
        # since: an early false alarm must not borrow a later real degradation. The
        # window is 3x min_samples so that a p95 over it is not two outliers' whim.
        window = rows.iloc[change:change + max(3 * min_samples, alarm - change + 1)]
        if len(before) >= min_samples and len(after) >= min_samples:
            baseline, current = _value(metric, before), _value(metric, after)
            ratio = degradation_ratio(metric, baseline, current)
            near = degradation_ratio(metric, baseline, _value(metric, window))
            if ratio < threshold and near < threshold:
                return (rows["time"].iloc[change], baseline, current, ratio, len(before),
                        len(after))
        start = alarm + 1  # a false alarm or too small a change: look further on
    return None


def detect_degradations(attempts: pd.DataFrame, *, threshold: float = 0.8,
                        by_agent: bool = False, metrics: Sequence[str] = METRICS,
                        min_samples: int = 30, baseline_fraction: float = 0.25,
                        h: float = 5.0) -> list[Degradation]:
    """Every (model[, agent type], metric) whose CUSUM found a change that crosses
    ``threshold`` (the seed's semantics, see the module docstring)."""
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
            hit = _detect_one(group, metric, threshold, min_samples, baseline_fraction, h)
            if hit is None:
                continue
            change_time, baseline, current, ratio, n_before, n_after = hit
            found.append(Degradation(
                model=str(key_t[0]), agent_type=str(key_t[1]) if by_agent else None,
                metric=metric, change_time=change_time.floor("us").to_pydatetime(),
                baseline=baseline, current=current, ratio=ratio, threshold=threshold,
                baseline_n=n_before, current_n=n_after))
    return found
