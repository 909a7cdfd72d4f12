"""Thompson routing live through the manager and the provider simulator, then
off-policy evaluation of the store it wrote (the real end-to-end decision log)."""

from __future__ import annotations

import asyncio
import json
import random
import sqlite3

import pytest

from amm.models import ModelRequest, QualityScore
from amm.sim import ModelProfile
from analytics.ope import evaluate_policy, load_decisions
from tests.fixtures_manager import model_entry

# Known truth: mean quality per (agent type, model). "mini" is as good as the dear
# models for implementation and review, and poor at research.
QUALITY = {
    "implementation": {"claude": 0.92, "gpt": 0.90, "mini": 0.90, "llama": 0.70, "gemini": 0.80},
    "review": {"claude": 0.93, "gpt": 0.91, "mini": 0.91, "llama": 0.72, "gemini": 0.78},
    "research": {"claude": 0.94, "gpt": 0.92, "mini": 0.60, "llama": 0.65, "gemini": 0.85},
}
PRICES = {"claude": (0.015, 0.075), "gpt": (0.01, 0.03), "mini": (0.00015, 0.0006),
          "llama": (0.0001, 0.0001), "gemini": (0.00125, 0.005)}
LAMBDA = 10.0


class OracleQuality:
    """A quality scorer that knows the truth: mean per (agent type, model) plus noise."""

    def __init__(self, seed: int = 0) -> None:
        self.rng = random.Random(seed)

    def score(self, response, task: ModelRequest) -> QualityScore:
        mean = QUALITY[task.agent_type][response.model_id]
        q = min(1.0, max(0.0, self.rng.gauss(mean, 0.05)))
        return QualityScore(q, q, q, q)


async def run_workload(manager, n_per_agent: int) -> list[tuple[str, str, float, float]]:
    rows = []
    agents = list(QUALITY)
    for i in range(n_per_agent * len(agents)):
        agent = agents[i % len(agents)]
        request = ModelRequest(prompt=f"Task {i}: summarise the change in module {i % 17}.",
                               task_id=f"{agent}-{i}", agent_type=agent, max_tokens=200)
        response = await manager.complete(request)
        rows.append((agent, response.model_id, response.metadata["quality"], response.cost))
    return rows


@pytest.fixture
def thompson_run(build_manager, tmp_path):
    profiles = {m: ModelProfile(latency_ms=0, latency_jitter_ms=0) for m in PRICES}
    models = [model_entry(m, cost_in=i, cost_out=o, latency_ms=500) for m, (i, o) in PRICES.items()]
    policy = {"kind": "thompson", "reward": "quality - lambda * cost", "lambda": LAMBDA,
              "floor": 0.02, "seed": 11}
    manager, _sim, _log = build_manager(profiles, models, policy=policy, telemetry=True,
                                        cache_enabled=False, quality_threshold=0.0)
    manager.evaluator.scorer = OracleQuality()

    async def go():
        async with manager:
            return await run_workload(manager, 150)

    rows = asyncio.run(go())
    manager.flush()
    return rows, tmp_path / "data" / "amm.db"


def test_thompson_live_reaches_best_quality_at_a_fraction_of_its_cost(thompson_run):
    rows, _ = thompson_run
    best = max(PRICES, key=lambda m: sum(QUALITY[a][m] for a in QUALITY))
    best_quality = sum(QUALITY[a][best] for a in QUALITY) / len(QUALITY)
    best_costs = [c for _, m, _, c in rows if m == best]
    best_cost = sum(best_costs) / len(best_costs)
    # The second half: after the posterior has had its first 225 requests.
    late = rows[len(rows) // 2:]
    quality = sum(q for _, _, q, _ in late) / len(late)
    cost = sum(c for *_, c in late) / len(late)
    print(f"thompson: quality {quality:.3f} cost ${cost:.6f}; best single model {best}: "
          f"quality {best_quality:.3f} cost ${best_cost:.6f}; "
          f"ratio quality {quality / best_quality:.3f} cost {cost / best_cost:.3f}")
    assert quality >= 0.95 * best_quality
    assert cost <= 0.60 * best_cost


def test_the_store_holds_one_full_decision_per_request_and_ope_reads_it(thompson_run):
    rows, db = thompson_run
    with sqlite3.connect(db) as conn:
        spans = [json.loads(a) for (a,) in conn.execute(
            "SELECT SpanAttributes FROM otel_traces WHERE SpanName = 'amm.select'")]
    first = [s for s in spans if s.get("amm.selection.stage") == "initial"]
    assert len(first) == len(rows)
    for attrs in first[:20]:
        cands = json.loads(attrs["amm.selection.candidates"])
        assert {c["model"] for c in cands} == set(PRICES)
        assert sum(c["probability"] for c in cands) == pytest.approx(1.0, rel=1e-4)
        assert min(c["probability"] for c in cands) >= 0.02 - 1e-9
        chosen = next(c for c in cands if c["model"] == attrs["amm.selection.chosen"])
        assert attrs["amm.selection.propensity"] == pytest.approx(chosen["probability"], rel=1e-5)
        assert attrs["amm.selection.policy"] == "thompson"
        assert attrs["amm.selection.policy_version"].startswith("thompson-")
        assert json.loads(attrs["amm.selection.features"])["agent_type"] in QUALITY

    decisions = load_decisions(db)
    assert len(decisions) == len(rows)
    assert (decisions["stage"] == "initial").all()
    for target in ("always:claude", "cheapest", "score"):
        est = evaluate_policy(decisions, target, lam=LAMBDA)
        print(est.summary(), {k: round(v.value, 5) for k, v in est.metrics.items()})
        assert est.support_ok, est.support_reason
        assert est.ci_low <= est.value <= est.ci_high
    claude = evaluate_policy(decisions, "always:claude", lam=LAMBDA)
    truth = sum(QUALITY[a]["claude"] for a in QUALITY) / 3
    quality = claude.metrics["quality"]
    assert quality.ci_low - 0.05 <= truth <= quality.ci_high + 0.05


def test_amm_report_prints_what_if_beside_the_logged_policy(thompson_run, capsys):
    from amm.cli import main

    _, db = thompson_run
    assert main(["report", "--store", str(db), "--policy", "always:claude",
                 "--policy", "cheapest", "--lambda", "10"]) == 0
    out = capsys.readouterr().out
    assert "What if" in out and "logged (actual)" in out
    assert "always:claude" in out and "cheapest" in out
