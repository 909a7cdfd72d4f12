"""The A/B report's decisions, one defect of the audit pinned per test.

Each test builds randomised traffic with a known truth and reads the decision the
report prints: a success-only difference is reported, a cost difference comes with
its interval, no equivalence without the interval inside +-MDE, failures count as
quality 0, several arms are corrected for multiplicity, the estimate is frozen at
the stopping time, and "need ~N more" keeps its promised power.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from analytics.ab import DecisionRule, analyse_experiment, summarize
from analytics.load import load_requests
from analytics.sequential import (
    EQUIVALENT,
    WINNER,
    Cumulative,
    first_decision,
    needed_per_arm,
    sequential_path,
)
from analytics.synthetic import write_synthetic_store
from analytics.validation import simulate_ab

START = datetime(2026, 3, 1, tzinfo=UTC)


def _arm(rng, arm, n, *, days=10, success=0.98, quality=0.8, q_sd=0.1, cost=0.01,
         latency=1000.0, fail_hardest=0.0, day0=0):
    q = np.clip(rng.normal(quality, q_sd, n), 0, 1)
    ok = rng.random(n) < success
    if fail_hardest:  # the arm fails on the hardest tasks (lowest scores) instead
        ok = q > np.quantile(q, fail_hardest)
    t = [START + timedelta(days=day0 + int(d), seconds=int(s))
         for d, s in zip(rng.integers(0, days, n), rng.integers(0, 86_000, n), strict=True)]
    return pd.DataFrame({
        "time": pd.to_datetime(t, utc=True), "experiment": "exp", "arm": arm,
        "arm_honoured": True, "cache_hit": False, "agent_type": "implementation",
        "outcome": np.where(ok, "success", "error"),
        "quality": np.where(ok, q, np.nan),
        "cost_usd": cost * rng.lognormal(-0.125, 0.5, n),
        "latency_ms": latency * rng.lognormal(0, 0.3, n)})


def _frame(*arms):
    return pd.concat(arms, ignore_index=True).sort_values("time", ignore_index=True)


def test_a_success_only_difference_is_reported_in_the_verdict():
    rng = np.random.default_rng(1)
    # Same expected quality (failures count 0: 0.98 x 0.80 = 0.88 x 0.891), 10 points
    # apart on success: the verdict must say so even though quality does not win.
    df = _frame(_arm(rng, "a", 2000, success=0.98, quality=0.80),
                _arm(rng, "b", 2000, success=0.88, quality=0.891))
    [c] = analyse_experiment(df, "exp").comparisons
    ok = c.metric("success_rate")
    assert ok.decision == "winner" and ok.winner == "a" and ok.p_value < 1e-3
    assert c.metric("quality").decision != "winner"
    assert "success rate: a better than b (+" in c.verdict


def test_a_cost_difference_is_reported_with_its_interval():
    rng = np.random.default_rng(2)
    df = _frame(_arm(rng, "a", 1500, cost=0.02), _arm(rng, "b", 1500, cost=0.01))
    [c] = analyse_experiment(df, "exp").comparisons
    cost = c.metric("cost_per_request")
    assert cost.decision == "winner" and cost.winner == "b"
    assert cost.diff.low <= -0.01 <= cost.diff.high  # the interval covers the truth
    assert "cost: b better than a (-0.0" in c.verdict and "95% CS" in c.verdict
    assert "%" in c.verdict  # relative change with its own interval


def test_identical_costs_are_never_called_cheaper():
    claims = 0
    for seed in range(20):
        rng = np.random.default_rng(100 + seed)
        df = _frame(_arm(rng, "a", 400), _arm(rng, "b", 400))
        claims += "cost: " in analyse_experiment(df, "exp").comparisons[0].verdict.split(
            "equivalent")[0] and "better than" in analyse_experiment(
            df, "exp").comparisons[0].metric("cost_per_request").describe()
    assert claims <= 2


def test_no_equivalence_claim_when_the_interval_leaves_the_mde():
    rng = np.random.default_rng(3)
    df = _frame(_arm(rng, "a", 300, q_sd=0.2), _arm(rng, "b", 300, q_sd=0.2, quality=0.81))
    [c] = analyse_experiment(df, "exp", mde=0.03).comparisons
    q = c.metric("quality")
    assert q.diff.high - q.diff.low > 0.06  # the interval is wider than +-MDE
    assert q.decision == "continue" and "equivalent" not in c.verdict.split(";")[0]
    # And over many runs with a true effect of +0.04 (MDE 0.03): never "equivalent".
    cell = simulate_ab(effect=0.04, runs=300, seed=4)
    assert cell.wrong_equivalence <= 0.05


def test_equivalence_is_claimed_only_with_the_interval_inside_the_mde():
    rng = np.random.default_rng(5)
    df = _frame(_arm(rng, "a", 4000, q_sd=0.05), _arm(rng, "b", 4000, q_sd=0.05))
    [c] = analyse_experiment(df, "exp", mde=0.03).comparisons
    q = c.metric("quality")
    assert q.decision == "equivalent"
    assert q.diff.low > -0.03 and q.diff.high < 0.03
    assert c.verdict.startswith("a and b equivalent on quality within +-0.030")


def test_failed_requests_count_as_zero_quality():
    rng = np.random.default_rng(6)
    # b fails on its hardest 15% of tasks: better on what it answers, worse overall.
    df = _frame(_arm(rng, "a", 1500, success=0.99), _arm(rng, "b", 1500, fail_hardest=0.15))
    [c] = analyse_experiment(df, "exp").comparisons
    q = c.metric("quality")
    assert q.decision == "winner" and q.winner == "a"
    assert not c.verdict.startswith("b better on quality")


@pytest.mark.parametrize("arms", [3, 5])
def test_multi_arm_experiments_correct_for_multiplicity(arms):
    cell = simulate_ab(arms=arms, runs=300, seed=arms)
    assert cell.family_wise_fp <= 0.05
    rng = np.random.default_rng(7)
    df = _frame(*[_arm(rng, f"m{i}", 200) for i in range(arms)])
    rep = analyse_experiment(df, "exp", alpha=0.05)
    pairs = arms * (arms - 1) // 2
    assert len(rep.comparisons) == pairs
    for c in rep.comparisons:
        assert all(r.level == pytest.approx(1 - 0.05 / pairs) for r in c.results)
    assert f"{1 - 0.05 / pairs:.0%} CS" in rep.verdicts[0]


def test_the_estimate_and_winner_are_frozen_at_the_stopping_time():
    rng = np.random.default_rng(8)
    early = _frame(_arm(rng, "a", 1200, days=3), _arm(rng, "b", 1200, days=3, quality=0.86))
    # Later days reverse the effect; the decision already taken must not move.
    late = _frame(_arm(rng, "a", 3000, days=5, day0=3, quality=0.86),
                  _arm(rng, "b", 3000, days=5, day0=3))
    q_early = analyse_experiment(early, "exp").comparisons[0].metric("quality")
    q_all = analyse_experiment(_frame(early, late), "exp").comparisons[0].metric("quality")
    assert q_early.decision == "winner" and q_early.winner == "b"
    assert q_all == q_early
    assert q_all.diff.low <= q_all.diff.estimate <= q_all.diff.high
    assert q_all.stopped_at is not None and q_all.stopped_at < START + timedelta(days=3)


def test_need_n_more_comes_from_the_sequential_design_and_keeps_its_power():
    sd, mde, alpha = 0.2, 0.03, 0.05
    n = needed_per_arm(sd, mde, alpha=alpha)
    fixed = 2 * ((sps.norm.ppf(0.975) + sps.norm.ppf(0.8)) * sd / mde) ** 2
    assert n > fixed
    rng = np.random.default_rng(9)
    runs = 2000
    ma, mb = rng.normal(0, sd / np.sqrt(n), runs), rng.normal(mde, sd / np.sqrt(n), runs)
    ones = np.full(runs, float(n))

    def cum(m):
        return Cumulative(ones[:, None], (m * n)[:, None], (n * (sd**2 + m * m))[:, None])

    path = sequential_path(cum(ma), cum(mb), tau=mde, alpha=alpha)
    power = np.mean(first_decision(path, margin=mde).decision == WINNER)
    assert power >= 0.78


def test_undecided_experiment_says_how_many_more_requests(tmp_path):
    truth = write_synthetic_store(tmp_path / "aa.db", seed=5, experiment_effect=0.0, days=2,
                                  requests_per_day=300)
    [line] = summarize(load_requests(truth.path))
    assert line.startswith(f"{truth.experiment}: no decision yet on quality")
    assert int(line.split("need ~")[1].split()[0]) > 0


def test_the_decision_rule_chooses_primary_and_guardrails():
    rng = np.random.default_rng(10)
    # b better on quality but twice as expensive: cost as a guardrail blocks it.
    df = _frame(_arm(rng, "a", 2000, cost=0.01), _arm(rng, "b", 2000, quality=0.83, cost=0.02))
    [c] = analyse_experiment(df, "exp").comparisons
    assert c.verdict.startswith("trade-off, no overall winner: b better on quality")
    [c2] = analyse_experiment(df, "exp", rule=DecisionRule(guardrails=())).comparisons
    assert c2.verdict.startswith("b better on quality")
    [c3] = analyse_experiment(df, "exp", rule=DecisionRule(primary="cost_per_request")
                              ).comparisons
    assert c3.verdict.startswith("a better on cost")
    with pytest.raises(ValueError, match="unknown metrics"):
        DecisionRule(primary="speed")


def test_planted_experiment_effect_found_on_the_synthetic_store(synthetic_truth, synthetic_data):
    rep = analyse_experiment(synthetic_data.requests, synthetic_truth.experiment)
    [c] = rep.comparisons
    q = c.metric("quality")
    assert q.decision == "winner" and q.winner == synthetic_truth.treatment_arm
    assert c.verdict.startswith(f"{synthetic_truth.treatment_arm} better on quality (+0.0")
    assert "cost: claude-3.5-sonnet better than gpt-4-turbo" in c.verdict


def test_only_randomised_traffic_is_compared(synthetic_truth, synthetic_data):
    from analytics.ab import randomised

    r = synthetic_data.requests
    fair = randomised(r, synthetic_truth.experiment)
    assert fair["arm_honoured"].all() and not fair["cache_hit"].any()
    rep = analyse_experiment(r, synthetic_truth.experiment)
    in_exp = (r["experiment"] == synthetic_truth.experiment).sum()
    assert sum(a.n for a in rep.arms) == len(fair) == in_exp - rep.excluded
    assert rep.excluded > 0


def test_bad_options_are_rejected(synthetic_data):
    with pytest.raises(ValueError, match="mde"):
        analyse_experiment(synthetic_data.requests, "x", mde=0)


def test_the_simulated_rule_keeps_its_promises():
    null = simulate_ab(arms=2, runs=300, seed=11)
    assert null.family_wise_fp <= 0.05 and null.coverage >= 0.95
    planted = simulate_ab(effect=0.05, runs=300, seed=12)
    assert planted.power >= 0.9 and planted.wrong_sign == 0 and planted.coverage >= 0.95
    assert EQUIVALENT != WINNER
