"""The text report of a store (``amm report``) and the numbers the dashboard shares with it.

    print(report_text("data/amm.db"))
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path

import pandas as pd

from analytics.ab import summarize
from analytics.cost import DEFAULT_DAILY_BUDGET_USD, BudgetStatus, budget_status
from analytics.degradation import detect_degradations
from analytics.load import StoreData, load_store
from analytics.source import SpanSource

__all__ = ["Overview", "model_table", "overview", "report_text", "resolve_budget"]


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
    """Per model: attempts, error rate, p50/p95 latency (successful attempts), mean
    quality, cost, and failovers away from it; most used first."""
    a = data.attempts
    if a.empty:
        return pd.DataFrame(columns=["model", "attempts", "error_rate", "p50_latency_ms",
                                     "p95_latency_ms", "quality", "cost_usd", "failovers_away"])
    ok_latency = a["latency_ms"].where(a["success"])
    table = a.assign(error=~a["success"], ok_latency=ok_latency).groupby(
        "model", observed=True).agg(
        attempts=("error", "size"), error_rate=("error", "mean"),
        p50_latency_ms=("ok_latency", "median"),
        p95_latency_ms=("ok_latency", lambda s: s.quantile(0.95)),
        quality=("quality", "mean"), cost_usd=("cost_usd", "sum"))
    away = data.failovers.groupby("from_model", observed=True).size()
    table["failovers_away"] = away.reindex(table.index).fillna(0).astype(int)
    return table.reset_index().sort_values("attempts", ascending=False, ignore_index=True)


def report_text(store: SpanSource | str | Path, *, daily_budget: float | None = None,
                threshold: float = 0.8, now: datetime | None = None) -> str:
    """The whole report as text: overview, models, degradations, experiments, cost."""
    data = load_store(store)
    ov = overview(data, daily_budget=daily_budget, now=now)
    lines = [f"amm report: {store}"]
    if ov.requests == 0:
        return "\n".join([*lines, "no requests recorded yet"])
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
    degradations = detect_degradations(data.attempts, threshold=threshold)
    lines += ["", f"Degradations (threshold {threshold}):"]
    lines += [f"  {d.describe()}" for d in degradations] or ["  none detected"]
    lines += ["", "Experiments:"]
    lines += [f"  {v}" for v in summarize(data.requests)] or ["  no experiments recorded"]
    lines += ["", "Cost:"]
    if ov.budget is None:
        lines.append("  no cost ledger entries")
    else:
        b = ov.budget
        lines.append(f"  {b.day.isoformat()}: ${b.spent_usd:,.2f} of ${b.budget_usd:,.2f} "
                     f"daily budget ({b.utilization:.0%})")
    return "\n".join(lines)
