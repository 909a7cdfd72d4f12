"""The report of a store (``amm report``), as text or JSON, and the numbers the dashboard
shares with it.

    print(report_text("data/amm.db"))
    doc = report_json("data/amm.db", alpha=0.05, mde=0.03, primary="quality")

The JSON schema (``"schema": "amm.report/1"``; fields are only ever added):

- ``options``: ``alpha``, ``mde``, ``primary``, ``guardrails``, ``threshold``, ``since``;
- ``experiments[]``: one entry per experiment, pair of arms and metric: ``name``,
  ``agent_type``, ``metric`` (quality, success_rate, latency_ms, cost_per_request),
  ``arms`` (``[{"name", "n", "estimate"}]``, a then b, n and estimates at the stopping
  look), ``difference`` (b - a: ``estimate``, ``low``, ``high``, ``level``: the
  always-valid interval), ``relative`` (the same over a's estimate), ``p_value``
  (always-valid, multiplicity adjusted), ``decision`` (winner / equivalent /
  continue), ``winner``, ``stopped_at`` (ISO time, null while undecided), ``margin``
  (the MDE in the metric's units), ``needed_per_arm``, ``more_needed_per_arm``,
  ``verdict`` (the pair's headline under the decision rule);
- ``degradations[]``: ``model``, ``agent_type``, ``metric`` (error_rate,
  p95_latency_ms, quality), ``change_at``, ``interval`` (``[low, high]`` of the change
  point), ``before``, ``after``, ``before_n``, ``after_n``, ``ratio``, ``threshold``,
  ``detected_at``.

Undefined numbers are ``null``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from analytics.ab import (
    DecisionRule,
    ExperimentReport,
    MetricResult,
    analyse_experiments,
    analyse_looks,
)
from analytics.cost import DEFAULT_DAILY_BUDGET_USD, BudgetStatus, budget_status
from analytics.degradation import Degradation, detect_degradations
from analytics.load import REQUEST_COLUMNS, StoreData, load_attempts, load_store
from analytics.pushdown import Pushdown, model_table_from_sums, open_source
from analytics.source import SpanSource, SQLiteSource
from analytics.stats import p50_latency_ms, p95_latency_ms

__all__ = [
    "SCHEMA",
    "Analysis",
    "Overview",
    "ReportOptions",
    "analyse_store",
    "model_table",
    "overview",
    "report_json",
    "report_text",
    "resolve_budget",
]

SCHEMA = "amm.report/1"
"""The JSON report's schema name (see the module docstring)."""


@dataclass(frozen=True, slots=True)
class ReportOptions:
    """What the report decides with: A/B alpha and MDE, the decision rule, the
    degradation threshold, and where the reported period starts."""

    alpha: float = 0.05
    mde: float = 0.03
    rule: DecisionRule = field(default_factory=DecisionRule)
    threshold: float = 0.8
    since: datetime | None = None


@dataclass(frozen=True, slots=True)
class Overview:
    """Headline numbers of a store."""

    requests: int
    success_rate: float  # answered (from a model or the cache) / requests
    cache_hit_rate: float
    failovers: int
    mean_quality: float
    total_cost_usd: float
    first: datetime | None
    last: datetime | None
    budget: BudgetStatus | None


def resolve_budget(data: StoreData, daily_budget: float | None = None) -> float:
    """Budget precedence: explicit argument > the store's budget > the seed's default."""
    if daily_budget is not None:
        return daily_budget
    return data.daily_budget if data.daily_budget is not None else DEFAULT_DAILY_BUDGET_USD


def _budget_day(ledger: pd.DataFrame, now: datetime | None) -> date | None:
    if ledger.empty:
        return None
    today = (now or datetime.now(UTC)).astimezone(UTC).date()
    # A store from another day (e.g. the synthetic demo) reports its own last day.
    return today if (ledger["day"] == today.isoformat()).any() else date.fromisoformat(
        str(ledger["day"].max()))


def overview(data: StoreData, *, daily_budget: float | None = None,
             now: datetime | None = None) -> Overview:
    """Requests, success and cache-hit rates, failovers, quality and spend vs budget."""
    r = data.requests
    n = len(r)
    day = _budget_day(data.ledger, now)
    budget = (budget_status(data.ledger, resolve_budget(data, daily_budget), day)
              if day is not None else None)
    return Overview(
        requests=n,
        success_rate=float((r["outcome"] != "error").mean()) if n else math.nan,
        cache_hit_rate=float(r["cache_hit"].mean()) if n else math.nan,
        failovers=len(data.failovers),
        mean_quality=float(r["quality"].mean()) if n else math.nan,
        total_cost_usd=float(data.ledger["cost_usd"].sum()),
        first=r["time"].min().floor("us").to_pydatetime() if n else None,
        last=r["time"].max().floor("us").to_pydatetime() if n else None,
        budget=budget,
    )


def model_table(data: StoreData) -> pd.DataFrame:
    """Per model: attempts, error rate, p50/p95 latency (of every attempt, failed ones
    included: :func:`analytics.stats.latency_quantiles`), mean quality, cost, and failovers
    away from it; most used first."""
    a = data.attempts
    if a.empty:
        return pd.DataFrame(columns=["model", "attempts", "error_rate", "p50_latency_ms",
                                     "p95_latency_ms", "quality", "cost_usd", "failovers_away"])
    table = a.assign(error=~a["success"]).groupby("model", observed=True).agg(
        attempts=("error", "size"), error_rate=("error", "mean"),
        p50_latency_ms=("latency_ms", p50_latency_ms),
        p95_latency_ms=("latency_ms", p95_latency_ms),
        quality=("quality", "mean"), cost_usd=("cost_usd", "sum"))
    away = data.failovers.groupby("from_model", observed=True).size()
    table["failovers_away"] = away.reindex(table.index).fillna(0).astype(int)
    return table.reset_index().sort_values("attempts", ascending=False, ignore_index=True)


@dataclass(frozen=True, slots=True)
class Analysis:
    """Everything the report shows, computed once (text, JSON and dashboard agree)."""

    data: StoreData
    options: ReportOptions
    experiments: tuple[ExperimentReport, ...]
    degradations: tuple[Degradation, ...]
    request_count: int | None = None  # set when pushed down (``data`` then holds no requests)
    cost_basis: str = "ledger"  # where cost came from: the exact ledger, or chat spans


def analyse_store(store: SpanSource | str | Path | StoreData,
                  options: ReportOptions | None = None) -> Analysis:
    """Load ``store`` (unless already loaded) and run the A/B and degradation analyses.

    With ``options.since`` the experiments use requests from then on; degradations are
    reported from then on, with older attempts as their reference.
    """
    opts = options or ReportOptions()
    data = store if isinstance(store, StoreData) else load_store(store)
    requests = data.requests
    if opts.since is not None:
        requests = requests[(requests["time"] >= opts.since).to_numpy(bool)]
    experiments = analyse_experiments(requests, rule=opts.rule, alpha=opts.alpha, mde=opts.mde)
    degradations = detect_degradations(data.attempts, threshold=opts.threshold,
                                       since=opts.since)
    return Analysis(data, opts, tuple(experiments), tuple(degradations))


def _source(store: SpanSource | str | Path) -> SpanSource:
    return open_source(store) if isinstance(store, str | Path) else store


def analyse_pushdown(source: Pushdown, options: ReportOptions | None = None) -> Analysis:
    """The report's analyses with the source's aggregates (no per-request rows): A/B from
    per-look sums; degradations still read attempt rows (their scans need the series)."""
    opts = options or ReportOptions()
    looks, agents = source.experiment_sums(opts.since)
    experiments = analyse_looks(looks, agents, rule=opts.rule, alpha=opts.alpha, mde=opts.mde)
    attempts = load_attempts(source)  # type: ignore[arg-type]
    degradations = detect_degradations(attempts, threshold=opts.threshold, since=opts.since)
    totals = source.totals()
    no_rows = pd.DataFrame({c: pd.Series(dtype=d) for c, d in REQUEST_COLUMNS.items()})
    data = StoreData(requests=no_rows, attempts=attempts, failovers=pd.DataFrame(),
                     ledger=pd.DataFrame(), daily_budget=None)
    return Analysis(data, opts, tuple(experiments), tuple(degradations),
                    request_count=int(totals["requests"].fillna(0).sum()),
                    cost_basis=source.cost_basis)


def _num(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _iso(t: datetime | None) -> str | None:
    return None if t is None else t.isoformat()


def _experiment_rows(rep: ExperimentReport) -> list[dict[str, object]]:
    rows: list[dict[str, object]] = []
    for c in rep.comparisons:
        for r in c.results:
            rows.append(_metric_row(rep, r, c.verdict))
    return rows


def _metric_row(rep: ExperimentReport, r: MetricResult, verdict: str) -> dict[str, object]:
    rel = r.relative
    return {
        "name": rep.name, "agent_type": rep.agent_type, "metric": r.metric,
        "arms": [{"name": r.arm_a, "n": r.n_a, "estimate": _num(r.mean_a)},
                 {"name": r.arm_b, "n": r.n_b, "estimate": _num(r.mean_b)}],
        "difference": {"estimate": _num(r.diff.estimate), "low": _num(r.diff.low),
                       "high": _num(r.diff.high), "level": r.level},
        "relative": {"estimate": _num(rel.estimate), "low": _num(rel.low),
                     "high": _num(rel.high)},
        "p_value": _num(r.p_value), "decision": r.decision, "winner": r.winner,
        "stopped_at": _iso(r.stopped_at), "margin": _num(r.margin),
        "needed_per_arm": r.needed_per_arm, "more_needed_per_arm": r.more_needed_per_arm,
        "verdict": verdict,
    }


def _degradation_row(d: Degradation) -> dict[str, object]:
    return {
        "model": d.model, "agent_type": d.agent_type, "metric": d.metric,
        "change_at": _iso(d.change_time), "interval": [_iso(d.change_low), _iso(d.change_high)],
        "before": _num(d.baseline), "after": _num(d.current), "before_n": d.baseline_n,
        "after_n": d.current_n, "ratio": _num(d.ratio), "threshold": d.threshold,
        "detected_at": _iso(d.detected_at),
    }


def report_json(store: SpanSource | str | Path | Analysis,
                options: ReportOptions | None = None) -> dict[str, object]:
    """The report as a JSON-ready dict (schema in the module docstring)."""
    if isinstance(store, Analysis):
        a = store
    else:
        src = _source(store)
        a = (analyse_pushdown(src, options) if isinstance(src, Pushdown)
             else analyse_store(src, options))
    o = a.options
    return {
        "schema": SCHEMA,
        "options": {"alpha": o.alpha, "mde": o.mde, "primary": o.rule.primary,
                    "guardrails": list(o.rule.guardrails), "threshold": o.threshold,
                    "since": _iso(o.since)},
        "requests": len(a.data.requests) if a.request_count is None else a.request_count,
        "cost_basis": a.cost_basis,
        "experiments": [row for rep in a.experiments for row in _experiment_rows(rep)],
        "degradations": [_degradation_row(d) for d in a.degradations],
    }


def report_text(store: SpanSource | str | Path, *, daily_budget: float | None = None,
                threshold: float = 0.8, now: datetime | None = None,
                options: ReportOptions | None = None) -> str:
    """The whole report as text: overview, models, degradations, experiments, cost."""
    opts = options or ReportOptions(threshold=threshold)
    src = _source(store)
    if isinstance(src, Pushdown) and not isinstance(src, SQLiteSource):
        return _pushdown_text(src, opts, daily_budget, now)
    data = load_store(src)
    ov = overview(data, daily_budget=daily_budget, now=now)
    lines = [f"amm report: {store}"]
    if ov.requests == 0:
        return "\n".join([*lines, "no requests recorded yet"])
    a = analyse_store(data, opts)
    lines += [
        f"  {ov.requests} requests from {ov.first:%Y-%m-%d %H:%M} to {ov.last:%Y-%m-%d %H:%M} UTC",
        f"  success rate {ov.success_rate:.1%}, cache hits {ov.cache_hit_rate:.1%}, "
        f"failovers {ov.failovers}, mean quality {ov.mean_quality:.3f}, "
        f"total cost ${ov.total_cost_usd:,.2f}",
        "", "Models:",
        f"  {'model':<22}{'attempts':>9}{'errors':>8}{'p95 ms':>9}{'quality':>9}{'cost $':>10}",
    ]
    for row in model_table(data).itertuples():
        lines.append(f"  {row.model:<22}{row.attempts:>9}{row.error_rate:>8.1%}"
                     f"{row.p95_latency_ms:>9.0f}{row.quality:>9.3f}{row.cost_usd:>10.2f}")
    lines += _findings_lines(a, opts)
    lines += ["", "Cost:", "  (from this store's cost ledger: exact, whatever the trace sampling)"]
    if ov.budget is None:
        lines.append("  no cost ledger entries")
    else:
        b = ov.budget
        lines.append(f"  {b.day.isoformat()}: ${b.spent_usd:,.2f} of ${b.budget_usd:,.2f} "
                     f"daily budget ({b.utilization:.0%})")
    return "\n".join(lines)


def _findings_lines(a: Analysis, opts: ReportOptions) -> list[str]:
    """The Degradations and Experiments sections, the same for every source."""
    lines = ["", f"Degradations (threshold {opts.threshold}):"]
    lines += [f"  {d.describe()}" for d in a.degradations] or ["  none detected"]
    lines += ["", "Experiments:",
              f"  (alpha {opts.alpha}, quality MDE {opts.mde}, primary {opts.rule.primary}, "
              f"guardrails {', '.join(opts.rule.guardrails) or 'none'})"]
    if not a.experiments:
        lines.append("  no experiments recorded")
    for rep in a.experiments:
        lines += [f"  {v}" for v in rep.verdicts]
        arms = ", ".join(f"{arm.arm} n={arm.n}" for arm in rep.arms)
        lines.append(f"    randomised requests: {arms}; {rep.excluded} left out")
        for c in rep.comparisons:
            lines += [f"    {r.describe()}" for r in c.results]
    return lines


def _pushdown_text(src: Pushdown, opts: ReportOptions, daily_budget: float | None,
                   now: datetime | None) -> str:
    """The text report from a source's aggregates (ClickHouse): same sections."""
    a = analyse_pushdown(src, opts)
    t = src.totals()
    lines = [f"amm report: {src}"]
    n = int(t["requests"].fillna(0).sum())
    if n == 0:
        return "\n".join([*lines, "no requests recorded yet"])
    first = pd.to_datetime(t["first"].dropna().min(), utc=True)
    last = pd.to_datetime(t["last"].dropna().max(), utc=True)
    q_n = float(t["quality_n"].sum())
    models = model_table_from_sums(src.model_sums())
    lines += [
        f"  {n} requests from {first:%Y-%m-%d %H:%M} to {last:%Y-%m-%d %H:%M} UTC",
        f"  success rate {t['answered'].sum() / n:.1%}, cache hits "
        f"{t['cache_hits'].sum() / n:.1%}, failovers {int(models['failovers_away'].sum())}, "
        f"mean quality {float(t['quality_s'].sum()) / q_n if q_n else math.nan:.3f}, "
        f"total cost ${float(t['cost_usd'].sum()):,.2f}",
        "", "Models:",
        f"  {'model':<22}{'attempts':>9}{'errors':>8}{'p95 ms':>9}{'quality':>9}{'cost $':>10}",
    ]
    for row in models.itertuples():
        lines.append(f"  {row.model:<22}{row.attempts:>9}{row.error_rate:>8.1%}"
                     f"{row.p95_latency_ms:>9.0f}{row.quality:>9.3f}{row.cost_usd:>10.2f}")
    lines += _findings_lines(a, opts)
    today = (now or datetime.now(UTC)).date().isoformat()
    day = today if today in set(t["day"]) else str(t["day"].max())
    spent = float(t.loc[t["day"] == day, "cost_usd"].sum())
    budget = daily_budget if daily_budget is not None else DEFAULT_DAILY_BUDGET_USD
    lines += ["", "Cost (from the chat spans' amm.cost_usd in ClickHouse; the exact ledger is "
                  "each host's store):",
              f"  {day}: ${spent:,.2f} of ${budget:,.2f} daily budget ({spent / budget:.0%})"]
    return "\n".join(lines)
