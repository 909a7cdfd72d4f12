"""Spend from the cost ledger (exact, unlike sampled spans) against the daily budget.

    ledger = load_ledger("data/amm.db")
    spend_by(ledger, "model_id")          # total per model
    daily_spend(ledger, daily_budget=25)  # per day with utilisation
    budget_status(ledger, 25, day=date(2026, 11, 24))
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import pandas as pd

__all__ = [
    "DEFAULT_DAILY_BUDGET_USD",
    "BudgetStatus",
    "budget_status",
    "daily_spend",
    "spend_by",
    "spend_by_day_and",
]

DEFAULT_DAILY_BUDGET_USD = 100.0
"""The seed's ``CostTracker(daily_budget=100.0)`` default, used when none is known."""

_DIMENSIONS = ("day", "model_id", "agent_type", "task_id")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """One day's spend against the daily budget."""

    day: date
    spent_usd: float
    budget_usd: float

    @property
    def utilization(self) -> float:
        """Spent / budget (1.0 = the whole budget)."""
        return self.spent_usd / self.budget_usd if self.budget_usd > 0 else float("inf")

    @property
    def remaining_usd(self) -> float:
        """Budget left today (negative when over)."""
        return self.budget_usd - self.spent_usd


def _check(by: str) -> None:
    if by not in _DIMENSIONS:
        raise ValueError(f"cannot group spend by {by!r}; expected one of {_DIMENSIONS}")


def spend_by(ledger: pd.DataFrame, by: str) -> pd.DataFrame:
    """Total cost, tokens and entries per ``by`` (day, model_id, agent_type or task_id),
    most expensive first."""
    _check(by)
    out = ledger.groupby(by, observed=True).agg(
        cost_usd=("cost_usd", "sum"), input_tokens=("input_tokens", "sum"),
        output_tokens=("output_tokens", "sum"), entries=("cost_usd", "size")).reset_index()
    return out.sort_values(["cost_usd", by], ascending=[False, True], kind="stable",
                           ignore_index=True)


def spend_by_day_and(ledger: pd.DataFrame, by: str) -> pd.DataFrame:
    """Cost per day and ``by`` (long form, for stacked charts)."""
    _check(by)
    return (ledger.groupby(["day", by], observed=True)["cost_usd"].sum()
            .reset_index().sort_values(["day", by], ignore_index=True))


def daily_spend(ledger: pd.DataFrame, daily_budget: float) -> pd.DataFrame:
    """Per day: cost_usd, budget_usd, utilization (cost / budget) and over_budget."""
    if daily_budget <= 0:
        raise ValueError(f"daily budget must be > 0, got {daily_budget}")
    out = ledger.groupby("day", observed=True)["cost_usd"].sum().reset_index()
    out = out.sort_values("day", ignore_index=True)
    out["budget_usd"] = float(daily_budget)
    out["utilization"] = out["cost_usd"] / daily_budget
    out["over_budget"] = out["cost_usd"] > daily_budget
    return out


def budget_status(ledger: pd.DataFrame, daily_budget: float,
                  day: date | None = None) -> BudgetStatus:
    """Spend of ``day`` (default: the ledger's last day) against ``daily_budget``."""
    if daily_budget <= 0:
        raise ValueError(f"daily budget must be > 0, got {daily_budget}")
    if day is None:
        day = date.fromisoformat(str(ledger["day"].max())) if len(ledger) else date.today()
    spent = float(ledger.loc[(ledger["day"] == day.isoformat()).to_numpy(bool), "cost_usd"].sum())
    return BudgetStatus(day=day, spent_usd=spent, budget_usd=float(daily_budget))
