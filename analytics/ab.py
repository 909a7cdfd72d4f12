"""A/B experiments: every metric decided by one always-valid rule, and a headline verdict.

Only randomised traffic counts: requests of the experiment whose assigned arm was
actually used (``arm_honoured``) and that were not served from the cache (a cache
hit says nothing about the arm's model today).

Four metrics per request, each compared between every pair of arms by the same
sequential rule (:mod:`analytics.sequential`, daily looks):

- ``quality``: the overall score, **0 for a failed request** (a model that fails on
  the hard tasks must not look better for it);
- ``success_rate``: answered / requests;
- ``latency_ms``: mean latency per request;
- ``cost_per_request``: mean USD per request.

Each result has n per arm, the estimate, its always-valid confidence sequence and
p-value, and a decision: ``winner``, ``equivalent`` (only when the interval lies
inside +-MDE) or ``continue``, frozen at the look that decided. With k arms every
pair is tested at ``alpha / (k (k - 1) / 2)`` (Bonferroni; p-values are reported
adjusted), so the family-wise error over pairs stays at alpha per metric.

The headline verdict of a pair follows a :class:`DecisionRule`: a primary metric
(quality by default) and guardrails (success rate and cost): the primary's winner is
the winner unless a guardrail says it is significantly worse, and a decided
guardrail or other metric is always said, whatever the primary does.

    for line in summarize(load_requests("data/amm.db")):
        print(line)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from itertools import combinations

import numpy as np
import pandas as pd
from scipy.stats import t as _T

from analytics.sequential import (
    EQUIVALENT,
    WINNER,
    Cumulative,
    first_decision,
    needed_per_arm,
    sequential_path,
)
from analytics.stats import Interval, bootstrap_ci, latency_quantiles, mean_ci, proportion_ci

__all__ = [
    "AB_METRICS",
    "LOOK_COLUMNS",
    "ArmSummary",
    "Comparison",
    "DecisionRule",
    "ExperimentReport",
    "MetricResult",
    "analyse_experiment",
    "analyse_experiments",
    "analyse_looks",
    "arm_from_sums",
    "arm_looks",
    "randomised",
    "summarize",
]

AB_METRICS = ("quality", "success_rate", "latency_ms", "cost_per_request")
"""The metrics every experiment is decided on, in report order."""

_HIGHER_IS_BETTER = {"quality": True, "success_rate": True, "latency_ms": False,
                     "cost_per_request": False}
_LABELS = {"quality": "quality", "success_rate": "success rate", "latency_ms": "latency",
           "cost_per_request": "cost"}


@dataclass(frozen=True, slots=True)
class DecisionRule:
    """How the per-metric decisions of a pair combine into the headline verdict.

    ``primary`` decides the winner; a ``guardrails`` metric on which that winner is
    significantly worse blocks it (a trade-off is reported instead).

        DecisionRule(primary="quality", guardrails=("success_rate", "cost_per_request"))
    """

    primary: str = "quality"
    guardrails: tuple[str, ...] = ("success_rate", "cost_per_request")

    def __post_init__(self) -> None:
        unknown = {self.primary, *self.guardrails} - set(AB_METRICS)
        if unknown:
            raise ValueError(f"unknown metrics {sorted(unknown)}; expected some of {AB_METRICS}")


@dataclass(frozen=True, slots=True)
class ArmSummary:
    """One arm on randomised traffic (all of it, not frozen); every value with its 95% CI.

    ``quality`` counts a failed request as 0, like the A/B test.
    """

    arm: str
    n: int
    quality: Interval
    success_rate: Interval
    latency_mean_ms: Interval
    latency_p95_ms: Interval
    cost_per_request: Interval
    cost_per_quality_point: Interval


@dataclass(frozen=True, slots=True)
class MetricResult:
    """Arm ``b`` minus arm ``a`` on one metric, frozen at the look that decided it.

    ``diff`` is the estimate with its always-valid interval at level ``level``
    (``1 - alpha / pairs``); ``p_value`` is the always-valid p-value, Bonferroni
    adjusted; ``margin`` is the MDE in the metric's units (the equivalence margin);
    ``needed_per_arm`` the n per arm at which the sequential rule has 80% power at
    the MDE (``more_needed_per_arm`` the rest; 0 once decided).
    """

    metric: str
    arm_a: str
    arm_b: str
    n_a: int
    n_b: int
    mean_a: float
    mean_b: float
    diff: Interval
    p_value: float
    decision: str  # "winner" / "equivalent" / "continue"
    winner: str | None
    stopped_at: datetime | None
    looks: int
    margin: float
    level: float
    needed_per_arm: int
    more_needed_per_arm: int

    @property
    def relative(self) -> Interval:
        """``diff / mean_a`` (for cost and latency, printed as a percentage)."""
        if not self.mean_a:
            return Interval(math.nan, math.nan, math.nan)
        return Interval(self.diff.estimate / self.mean_a, self.diff.low / self.mean_a,
                        self.diff.high / self.mean_a)

    def describe(self) -> str:
        """``success rate: b better (+3.1 pts, 95% CS +1.2..+5.0 pts, p=0.001, n=400/410)``."""
        label = _LABELS[self.metric]
        if self.decision == "winner":
            loser = self.arm_a if self.winner == self.arm_b else self.arm_b
            return (f"{label}: {self.winner} better than {loser} ({_oriented(self)}, "
                    f"p={_fmt_p(self.p_value)}, n={self.n_a}/{self.n_b})")
        stats = (f"{self.arm_b} - {self.arm_a} {_fmt_diff(self)}, {self.level:.0%} CS "
                 f"{_fmt_interval(self)}, p={_fmt_p(self.p_value)}, n={self.n_a}/{self.n_b}")
        if self.decision == "equivalent":
            return f"{label}: equivalent within +-{_fmt_margin(self)} ({stats})"
        more = (f"; need ~{self.more_needed_per_arm} more per arm"
                if self.more_needed_per_arm > 0 else "")
        return f"{label}: no decision yet ({stats}{more})"


@dataclass(frozen=True, slots=True)
class Comparison:
    """Arm ``b`` minus arm ``a`` on every metric, and the pair's headline verdict."""

    arm_a: str
    arm_b: str
    results: tuple[MetricResult, ...]
    verdict: str

    def metric(self, name: str) -> MetricResult:
        """The result on ``name`` (one of :data:`AB_METRICS`)."""
        for r in self.results:
            if r.metric == name:
                return r
        raise KeyError(name)


@dataclass(frozen=True, slots=True)
class ExperimentReport:
    """One experiment: its arms, the pairwise comparisons and the verdict lines."""

    name: str
    agent_type: str | None
    arms: tuple[ArmSummary, ...]
    comparisons: tuple[Comparison, ...]
    excluded: int  # experiment requests left out: arm not honoured or cache hits
    mde: float
    alpha: float = 0.05
    rule: DecisionRule = field(default_factory=DecisionRule)

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


def metric_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """Per-request values of ``metric`` (NaN where undefined: a success with no score)."""
    failed = (df["outcome"] == "error").to_numpy(bool)
    if metric == "quality":
        return df["quality"].astype(float).mask(failed & df["quality"].isna(), 0.0)
    if metric == "success_rate":
        return pd.Series((~failed).astype(float), index=df.index)
    if metric == "latency_ms":
        return df["latency_ms"].astype(float)
    if metric == "cost_per_request":
        return df["cost_usd"].astype(float)
    raise ValueError(f"unknown metric {metric!r}; expected one of {AB_METRICS}")


def _cost_quality(df: pd.DataFrame) -> np.ndarray:
    return np.column_stack([df["cost_usd"].to_numpy(float),
                            metric_values(df, "quality").fillna(0.0).to_numpy(float)])


def _ratio(s: np.ndarray) -> np.ndarray:
    quality = s[..., 1].sum(axis=-1)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(quality > 0, s[..., 0].sum(axis=-1) / quality, np.nan)


def _p95(s: np.ndarray) -> np.ndarray:
    return latency_quantiles(s, 0.95)


def _arm_summary(arm: str, df: pd.DataFrame) -> ArmSummary:
    ok = (df["outcome"] != "error").to_numpy(bool)
    latency = df["latency_ms"].to_numpy(float)
    return ArmSummary(
        arm=arm, n=len(df), quality=mean_ci(metric_values(df, "quality").dropna().to_numpy()),
        success_rate=proportion_ci(int(ok.sum()), len(df)),
        latency_mean_ms=mean_ci(latency),
        latency_p95_ms=bootstrap_ci(latency, _p95, n_boot=1000),
        cost_per_request=mean_ci(df["cost_usd"].to_numpy(float)),
        cost_per_quality_point=bootstrap_ci(_cost_quality(df), _ratio, n_boot=1000),
    )


@dataclass(frozen=True, slots=True)
class _Settings:
    mde: float
    mde_rate: float
    mde_relative: float
    alpha: float  # per pair (already divided by the number of pairs)
    pairs: int
    power: float


def _margin(metric: str, s: _Settings, first_mean: float) -> float:
    if metric == "quality":
        return s.mde
    if metric == "success_rate":
        return s.mde_rate
    # Cost and latency: the MDE is relative to the first look's level, fixed from then
    # on so that later data cannot move a decision already taken.
    return s.mde_relative * abs(first_mean) if first_mean else math.nan


LOOK_COLUMNS = ("experiment", "arm", "day", "last", *(f"{m}_{k}" for m in AB_METRICS
                                                       for k in ("n", "s", "q")))
"""Sufficient statistics of randomised traffic per experiment, arm and daily look: ``day``
(UTC ``YYYY-MM-DD``), ``last`` (the look's newest request, UTC), and per metric the
count, sum and sum of squares of its defined values. A source that pushes the A/B work
down (``analytics.pushdown``) returns this frame; :func:`arm_looks` makes it from rows."""


def arm_looks(requests: pd.DataFrame) -> pd.DataFrame:
    """:data:`LOOK_COLUMNS` of every experiment's randomised requests (pandas form)."""
    frames = []
    for name in sorted(requests["experiment"].dropna().unique()):
        fair = randomised(requests, str(name))
        if fair.empty:
            continue
        cols: dict[str, object] = {"experiment": str(name), "arm": fair["arm"].astype(str),
                                   "day": fair["time"].dt.strftime("%Y-%m-%d"),
                                   "last": fair["time"]}
        for m in AB_METRICS:
            v = metric_values(fair, m)
            cols |= {f"{m}_n": v.notna().astype(float), f"{m}_s": v.fillna(0.0),
                     f"{m}_q": np.square(v.fillna(0.0))}
        frames.append(pd.DataFrame(cols).groupby(["experiment", "arm", "day"], as_index=False)
                      .agg({"last": "max", **{c: "sum" for c in LOOK_COLUMNS[4:]}}))
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in LOOK_COLUMNS})
    return pd.concat(frames, ignore_index=True)[list(LOOK_COLUMNS)]


def _compare_metric(metric: str, a: str, b: str, la: pd.DataFrame, lb: pd.DataFrame,
                    days: list[str], ends: list[datetime], s: _Settings) -> MetricResult:
    def cum(looks: pd.DataFrame) -> Cumulative:
        by_day = looks.set_index("day").reindex(days)
        n, sm, q = (by_day[f"{metric}_{k}"].fillna(0.0).to_numpy(float) for k in "nsq")
        return Cumulative(np.cumsum(n), np.cumsum(sm), np.cumsum(q))

    ca, cb = cum(la), cum(lb)
    valid = np.flatnonzero((ca.n >= 2) & (cb.n >= 2))
    first = int(valid[0]) if len(valid) else 0
    first_mean = float((ca.s[first] + cb.s[first]) / max(ca.n[first] + cb.n[first], 1))
    margin = _margin(metric, s, first_mean)
    if not len(valid) or not margin > 0:  # no data, or a metric that is 0 everywhere
        return _undecided(metric, a, b, ca.n[-1], cb.n[-1], s, margin)
    binary = metric == "success_rate"
    path = sequential_path(ca, cb, tau=margin, alpha=s.alpha, binary=binary)
    stop = first_decision(path, margin=margin)
    i, code = int(stop.look), int(stop.decision)
    d, half = float(path.diff[i]), float(path.half[i])
    higher = _HIGHER_IS_BETTER[metric]
    winner = ((b if (d > 0) == higher else a) if code == WINNER else None)
    sd = math.sqrt(float(path.var[i]) / (1 / ca.n[i] + 1 / cb.n[i]))  # per request
    needed = needed_per_arm(sd, margin, alpha=s.alpha, power=s.power)
    n_a, n_b = int(ca.n[i]), int(cb.n[i])
    decided = code != 0
    return MetricResult(
        metric=metric, arm_a=a, arm_b=b, n_a=n_a, n_b=n_b,
        mean_a=float(path.mean_a[i]), mean_b=float(path.mean_b[i]),
        diff=Interval(d, d - half, d + half),
        p_value=min(1.0, float(path.p_value[i]) * s.pairs),
        decision="winner" if code == WINNER else "equivalent" if code == EQUIVALENT else "continue",
        winner=winner, stopped_at=ends[i] if decided else None, looks=i + 1, margin=margin,
        level=1 - s.alpha, needed_per_arm=needed,
        more_needed_per_arm=0 if decided else max(0, needed - min(n_a, n_b)))


def _undecided(metric: str, a: str, b: str, n_a: float, n_b: float, s: _Settings,
               margin: float) -> MetricResult:
    nan = math.nan
    return MetricResult(metric=metric, arm_a=a, arm_b=b, n_a=int(n_a), n_b=int(n_b),
                        mean_a=nan, mean_b=nan, diff=Interval(nan, nan, nan), p_value=1.0,
                        decision="continue", winner=None, stopped_at=None, looks=0,
                        margin=margin, level=1 - s.alpha, needed_per_arm=-1,
                        more_needed_per_arm=0)


def _compare(a: str, b: str, la: pd.DataFrame, lb: pd.DataFrame, s: _Settings,
             rule: DecisionRule) -> Comparison:
    both = pd.concat([la, lb])
    last = both.groupby("day")["last"].max().sort_index()
    days = [str(d) for d in last.index]
    ends = [pd.Timestamp(t).tz_convert("UTC").floor("us").to_pydatetime() for t in last]
    results = tuple(_compare_metric(m, a, b, la, lb, days, ends, s) for m in AB_METRICS)
    return Comparison(arm_a=a, arm_b=b, results=results, verdict=_verdict(a, b, results, rule))


# --- The words -------------------------------------------------------------------------


def _sign(x: float, fmt: str) -> str:
    return format(x, "+" + fmt).replace("+-", "-")


def _scale(r: MetricResult) -> tuple[float, str, str]:
    return {"quality": (1.0, ".3f", ""), "success_rate": (100.0, ".1f", " pts"),
            "latency_ms": (1.0, ".0f", " ms"), "cost_per_request": (1.0, ".6f", " USD")}[r.metric]


def _fmt_diff(r: MetricResult) -> str:
    k, fmt, unit = _scale(r)
    text = f"{_sign(r.diff.estimate * k, fmt)}{unit}"
    if r.metric in ("latency_ms", "cost_per_request"):
        text += f" ({_sign(r.relative.estimate * 100, '.1f')}%)"
    return text


def _fmt_interval(r: MetricResult) -> str:
    k, fmt, unit = _scale(r)
    text = f"{_sign(r.diff.low * k, fmt)}..{_sign(r.diff.high * k, fmt)}{unit}"
    if r.metric in ("latency_ms", "cost_per_request"):
        rel = r.relative
        text += f" ({_sign(rel.low * 100, '.1f')}%..{_sign(rel.high * 100, '.1f')}%)"
    return text


def _fmt_margin(r: MetricResult) -> str:
    k, fmt, unit = _scale(r)
    return f"{format(r.margin * k, fmt)}{unit}"


def _fmt_p(p: float) -> str:
    return f"{p:.2g}" if p >= 1e-4 else f"{p:.1e}"


def _oriented(r: MetricResult) -> str:
    """The winner minus the loser, with its interval (relative to the loser's level)."""
    k, fmt, unit = _scale(r)
    sign = 1 if r.winner == r.arm_b else -1
    lo, hi = sorted((sign * r.diff.low, sign * r.diff.high))
    est = sign * r.diff.estimate
    text = (f"{_sign(est * k, fmt)}{unit}, {r.level:.0%} CS "
            f"{_sign(lo * k, fmt)}..{_sign(hi * k, fmt)}{unit}")
    base = r.mean_a if sign == 1 else r.mean_b
    if r.metric in ("latency_ms", "cost_per_request") and base:
        text += (f"; {_sign(est / base * 100, '.1f')}%, "
                 f"{_sign(lo / base * 100, '.1f')}%..{_sign(hi / base * 100, '.1f')}%")
    return text


def _verdict(a: str, b: str, results: tuple[MetricResult, ...], rule: DecisionRule) -> str:
    by = {r.metric: r for r in results}
    p = by[rule.primary]
    label = _LABELS[rule.primary]
    others = [r for r in results if r.metric != rule.primary and r.decision != "continue"]
    tail = "".join(f"; {r.describe()}" for r in others)
    if p.decision == "winner":
        loser = a if p.winner == b else b
        head = (f"{p.winner} better on {label} ({_oriented(p)}, p={_fmt_p(p.p_value)}) "
                f"than {loser}")
        harmed = [by[g] for g in rule.guardrails
                  if by[g].decision == "winner" and by[g].winner == loser]
        if harmed:
            names = ", ".join(_LABELS[g.metric] for g in harmed)
            return f"trade-off, no overall winner: {head} but worse on {names}{tail}"
        return f"{head}{tail}"
    if p.decision == "equivalent":
        return (f"{a} and {b} equivalent on {label} within +-{_fmt_margin(p)} "
                f"({b} - {a} {_fmt_diff(p)}, {p.level:.0%} CS {_fmt_interval(p)}){tail}")
    more = (f"; need ~{p.more_needed_per_arm} more requests per arm"
            if p.more_needed_per_arm > 0 else "")
    return (f"no decision yet on {label} between {a} and {b} ({b} - {a} {_fmt_diff(p)}, "
            f"{p.level:.0%} CS {_fmt_interval(p)}, n={p.n_a}/{p.n_b}{more}){tail}")


# --- Entry points ----------------------------------------------------------------------


def _settings(mde: float, mde_rate: float, mde_relative: float, alpha: float, power: float,
              pairs: int) -> _Settings:
    if not (0 < alpha < 1 and 0 < power < 1 and mde > 0 and mde_rate > 0
            and mde_relative > 0):
        raise ValueError(f"need 0 < alpha, power < 1 and mde > 0; got alpha={alpha}, "
                         f"power={power}, mde={mde}, mde_rate={mde_rate}, "
                         f"mde_relative={mde_relative}")
    return _Settings(mde=mde, mde_rate=mde_rate, mde_relative=mde_relative,
                     alpha=alpha / max(pairs, 1), pairs=max(pairs, 1), power=power)


def _comparisons(looks: pd.DataFrame, min_per_arm: int, rule: DecisionRule,
                 **options: float) -> tuple[Comparison, ...]:
    by_arm = {str(arm): df for arm, df in looks.groupby("arm", sort=True)}
    comparable = [arm for arm, df in by_arm.items()
                  if df["success_rate_n"].sum() >= min_per_arm]
    pairs = list(combinations(comparable, 2))
    s = _settings(pairs=len(pairs), **options)
    return tuple(_compare(a, b, by_arm[a], by_arm[b], s, rule) for a, b in pairs)


def analyse_experiment(requests: pd.DataFrame, experiment: str, *, mde: float = 0.03,
                       mde_rate: float = 0.03, mde_relative: float = 0.10,
                       alpha: float = 0.05, power: float = 0.8,
                       rule: DecisionRule | None = None,
                       min_per_arm: int = 10) -> ExperimentReport:
    """Arms and pairwise comparisons of ``experiment`` on randomised traffic.

    ``mde``: the smallest quality difference worth finding (the mSPRT's tau and the
    equivalence margin); ``mde_rate``: the same for the success rate (absolute);
    ``mde_relative``: the same for latency and cost, as a fraction of their level.
    """
    options = {"mde": mde, "mde_rate": mde_rate, "mde_relative": mde_relative,
               "alpha": alpha, "power": power}
    _settings(pairs=1, **options)  # reject bad options even without traffic
    rule = rule or DecisionRule()
    in_exp = requests[(requests["experiment"] == experiment).fillna(False).to_numpy(bool)]
    fair = randomised(requests, experiment)
    agent = in_exp["agent_type"].mode()
    arms = {str(arm): _arm_summary(str(arm), df) for arm, df in fair.groupby("arm", sort=True)}
    looks = arm_looks(in_exp)
    return ExperimentReport(
        name=experiment, agent_type=str(agent.iloc[0]) if len(agent) else None,
        arms=tuple(arms.values()),
        comparisons=_comparisons(looks, min_per_arm, rule, **options),
        excluded=len(in_exp) - len(fair), mde=mde, alpha=alpha, rule=rule)


def arm_from_sums(arm: str, looks: pd.DataFrame) -> ArmSummary:
    """An arm's summary from its looks' sums (a pushed-down source: no per-request rows).

    Means and rates come with the same intervals as from rows; the p95 latency and the
    cost per quality point need rows to bootstrap, so only the ratio's estimate is
    given and the p95 is left undefined."""
    t = looks[[c for c in LOOK_COLUMNS[4:]]].sum()

    def moments(m: str) -> Interval:
        n, sm, q = float(t[f"{m}_n"]), float(t[f"{m}_s"]), float(t[f"{m}_q"])
        if n == 0:
            return Interval(math.nan, math.nan, math.nan)
        mean = sm / n
        if n < 2:
            return Interval(mean, math.nan, math.nan)
        sd = math.sqrt(max(q - n * mean * mean, 0.0) / (n - 1))
        half = float(_T.ppf(0.975, n - 1)) * sd / math.sqrt(n)
        return Interval(mean, mean - half, mean + half)

    n = int(t["success_rate_n"])
    quality_sum = float(t["quality_s"])
    nan = Interval(math.nan, math.nan, math.nan)
    return ArmSummary(
        arm=arm, n=n, quality=moments("quality"),
        success_rate=proportion_ci(round(float(t["success_rate_s"])), n),
        latency_mean_ms=moments("latency_ms"), latency_p95_ms=nan,
        cost_per_request=moments("cost_per_request"),
        cost_per_quality_point=Interval(
            float(t["cost_per_request_s"]) / quality_sum if quality_sum > 0 else math.nan,
            math.nan, math.nan))


def analyse_looks(looks: pd.DataFrame, agents: pd.DataFrame, *,
                  rule: DecisionRule | None = None, mde: float = 0.03,
                  mde_rate: float = 0.03, mde_relative: float = 0.10, alpha: float = 0.05,
                  power: float = 0.8, min_per_arm: int = 10) -> list[ExperimentReport]:
    """Every experiment decided from sufficient statistics (a source's push-down).

    ``looks``: :data:`LOOK_COLUMNS`; ``agents``: ``experiment, agent_type, requests,
    randomised`` (all of the experiment's requests per agent type, and how many of them
    were randomised), for the agent type and the excluded count."""
    options = {"mde": mde, "mde_rate": mde_rate, "mde_relative": mde_relative,
               "alpha": alpha, "power": power}
    _settings(pairs=1, **options)
    rule = rule or DecisionRule()
    reports = []
    for name in sorted(agents["experiment"].dropna().unique()):
        mine = looks[(looks["experiment"] == name).to_numpy(bool)]
        who = agents[(agents["experiment"] == name).to_numpy(bool)]
        # pandas' mode(): the most frequent agent type, the first by name on a tie.
        top = who.sort_values(["requests", "agent_type"], ascending=[False, True])
        arms = tuple(arm_from_sums(str(arm), df) for arm, df in mine.groupby("arm", sort=True))
        reports.append(ExperimentReport(
            name=str(name), agent_type=str(top["agent_type"].iloc[0]) if len(top) else None,
            arms=arms, comparisons=_comparisons(mine, min_per_arm, rule, **options),
            excluded=int(who["requests"].sum() - who["randomised"].sum()), mde=mde,
            alpha=alpha, rule=rule))
    return reports


def analyse_experiments(requests: pd.DataFrame, *, rule: DecisionRule | None = None,
                        **options: float) -> list[ExperimentReport]:
    """:func:`analyse_experiment` for every experiment in ``requests``, by name."""
    names = sorted(requests["experiment"].dropna().unique())
    return [analyse_experiment(requests, str(name), rule=rule, **options)  # type: ignore[arg-type]
            for name in names]


def summarize(requests: pd.DataFrame, *, rule: DecisionRule | None = None,
              **options: float) -> list[str]:
    """The verdict lines of every experiment (the dashboard and ``amm report`` show these)."""
    return [line for rep in analyse_experiments(requests, rule=rule, **options)
            for line in rep.verdicts]
