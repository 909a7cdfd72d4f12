"""Routing policies: score (the seed), softmax and Thompson; bounds; the logged decision."""

from __future__ import annotations

import dataclasses
import math
import random
from collections import Counter

import pytest

from amm.errors import ConfigurationError
from amm.models import Experiment, ModelRequest
from amm.policy import (
    ScorePolicy,
    SoftmaxPolicy,
    ThompsonPolicy,
    _prob_of_max,
    policy_from_config,
)
from amm.rate_limiter import RateLimiter
from amm.registry import ModelRegistry
from amm.selector import ModelSelector
from telemetry.events import SelectionEvent
from tests.routing_fakes import FakeHealth, FakeMonitor, ListSink, make_model, snapshot

MODELS = [make_model("cheap", cost_in=0.001, cost_out=0.002, latency_ms=1000),
          make_model("mid", cost_in=0.003, cost_out=0.006, latency_ms=1200),
          make_model("dear", cost_in=0.01, cost_out=0.02, latency_ms=2000)]


def build(policy, *, models=MODELS, experiments=(), monitor=None):
    registry = ModelRegistry.from_models(models, experiments)
    sink = ListSink()
    selector = ModelSelector(registry, FakeHealth(), RateLimiter(registry),
                             monitor if monitor is not None else FakeMonitor(), events=sink,
                             policy=policy)
    return selector, sink


def request(task_id: str = "t-1", *, agent_type: str = "implementation",
            priority: str | None = None) -> ModelRequest:
    return ModelRequest(prompt="x" * 400, task_id=task_id, agent_type=agent_type,
                        max_tokens=100, priority=priority)


def logged(event: SelectionEvent) -> dict[str, float]:
    return {c[0]: c[2] for c in event.candidates}


async def test_default_policy_is_the_seeds_deterministic_choice_with_a_full_log():
    selector, sink = build(None)
    selection = await selector.select_model(request(), "implementation")
    (event,) = sink.of(SelectionEvent)
    assert selection.model_id == "cheap" and selection.propensity == 1.0
    assert selection.selection_reason.startswith("highest score")
    assert (event.policy, event.stage) == ("score", "initial")
    assert event.policy_version.startswith("score-")
    assert logged(event) == {"cheap": 1.0, "mid": 0.0, "dear": 0.0}
    assert [c[0] for c in event.candidates] == sorted(event.scores, key=event.scores.get,
                                                      reverse=True)
    assert event.features["agent_type"] == "implementation"
    assert event.features["priority"] == "MEDIUM"


async def test_softmax_gives_every_model_at_least_the_floor_and_logs_what_it_drew_with():
    policy = SoftmaxPolicy(temperature=0.05, floor=0.1, rng=random.Random(1))
    selector, sink = build(policy)
    counts: Counter[str] = Counter()
    for i in range(3000):
        counts[(await selector.select_model(request(f"t-{i}"), "implementation")).model_id] += 1
    events = sink.of(SelectionEvent)
    probs = logged(events[0])
    assert min(probs.values()) >= 0.1 - 1e-12
    assert sum(probs.values()) == pytest.approx(1.0)
    scores = events[0].scores
    # Above the floor the mass follows exp(score / T).
    extra = {m: p - 0.1 for m, p in probs.items()}
    assert extra["cheap"] / extra["mid"] == pytest.approx(
        math.exp((scores["cheap"] - scores["mid"]) / 0.05))
    for e in events:
        assert e.propensity == pytest.approx(logged(e)[e.chosen])
        assert e.policy == "softmax"
    for model, p in probs.items():  # what was drawn matches what was logged
        assert counts[model] / 3000 == pytest.approx(p, abs=0.03)


async def test_a_seeded_policy_replays_the_same_choices():
    async def run() -> list[str]:
        selector, _ = build({"kind": "softmax", "temperature": 0.5, "floor": 0.05, "seed": 42})
        return [(await selector.select_model(request(f"t-{i}"), "x")).model_id
                for i in range(50)]

    first = await run()
    assert first == await run()
    assert len(set(first)) > 1


async def test_high_priority_requests_are_not_explored_when_the_setting_says_so():
    policy = SoftmaxPolicy(temperature=1.0, floor=0.2, explore_high_priority=False,
                           rng=random.Random(3))
    selector, sink = build(policy)
    chosen = {(await selector.select_model(request(f"t-{i}", priority="HIGH"), "x")).model_id
              for i in range(50)}
    assert len(chosen) == 1
    assert logged(sink.of(SelectionEvent)[0])[chosen.pop()] == 1.0
    await selector.select_model(request(priority="LOW"), "x")
    assert min(logged(sink.of(SelectionEvent)[-1]).values()) >= 0.2


async def test_models_above_the_exploration_cost_cap_are_never_explored():
    # 100 prompt tokens + 100 output: cheap $0.0003, mid $0.0009, dear $0.003.
    policy = SoftmaxPolicy(temperature=1.0, floor=0.2, max_explore_cost_usd=0.001,
                           rng=random.Random(3))
    selector, sink = build(policy)
    await selector.select_model(request(), "x")
    probs = logged(sink.of(SelectionEvent)[0])
    assert probs["dear"] == 0.0
    assert probs["cheap"] + probs["mid"] == pytest.approx(1.0)
    assert min(probs["cheap"], probs["mid"]) >= 0.2


async def test_policy_for_some_agent_types_leaves_the_others_deterministic():
    selector, sink = build({"kind": "softmax", "temperature": 1.0, "floor": 0.2,
                            "agent_types": ["research"], "seed": 1})
    await selector.select_model(request(agent_type="review"), "review")
    await selector.select_model(request(agent_type="research"), "research")
    review, research = sink.of(SelectionEvent)
    assert (review.policy, review.propensity) == ("score", 1.0)
    assert max(logged(review).values()) == 1.0
    assert research.policy == "softmax" and min(logged(research).values()) >= 0.2


async def test_failover_reselection_is_deterministic_and_marked():
    selector, sink = build(SoftmaxPolicy(temperature=1.0, floor=0.3, rng=random.Random(0)))
    for i in range(20):
        selection = await selector.select_model(request(f"t-{i}"), "x", exclude={"cheap"})
        assert selection.model_id == "mid" and selection.propensity == 1.0
    assert {(e.stage, e.policy) for e in sink.of(SelectionEvent)} == {("failover", "score")}


async def test_experiment_with_an_exploring_policy_logs_the_honest_mixture():
    exp = Experiment("ab", "impl", {"cheap": 0.5, "gone": 0.5})
    models = [*MODELS, make_model("gone")]
    registry = ModelRegistry.from_models(models, [exp])
    sink = ListSink()
    policy = SoftmaxPolicy(temperature=0.05, floor=0.1, rng=random.Random(5))
    selector = ModelSelector(registry, FakeHealth(down={"gone"}), RateLimiter(registry),
                             FakeMonitor(), events=sink, policy=policy)
    for i in range(400):
        await selector.select_model(request(f"t-{i}", agent_type="impl"), "impl")
    events = sink.of(SelectionEvent)
    # Half the tasks get the ineligible arm and fall back to the policy's draw, whose
    # probabilities are the softmax of the logged scores, floored.
    scores = {c[0]: c[1] for c in events[0].candidates}
    q = {m: math.exp((s - max(scores.values())) / 0.05) for m, s in scores.items()}
    policy_probs = {m: 0.1 + 0.7 * v / sum(q.values()) for m, v in q.items()}
    for e in events:
        probs = logged(e)
        assert sum(probs.values()) == pytest.approx(1.0)
        assert probs["cheap"] == pytest.approx(0.5 + 0.5 * policy_probs["cheap"])
        assert probs["dear"] == pytest.approx(0.5 * policy_probs["dear"])
        assert e.propensity == pytest.approx(probs[e.chosen])
    share = Counter(e.chosen for e in events)["cheap"] / len(events)
    assert share == pytest.approx(0.5 + 0.5 * policy_probs["cheap"], abs=0.06)


async def test_thompson_prefers_the_model_with_the_better_observed_reward():
    monitor = FakeMonitor()
    for model, quality, n in (("cheap", 0.9, 200), ("mid", 0.6, 200), ("dear", 0.92, 200)):
        snap = snapshot(model, count=n, quality=quality, agent_type="impl")
        monitor.stats[(model, "impl")] = dataclasses.replace(
            snap, cost_usd=n * {"cheap": 0.0003, "mid": 0.0009, "dear": 0.003}[model])
    policy = ThompsonPolicy(lam=20.0, floor=0.02, rng=random.Random(2))
    selector, sink = build(policy, monitor=monitor)
    await selector.select_model(request(agent_type="impl"), "impl")
    probs = logged(sink.of(SelectionEvent)[0])
    # reward: cheap 0.9 - 0.006 = 0.894, dear 0.92 - 0.06 = 0.86, mid 0.6 - 0.018
    assert probs["cheap"] > 0.8 and probs["cheap"] > probs["dear"] > probs["mid"]
    assert probs["mid"] == pytest.approx(0.02, abs=1e-6)
    assert sum(probs.values()) == pytest.approx(1.0)
    assert sink.of(SelectionEvent)[0].policy == "thompson"


async def test_thompson_without_data_spreads_over_the_priors():
    policy = ThompsonPolicy(lam=0.0, floor=0.0, rng=random.Random(2))
    selector, sink = build(policy)
    await selector.select_model(request(), "x")
    probs = logged(sink.of(SelectionEvent)[0])
    assert all(p == pytest.approx(1 / 3, abs=0.02) for p in probs.values())


def test_probability_of_the_maximum_matches_monte_carlo():
    post = [(0.5, 0.1), (0.55, 0.05), (0.3, 0.2), (0.52, 0.001)]
    rng = random.Random(0)
    counts = Counter(max(range(4), key=lambda i: rng.gauss(*post[i])) for _ in range(40000))
    exact = _prob_of_max(post, 64)
    for i in range(4):
        assert exact[i] == pytest.approx(counts[i] / 40000, abs=0.015)


def test_bad_policy_config_names_the_field():
    with pytest.raises(ConfigurationError, match=r"policy\.kind"):
        policy_from_config({"kind": "greedy"})
    with pytest.raises(ConfigurationError, match=r"policy\.temperature"):
        policy_from_config({"kind": "softmax", "temperature": 0})
    with pytest.raises(ConfigurationError, match=r"policy\.floor"):
        policy_from_config({"kind": "thompson", "floor": 1.5})
    with pytest.raises(ConfigurationError, match=r"policy\.tau"):
        policy_from_config({"kind": "softmax", "tau": 1})
    with pytest.raises(ConfigurationError, match=r"policy\.reward"):
        policy_from_config({"kind": "thompson", "reward": "latency"})
    assert isinstance(policy_from_config(None), ScorePolicy)


def test_registry_policy_key_reaches_the_selector_and_bad_ones_quote_the_file():
    doc = {"models": [{"id": "a", "provider": "openai", "name": "A",
                       "capabilities": ["text-generation"], "cost_per_1k_input_tokens": 0.001,
                       "cost_per_1k_output_tokens": 0.002,
                       "rate_limits": {"requests_per_minute": 10, "tokens_per_minute": 1000},
                       "context_window": 1000, "average_response_time_ms": 100}],
           "policy": {"kind": "thompson", "lambda": 5.0, "floor": 0.05}}
    registry = ModelRegistry.from_dict(doc, source="reg.json")
    assert registry.policy_config() == doc["policy"]
    selector = ModelSelector(registry, FakeHealth(), RateLimiter(registry), FakeMonitor())
    assert isinstance(selector.policy, ThompsonPolicy) and selector.policy.lam == 5.0
    with pytest.raises(ConfigurationError, match=r"reg\.json: policy\.temperature"):
        ModelRegistry.from_dict({**doc, "policy": {"kind": "softmax", "temperature": -1}},
                                source="reg.json")


async def test_cache_hit_logs_its_decision_marked_as_such():
    selector, sink = build(None)
    selector.record_cache_hit("review", "t-9", "mid")
    (event,) = sink.of(SelectionEvent)
    assert (event.chosen, event.propensity, event.stage) == ("mid", 1.0, "cache_hit")
    assert logged(event) == {"mid": 1.0}
