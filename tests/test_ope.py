"""Off-policy evaluation: IPS, SNIPS and DR on logs with known truth; the support check."""

from __future__ import annotations

import numpy as np
import pytest

from analytics.ope import LoggedDecision, evaluate_policy
from analytics.policy_sim import World, coverage, thompson_target, true_value


@pytest.fixture(scope="module")
def world() -> World:
    return World.default()


def test_dr_intervals_cover_the_true_value_of_four_targets_in_100_simulations(world):
    # 5,000 decisions, 5 models, 3 agent types per simulated log; a vectorised logger
    # with the decision-log shape of the store (softmax, T=0.05, floor 0.05).
    pilot = world.log(2000, rng=np.random.default_rng(99))
    targets = {"always-best": "always:sim-claude", "always-cheapest": "cheapest",
               "score": "score", "thompson": thompson_target(world, pilot)}
    result = coverage(world, targets, reps=100, n=5000, seed=7)
    for name, row in result.items():
        print(name, {k: round(v, 4) for k, v in row.items()})
        assert row["dr_coverage"] >= 0.90, name
        assert row["dr_mean"] == pytest.approx(row["true"], abs=0.01), name
        # SNIPS and IPS are reported beside it.
        assert row["snips_coverage"] >= 0.85 and row["ips_coverage"] >= 0.80, name


def test_estimate_reports_every_method_metric_and_the_logged_value(world):
    log = world.log(5000, rng=np.random.default_rng(3))
    est = evaluate_policy(log, "always:sim-mini", lam=world.lam)
    assert est.method == "dr" and est.support_ok and est.support_reason == ""
    assert set(est.methods) == {"ips", "snips", "dr"}
    assert set(est.metrics) == {"quality", "cost_usd", "latency_ms", "success"}
    assert est.ci_low < true_value(world, lambda d: {"sim-mini": 1.0}) < est.ci_high
    assert est.metrics["cost_usd"].value == pytest.approx(0.001, rel=0.1)
    assert est.logged_value == pytest.approx(
        float((log["quality"] - world.lam * log["cost_usd"]).mean()))
    assert 0 < est.effective_sample_size < est.n == 5000
    assert "ESS" in est.summary()


def test_a_callable_target_sees_the_logged_candidates_and_features(world):
    log = world.log(500, rng=np.random.default_rng(4))
    seen: list[LoggedDecision] = []

    def fastest(d: LoggedDecision):
        seen.append(d)
        return {min(d.candidates, key=lambda c: c.latency_ms).model: 1.0}

    est = evaluate_policy(log, fastest, method="snips", lam=world.lam)
    assert est.method == "snips" and est.support_ok
    assert len(seen) == 500 and seen[0].features["agent_type"] == seen[0].agent_type
    assert {c.model for c in seen[0].candidates} == set(world.models)


def test_deterministic_logs_cannot_identify_another_policy_and_say_why(world):
    # The score policy logs probability 1 for its choice and 0 for every other model.
    probs = np.zeros(world.scores.shape)
    probs[:, world.scores[0].argmax()] = 1.0
    log = world.log(3000, rng=np.random.default_rng(5), probabilities=probs)
    assert set(log["chosen"]) == {"sim-mini"}
    for target in ("always:sim-claude", "cheapest"):
        est = evaluate_policy(log, target, lam=world.lam)
        assert not est.support_ok
        assert "probability 0" in est.support_reason and "sim-" in est.support_reason
    same = evaluate_policy(log, "score", lam=world.lam)
    assert same.support_ok and same.value == pytest.approx(same.logged_value)


def test_cache_hits_are_left_out_and_counted(world):
    log = world.log(1000, rng=np.random.default_rng(6))
    log.loc[:99, "stage"] = "cache_hit"
    est = evaluate_policy(log, "score", lam=world.lam)
    assert (est.n, est.n_cache_hits) == (900, 100)
