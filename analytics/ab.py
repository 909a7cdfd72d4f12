"""A/B experiments: per-arm statistics, arm differences and a verdict valid under peeking.

Only randomised traffic counts: requests of the experiment whose assigned arm was
actually used (``arm_honoured``) and that were not served from the cache (a cache
hit says nothing about the arm's model today). Per arm: n, mean quality, success
rate, mean and p95 latency, cost per request and cost per quality point, each with
a 95% CI. Between two arms: Welch's t for means, a two-proportion z test for the
success rate, a bootstrap for p95 latency and cost per quality point; Cohen's d;
the n per arm still needed for the minimum detectable effect at power 0.8.

The verdict on quality uses the mSPRT over daily looks (:func:`analytics.stats.msprt`),
so an analyst may read it every day: its false-positive rate stays at or below 5%.

    for line in summarize(load_requests("data/amm.db")):
        print(line)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations

import numpy as np
import pandas as pd

from analytics.stats import (
    Interval,
    SequentialResult,
    TestResult,
    bootstrap_ci,
    bootstrap_diff,
    mean_ci,
    msprt,
    proportion_ci,
    sample_size_per_arm,
    two_proportion_test,
    welch_test,
)

__all__ = [
    "ArmSummary",
    "Comparison",
    "ExperimentReport",
    "analyse_experiment",
    "analyse_experiments",
    "randomised",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm on randomised traffic; every value with its 95% CI."""

    arm: str
    n: int
    quality: Interval
    success_rate: Interval
    latency_mean_ms: Interval
    latency_p95_ms: Interval
    cost_per_request: Interval
    cost_per_quality_point: Interval


@dataclass(frozen=True, slots=True)
class Comparison:
    """Arm ``b`` minus arm ``a`` on each metric, the sequential decision and the verdict."""

    arm_a: str
    arm_b: str
    quality: TestResult
    success_rate: TestResult
    latency_mean_ms: TestResult
    latency_p95_ms: TestResult
    cost_per_request: TestResult
    cost_per_quality_point: TestResult
    sequential_quality: SequentialResult
    sequential_success: SequentialResult
    needed_per_arm: int
    more_needed_per_arm: int
    verdict: str


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """One experiment: its arms, the pairwise comparisons and the verdict lines."""

    name: str
    agent_type: str | None
    arms: tuple[ArmSummary, ...]
    comparisons: tuple[Comparison, ...]
    excluded: int  # experiment requests left out: arm not honoured or cache hits
    mde: float

    @property
    def verdicts(self) -> list[str]:
        """``"<experiment>: <verdict>"`` per comparison (or why there is none)."""
        if not self.comparisons:
            return [f"{self.name}: not enough randomised traffic in two arms yet"]
        return [f"{self.name}: {c.verdict}" for c in self.comparisons]

    def arms_table(self) -> pd.DataFrame:
        """The arms as a table (estimate and CI columns), for the dashboard/notebook."""
        rows = []
        for a in self.arms:
            row: dict[str, object] = {"arm": a.arm, "n": a.n}
            for name in ("quality", "success_rate", "latency_mean_ms", "latency_p95_ms",
                         "cost_per_request", "cost_per_quality_point"):
                iv: Interval = getattr(a, name)
                row |= {name: iv.estimate, f"{name}_low": iv.low, f"{name}_high": iv.high}
            rows.append(row)
        return pd.DataFrame(rows)


def randomised(requests: pd.DataFrame, experiment: str) -> pd.DataFrame:
    """The experiment's requests that compare arms fairly (arm honoured, no cache hit)."""
    mask = ((requests["experiment"] == experiment).fillna(False)
            & requests["arm_honoured"].fillna(False) & ~requests["cache_hit"]
            & requests["arm"].notna())
    return requests[mask.to_numpy(bool)]


def _cost_quality(df: pd.DataFrame) -> np.ndarray:
    # A failed request earns no quality but may cost: quality 0 penalises it fairly.
    return np.column_stack([df["cost_usd"].to_numpy(float),
                            df["quality"].fillna(0.0).to_numpy(float)])


def _ratio(s: np.ndarray) -> np.ndarray:
    quality = s[..., 1].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(quality > 0, s[..., 0].sum(axis=-1) / quality, np.nan)


def _p95(s: np.ndarray) -> np.ndarray:
    return np.quantile(s, 0.95, axis=-1)


def _arm_summary(arm: str, df: pd.DataFrame) -> ArmSummary:
    ok = (df["outcome"] == "success").to_numpy(bool)
    latency = df["latency_ms"].to_numpy(float)
    return ArmSummary(
        arm=arm, n=len(df), quality=mean_ci(df["quality"].dropna().to_numpy(float)),
        success_rate=proportion_ci(int(ok.sum()), len(df)),
        latency_mean_ms=mean_ci(latency), latency_p95_ms=bootstrap_ci(latency, _p95),
        cost_per_request=mean_ci(df["cost_usd"].to_numpy(float)),
        cost_per_quality_point=bootstrap_ci(_cost_quality(df), _ratio),
    )


def _daily(df: pd.DataFrame, days: pd.DatetimeIndex, column: str) -> list[np.ndarray]:
    day = df["time"].dt.floor("1D")
    return [df.loc[(day == d).to_numpy(bool), column].dropna().to_numpy(float) for d in days]


def _pct(x: float) -> str:
    return f"{x:+.2f}".replace("+-", "-")


def _verdict(a: str, b: str, sa: ArmSummary, sb: ArmSummary, seq: SequentialResult,
             seq_ok: SequentialResult, more: int, mde: float) -> str:
    diff = seq.diff
    if seq.reject and not math.isnan(diff.estimate):
        winner, loser = (b, a) if diff.estimate > 0 else (a, b)
        sign = 1 if diff.estimate > 0 else -1
        lo, hi = sorted((sign * diff.low, sign * diff.high))
        cw = (sb if winner == b else sa).cost_per_request.estimate
        cl = (sa if winner == b else sb).cost_per_request.estimate
        if cl > 0 and not math.isnan(cw):
            change = (cl - cw) / cl
            cost = f"{abs(change):.0%} {'cheaper' if change >= 0 else 'more expensive'}"
        else:
            cost = "cost not comparable"
        line = (f"{winner} better on quality ({_pct(abs(diff.estimate))}, 95% CI "
                f"{_pct(lo)}..{_pct(hi)}) than {loser}, {cost}")
        if seq_ok.reject:
            pts = sign * seq_ok.diff.estimate * 100
            line += f", success rate {pts:+.1f} pts"
        return line + "; enough data"
    if more > 0:
        return (f"no difference yet between {a} and {b} (quality {_pct(diff.estimate)}): "
                f"need ~{more} more requests per arm")
    return (f"no difference in quality larger than {mde:.2f} between {a} and {b} "
            f"({_pct(diff.estimate)}, 95% CI {_pct(diff.low)}..{_pct(diff.high)}); enough data")


def _compare(a: str, b: str, da: pd.DataFrame, db: pd.DataFrame, sa: ArmSummary,
             sb: ArmSummary, *, mde: float, mde_rate: float, alpha: float,
             power: float) -> Comparison:
    qa, qb = da["quality"].dropna().to_numpy(float), db["quality"].dropna().to_numpy(float)
    oka = (da["outcome"] == "success").to_numpy(float)
    okb = (db["outcome"] == "success").to_numpy(float)
    days = pd.DatetimeIndex(sorted(set(pd.concat([da["time"], db["time"]]).dt.floor("1D"))))
    seq_q = msprt(_daily(da, days, "quality"), _daily(db, days, "quality"), tau=mde, alpha=alpha)
    ok_a = da.assign(ok=oka)
    ok_b = db.assign(ok=okb)
    seq_ok = msprt(_daily(ok_a, days, "ok"), _daily(ok_b, days, "ok"), tau=mde_rate,
                   alpha=alpha)
    pooled_sd = float(np.sqrt((qa.var(ddof=1) + qb.var(ddof=1)) / 2)) if min(
        len(qa), len(qb)) > 1 else 0.2
    needed = sample_size_per_arm(pooled_sd, mde, alpha=alpha, power=power)
    more = max(0, needed - min(len(da), len(db)))
    return Comparison(
        arm_a=a, arm_b=b, quality=welch_test(qa, qb),
        success_rate=two_proportion_test(int(oka.sum()), len(oka), int(okb.sum()), len(okb)),
        latency_mean_ms=welch_test(da["latency_ms"].to_numpy(float),
                                   db["latency_ms"].to_numpy(float)),
        latency_p95_ms=bootstrap_diff(da["latency_ms"].to_numpy(float),
                                      db["latency_ms"].to_numpy(float), _p95),
        cost_per_request=welch_test(da["cost_usd"].to_numpy(float),
                                    db["cost_usd"].to_numpy(float)),
        cost_per_quality_point=bootstrap_diff(_cost_quality(da), _cost_quality(db), _ratio),
        sequential_quality=seq_q, sequential_success=seq_ok, needed_per_arm=needed,
        more_needed_per_arm=more,
        verdict=_verdict(a, b, sa, sb, seq_q, seq_ok, more, mde),
    )


def analyse_experiment(requests: pd.DataFrame, experiment: str, *, mde: float = 0.03,
                       mde_rate: float = 0.03, alpha: float = 0.05, power: float = 0.8,
                       min_per_arm: int = 10) -> ExperimentReport:
    """Arms and pairwise comparisons of ``experiment`` on randomised traffic.

    ``mde``: the smallest quality difference worth finding (also the mSPRT's tau);
    ``mde_rate``: the same for the success rate.
    """
    if not (0 < alpha < 1 and 0 < power < 1 and mde > 0 and mde_rate > 0):
        raise ValueError(f"need 0 < alpha, power < 1 and mde > 0; got alpha={alpha}, "
                         f"power={power}, mde={mde}, mde_rate={mde_rate}")
    in_exp = requests[(requests["experiment"] == experiment).fillna(False).to_numpy(bool)]
    fair = randomised(requests, experiment)
    agent = in_exp["agent_type"].mode()
    groups = {str(arm): df for arm, df in fair.groupby("arm", sort=True)}
    arms = {arm: _arm_summary(arm, df) for arm, df in groups.items()}
    comparable = [arm for arm, df in groups.items() if len(df) >= min_per_arm]
    comparisons = tuple(
        _compare(a, b, groups[a], groups[b], arms[a], arms[b], mde=mde, mde_rate=mde_rate,
                 alpha=alpha, power=power)
        for a, b in combinations(comparable, 2))
    return ExperimentReport(
        name=experiment, agent_type=str(agent.iloc[0]) if len(agent) else None,
        arms=tuple(arms.values()), comparisons=comparisons,
        excluded=len(in_exp) - len(fair), mde=mde)


def analyse_experiments(requests: pd.DataFrame, **options: float) -> list[ExperimentReport]:
    """:func:`analyse_experiment` for every experiment in ``requests``, by name."""
    names = sorted(requests["experiment"].dropna().unique())
    return [analyse_experiment(requests, str(name), **options) for name in names]


def summarize(requests: pd.DataFrame, **options: float) -> list[str]:
    """The verdict lines of every experiment (the dashboard and ``amm report`` show these)."""
    return [line for rep in analyse_experiments(requests, **options) for line in rep.verdicts]
