"""Spend from the ledger against the budget, and the text report."""

from __future__ import annotations

from datetime import date

import pytest

from analytics.cost import budget_status, daily_spend, spend_by, spend_by_day_and
from analytics.report import model_table, overview, report_text


def test_spend_by_every_dimension_adds_up_to_the_ledger(synthetic_data):
    total = synthetic_data.ledger["cost_usd"].sum()
    for by in ("day", "model_id", "agent_type", "task_id"):
        table = spend_by(synthetic_data.ledger, by)
        assert table["cost_usd"].sum() == pytest.approx(total)
        assert table["cost_usd"].is_monotonic_decreasing
    assert spend_by_day_and(synthetic_data.ledger, "model_id")["cost_usd"].sum() == pytest.approx(
        total)
    with pytest.raises(ValueError, match="cannot group spend by"):
        spend_by(synthetic_data.ledger, "provider")


def test_daily_spend_against_budget(synthetic_data):
    daily = daily_spend(synthetic_data.ledger, daily_budget=10.0)
    assert len(daily) == 7
    assert (daily["utilization"] == daily["cost_usd"] / 10.0).all()
    assert (daily["over_budget"] == (daily["cost_usd"] > 10.0)).all()
    with pytest.raises(ValueError, match="daily budget"):
        daily_spend(synthetic_data.ledger, 0)


def test_budget_status_of_one_day(synthetic_truth, synthetic_data):
    day = synthetic_truth.start.date()
    status = budget_status(synthetic_data.ledger, 25.0, day)
    spent = synthetic_data.ledger.loc[synthetic_data.ledger["day"] == day.isoformat(),
                                      "cost_usd"].sum()
    assert status.spent_usd == pytest.approx(spent)
    assert status.utilization == pytest.approx(spent / 25.0)
    assert status.remaining_usd == pytest.approx(25.0 - spent)
    assert budget_status(synthetic_data.ledger, 25.0).day == date(2026, 11, 24)


def test_overview_numbers(synthetic_truth, synthetic_data):
    ov = overview(synthetic_data)
    r = synthetic_data.requests
    assert ov.requests == synthetic_truth.requests
    assert ov.cache_hit_rate == pytest.approx(r["cache_hit"].mean())
    assert ov.failovers == len(synthetic_data.failovers)
    assert ov.budget is not None and ov.budget.budget_usd == synthetic_truth.daily_budget_usd
    assert overview(synthetic_data, daily_budget=50.0).budget.budget_usd == 50.0


def test_model_table_has_every_model(synthetic_truth, synthetic_data):
    table = model_table(synthetic_data)
    assert set(table["model"]) == set(synthetic_truth.models)
    assert table["attempts"].sum() == len(synthetic_data.attempts)


def test_report_text_has_every_section(synthetic_truth):
    text = report_text(synthetic_truth.path)
    assert f"{synthetic_truth.requests} requests" in text
    for section in ("Models:", "Degradations (threshold 0.8):", "Experiments:", "Cost:"):
        assert section in text
    assert f"{synthetic_truth.degraded_model}: p95_latency_ms" in text
    assert (f"{synthetic_truth.experiment}: {synthetic_truth.treatment_arm} better on quality"
            in text)
    assert "of $25.00 daily budget" in text
