"""ModelSelector: filters with reasons, the seed's weighted score, priorities, experiments."""

from __future__ import annotations

import math
from collections import Counter

import pytest

from amm.errors import InvalidRequestError
from amm.experiments import HashAssigner, logging_propensity
from amm.models import (
    Experiment,
    ModelRequest,
    PerformanceMetrics,
    Priority,
    SelectionConstraints,
)
from amm.performance_monitor import PerformanceMonitor
from amm.rate_limiter import RateLimiter
from amm.registry import ModelRegistry
from amm.scoring import COST_EPSILON_USD, ScoreContext, WeightedScorer, Weights
from amm.selector import ModelSelector, estimate_prompt_tokens
from telemetry.events import SelectionEvent
from tests.routing_fakes import FakeHealth, FakeMonitor, ListSink, make_model, snapshot


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def build(models, *, experiments=(), down=(), monitor=None, **kw):
    registry = ModelRegistry.from_models(models, experiments)
    clock = Clock()
    limiter = RateLimiter(registry, clock=clock)
    sink = ListSink()
    selector = ModelSelector(registry, FakeHealth(down), limiter,
                             monitor if monitor is not None else FakeMonitor(), events=sink, **kw)
    return selector, limiter, sink


def request(prompt: str = "x" * 400, *, max_tokens: int | None = 100, task_id: str = "t-1",
            agent_type: str = "implementation", priority: str | None = None) -> ModelRequest:
    return ModelRequest(prompt=prompt, task_id=task_id, agent_type=agent_type,
                        max_tokens=max_tokens, priority=priority)


# A: cheap, fast, two capabilities. B: ten times the price, half the speed, one capability.
CHEAP = make_model("cheap", capabilities=["text-generation", "code-generation"],
                   cost_in=0.001, cost_out=0.002, latency_ms=1000)
DEAR = make_model("dear", capabilities=["text-generation"], cost_in=0.01, cost_out=0.02,
                  latency_ms=2000)


async def test_score_is_30_25_25_20_weighted_sum_computed_by_hand():
    selector, _, _ = build([CHEAP, DEAR])
    selection = await selector.select_model(request(), "implementation")
    # cheap: capability 0.8*1 + 0.2*(2/2) = 1.0; cost 1.0 (cheapest);
    #        performance 0.4*0.95 + 0.3*1.0 + 0.3*0.75 = 0.905; availability 1.0
    assert selection.scores["cheap"] == pytest.approx(0.30 * 1.0 + 0.25 * 1.0 + 0.25 * 0.905 + 0.20)
    # dear: capability 0.8 + 0.2*(1/2) = 0.9; cost 0.0 (dearest); speed 1000/2000 = 0.5:
    #       performance 0.4*0.95 + 0.3*0.5 + 0.3*0.75 = 0.755
    assert selection.scores["dear"] == pytest.approx(0.30 * 0.9 + 0.0 + 0.25 * 0.755 + 0.20)
    assert selection.model_id == "cheap"
    assert selection.suitability_score == pytest.approx(0.97625)
    assert selection.alternatives == ["dear"]


async def test_cost_factor_is_log_scaled_between_cheapest_and_dearest():
    middle = make_model("middle", capabilities=["text-generation", "code-generation"],
                        cost_in=0.003, cost_out=0.006, latency_ms=1000)
    selector, _, _ = build([CHEAP, middle, DEAR])
    selection = await selector.select_model(request(), "implementation")
    # 100 prompt tokens + 100 output tokens
    cost = {"cheap": 0.0003, "middle": 0.0009, "dear": 0.003}
    e = COST_EPSILON_USD
    expected = 1 - (math.log(cost["middle"] + e) - math.log(cost["cheap"] + e)) / (
        math.log(cost["dear"] + e) - math.log(cost["cheap"] + e))
    other = selection.scores["middle"] - (0.30 * 1.0 + 0.25 * 0.905 + 0.20)
    assert other == pytest.approx(0.25 * expected)


def test_prompt_tokens_are_estimated_as_a_quarter_of_the_characters_rounded_up():
    assert estimate_prompt_tokens(request("abcd")) == 1
    assert estimate_prompt_tokens(request("abcde")) == 2
    assert estimate_prompt_tokens(request("x" * 400)) == 100


# E: capable, fast, dear. K: cheap, slow, one capability.
CAPABLE = make_model("capable", capabilities=["text-generation", "code-generation", "analysis",
                                              "reasoning"], cost_in=0.01, cost_out=0.03,
                     latency_ms=500)
THRIFTY = make_model("thrifty", capabilities=["text-generation"], cost_in=0.001,
                     cost_out=0.003, latency_ms=1500)


@pytest.mark.parametrize(("priority", "winner"), [
    ("high", "capable"), ("medium", "thrifty"), ("low", "thrifty"),
])
async def test_priority_shifts_weight_between_quality_and_cost(priority, winner):
    selector, _, _ = build([CAPABLE, THRIFTY])
    selection = await selector.select_model(request(priority=priority), "implementation")
    assert selection.model_id == winner


async def test_high_priority_uses_35_10_35_20_weights():
    selector, _, _ = build([CAPABLE, THRIFTY])
    selection = await selector.select_model(request(priority="high"), "implementation")
    # capable: capability 1.0, cost 0.0, performance 0.905, availability 1.0
    assert selection.scores["capable"] == pytest.approx(0.35 + 0.0 + 0.35 * 0.905 + 0.20)
    # thrifty: capability 0.8 + 0.2/4 = 0.85, cost 1.0, speed 1/3: 0.38 + 0.1 + 0.225 = 0.705
    assert selection.scores["thrifty"] == pytest.approx(0.35 * 0.85 + 0.10 + 0.35 * 0.705 + 0.20)


async def test_low_priority_uses_20_45_15_20_weights():
    selector, _, _ = build([CAPABLE, THRIFTY])
    selection = await selector.select_model(request(priority="low"), "implementation")
    assert selection.scores["thrifty"] == pytest.approx(0.20 * 0.85 + 0.45 + 0.15 * 0.705 + 0.20)


def test_weights_must_sum_to_one():
    from amm.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="sum to 1"):
        Weights(0.5, 0.5, 0.5, 0.0)


async def test_custom_scorer_weights_change_the_choice():
    only_cost = WeightedScorer(Weights(0.0, 1.0, 0.0, 0.0))
    selector, _, _ = build([CAPABLE, THRIFTY], scorer=only_cost)
    selection = await selector.select_model(request(), "implementation")
    assert selection.scores == {"thrifty": pytest.approx(1.0), "capable": pytest.approx(0.0)}


# -- filters ------------------------------------------------------------------------------


async def test_disabled_model_is_excluded_with_reason():
    selector, _, _ = build([CHEAP, make_model("off", enabled=False)])
    selection = await selector.select_model(request(), "implementation")
    assert selection.excluded == {"off": "disabled"}


async def test_missing_capability_is_excluded_with_reason():
    selector, _, _ = build([CHEAP, DEAR])
    constraints = SelectionConstraints(required_capabilities=["code-generation", "analysis"])
    cheap_only = SelectionConstraints(required_capabilities=["code-generation"])
    assert await selector.select_model(request(), "implementation", constraints) is None
    selection = await selector.select_model(request(), "implementation", cheap_only)
    assert selection.model_id == "cheap"
    assert selection.excluded == {"dear": "missing capabilities: code-generation"}


async def test_excluded_provider_is_excluded_with_reason():
    local = make_model("llama", provider="ollama", cost_in=0.0, cost_out=0.0)
    selector, _, _ = build([DEAR, local])
    selection = await selector.select_model(
        request(), "implementation", SelectionConstraints(excluded_providers=["ollama"]))
    assert selection.model_id == "dear"
    assert selection.excluded == {"llama": "provider ollama excluded"}


async def test_cost_above_max_cost_per_request_is_excluded_with_reason():
    selector, _, _ = build([CHEAP, DEAR])
    selection = await selector.select_model(
        request(), "implementation", SelectionConstraints(max_cost_per_request=0.001))
    assert selection.model_id == "cheap"
    assert selection.excluded == {"dear": "estimated cost $0.0030 > max $0.0010"}


async def test_cost_without_max_tokens_assumes_1024_output_tokens():
    selector, _, _ = build([CHEAP])
    # 100 prompt tokens * 0.001/1k + 1024 * 0.002/1k = 0.0021480
    assert await selector.select_model(request(max_tokens=None), "implementation",
                                       SelectionConstraints(max_cost_per_request=0.00214)) is None
    assert await selector.select_model(request(max_tokens=None), "implementation",
                                       SelectionConstraints(max_cost_per_request=0.00215))


async def test_context_window_too_small_is_excluded_with_reason():
    small = make_model("small", context_window=150)
    selector, _, _ = build([small, DEAR])
    selection = await selector.select_model(request(), "implementation")
    assert selection.excluded == {"small": "context window 150 < 200 tokens needed"}


async def test_registry_latency_above_max_latency_is_excluded_with_reason():
    selector, _, _ = build([CHEAP, DEAR])
    selection = await selector.select_model(
        request(), "implementation", SelectionConstraints(max_latency_ms=1500))
    assert selection.excluded == {"dear": "latency expected 2000 ms > max 1500 ms"}


async def test_measured_p95_replaces_registry_latency_after_min_samples(tmp_path):
    monitor = PerformanceMonitor(tmp_path / "perf.db")
    try:
        selector, _, _ = build([CHEAP, DEAR], monitor=monitor, min_samples=5)
        for i in range(4):
            await monitor.record_performance("cheap", "implementation", 5000.0, True, 0.9, f"a{i}")
        limits = SelectionConstraints(max_latency_ms=1500)
        selection = await selector.select_model(request(), "implementation", limits)
        assert selection.model_id == "cheap"  # 4 samples < 5: the registry's 1000 ms holds
        await monitor.record_performance("cheap", "implementation", 5000.0, True, 0.9, "a4")
        assert await selector.select_model(request(), "implementation", limits) is None
        no_limit = await selector.select_model(
            request(), "implementation", SelectionConstraints(max_latency_ms=6000))
        assert no_limit.excluded == {}
    finally:
        monitor.close()


async def test_measured_latency_reason_names_the_p95():
    monitor = FakeMonitor()
    monitor.stats[("cheap", "implementation")] = snapshot("cheap", p50=800, p95=2500)
    selector, _, _ = build([CHEAP, DEAR], monitor=monitor)
    selection = await selector.select_model(
        request(), "implementation", SelectionConstraints(max_latency_ms=2100))
    assert selection.model_id == "dear"
    assert selection.excluded == {"cheap": "latency measured p95 2500 ms > max 2100 ms"}


async def test_exclusions_are_listed_in_registry_order_whatever_excluded_them():
    # Some models are stopped by the request's shape (decided once per shape), others by
    # per-request checks (health, cost): the reasons still read in the registry's order,
    # as the span's exclusion list and the selection reason's first few show them.
    models = [make_model("a-off", enabled=False), make_model("b-down"),
              make_model("c-nocode", capabilities=["text-generation"]), CHEAP,
              make_model("d-dear", cost_in=1.0, cost_out=1.0),
              make_model("e-off", enabled=False)]
    selector, _, sink = build(models, down=["b-down"])
    constraints = SelectionConstraints(required_capabilities=["text-generation"],
                                       max_cost_per_request=0.1)
    selection = await selector.select_model(request(), "implementation", constraints)
    assert selection.model_id == "cheap"
    assert list(selection.excluded) == ["a-off", "b-down", "d-dear", "e-off"]
    assert list(sink.of(SelectionEvent)[-1].excluded) == list(selection.excluded)
    assert selection.selection_reason.endswith(
        "; a-off excluded: disabled; b-down excluded: unavailable; d-dear excluded: estimated "
        "cost $0.2000 > max $0.1000; +1 more excluded")


async def test_unavailable_model_is_excluded_with_reason():
    selector, _, _ = build([CHEAP, DEAR], down=["cheap"])
    selection = await selector.select_model(request(), "implementation")
    assert selection.model_id == "dear"
    assert selection.excluded == {"cheap": "unavailable"}


async def test_unavailable_reason_quotes_the_health_checkers_last_error():
    from amm.models import ModelAvailability

    class Health(FakeHealth):
        def get_model_status(self, model_id: str) -> ModelAvailability:
            return ModelAvailability(model_id, False, 3, last_error="HTTP 503")

    registry = ModelRegistry.from_models([CHEAP, DEAR])
    selector = ModelSelector(registry, Health(["cheap"]), RateLimiter(registry), FakeMonitor())
    selection = await selector.select_model(request(), "implementation")
    assert selection.excluded == {"cheap": "unavailable: HTTP 503"}


async def test_rate_limit_headroom_lowers_availability_when_the_limiter_reports_it():
    class Limiter:
        def is_rate_limited(self, model_id: str) -> bool:
            return False

        def headroom(self, model_id: str) -> float:
            return {"cheap": 0.05, "dear": 0.5}[model_id]

    registry = ModelRegistry.from_models([CHEAP, DEAR])
    selector = ModelSelector(registry, FakeHealth(), Limiter(), FakeMonitor())
    selection = await selector.select_model(request(), "implementation")
    # cheap: 5 % left of a comfortable 20 % -> availability 0.25; dear: above 20 % -> full
    assert selection.scores["cheap"] == pytest.approx(0.30 + 0.25 + 0.25 * 0.905 + 0.20 * 0.25)
    assert selection.scores["dear"] == pytest.approx(0.30 * 0.9 + 0.25 * 0.755 + 0.20)


async def test_rate_limited_model_is_excluded_with_reason_and_reset_time():
    selector, limiter, _ = build([CHEAP, DEAR])
    limiter.provider_limited("cheap", retry_after_s=12)
    selection = await selector.select_model(request(), "implementation")
    assert selection.model_id == "dear"
    assert selection.excluded == {"cheap": "rate-limited (resets in 12s)"}
    assert "cheap excluded: rate-limited (resets in 12s)" in selection.selection_reason


async def test_models_already_tried_are_never_chosen_again():
    selector, _, _ = build([CHEAP, DEAR])
    selection = await selector.select_model(request(), "implementation", exclude={"cheap"})
    assert selection.model_id == "dear"
    assert selection.excluded == {"cheap": "already tried"}


async def test_demoted_model_is_used_only_when_nothing_else_is_eligible():
    selector, _, _ = build([CHEAP, DEAR])
    selection = await selector.select_model(request(), "implementation", demoted={"cheap"})
    assert selection.model_id == "dear"
    assert selection.excluded == {"cheap": "demoted for implementation"}
    last_resort = await selector.select_model(request(), "implementation", demoted={"cheap"},
                                              exclude={"dear"})
    assert last_resort.model_id == "cheap"
    assert "only demoted models were eligible" in last_resort.selection_reason


async def test_demotion_hook_is_consulted_per_agent_type():
    def demotion(model_id: str, agent_type: str) -> bool:
        return (model_id, agent_type) == ("cheap", "implementation")

    selector, _, _ = build([CHEAP, DEAR], demotion=demotion)
    assert (await selector.select_model(request(), "implementation")).model_id == "dear"
    assert (await selector.select_model(request(agent_type="review"), "review")).model_id == "cheap"


async def test_no_eligible_model_returns_none_and_still_emits_a_selection_event():
    selector, _, sink = build([CHEAP, DEAR], down=["cheap", "dear"])
    assert await selector.select_model(request(), "implementation") is None
    (event,) = sink.of(SelectionEvent)
    assert event.chosen is None
    assert event.excluded == {"cheap": "unavailable", "dear": "unavailable"}
    assert event.reason.startswith("no eligible model: cheap excluded: unavailable")


async def test_every_registered_model_is_either_scored_or_excluded():
    models = [CHEAP, DEAR, make_model("off", enabled=False), make_model("down"),
              make_model("tiny", context_window=10)]
    selector, _, _ = build(models, down=["down"])
    selection = await selector.select_model(request(), "implementation")
    assert set(selection.scores) | set(selection.excluded) == {m.id for m in models}
    assert not set(selection.scores) & set(selection.excluded)


# -- reason, event, ranking ---------------------------------------------------------------


async def test_selection_reason_reads_score_breakdown_traits_and_exclusions():
    selector, limiter, _ = build([CHEAP, DEAR, CAPABLE])
    limiter.provider_limited("capable")
    selection = await selector.select_model(
        request(), "implementation",
        SelectionConstraints(required_capabilities=["code-generation"]))
    assert selection.selection_reason == (
        "highest score 0.98 (capability 0.30, cost 0.25, performance 0.23, availability 0.20): "
        "cheapest and fastest and broadest capabilities with code-generation; "
        "dear excluded: missing capabilities: code-generation; "
        "capable excluded: rate-limited (resets in 60s)")


async def test_one_selection_event_per_call_with_scores_and_times():
    selector, _, sink = build([CHEAP, DEAR])
    selection = await selector.select_model(request(), "implementation")
    (event,) = sink.events
    assert isinstance(event, SelectionEvent)
    assert (event.chosen, event.task_id, event.agent_type) == ("cheap", "t-1", "implementation")
    assert event.scores == selection.scores
    assert event.reason == selection.selection_reason
    assert 0 < event.start_time_ns <= event.end_time_ns
    assert (event.experiment, event.arm, event.propensity) == (None, None, 1.0)


async def test_ties_are_broken_by_model_id():
    twins = [make_model("b-twin"), make_model("a-twin")]
    selector, _, _ = build(twins)
    selection = await selector.select_model(request(), "implementation")
    assert selection.model_id == "a-twin"
    assert [m.id for m, _ in selector.rank_models(twins, request())] == ["a-twin", "b-twin"]


def test_rank_models_orders_best_first_without_filtering():
    selector, _, _ = build([CHEAP, DEAR], down=["cheap"])
    ranked = selector.rank_models([DEAR, CHEAP], request())
    assert [m.id for m, _ in ranked] == ["cheap", "dear"]
    assert ranked[0][1] == pytest.approx(0.97625)


def test_suitability_score_uses_performance_data_after_min_samples():
    selector, _, _ = build([CHEAP, DEAR])
    base = selector.calculate_suitability_score(CHEAP, request())
    assert base == pytest.approx(0.97625)
    poor = PerformanceMetrics(
        model_id="cheap", window_hours=24, total_requests=10, successful_requests=5,
        failed_requests=5, success_rate=50.0, average_latency_ms=1000, p50_latency_ms=1000,
        p95_latency_ms=1500, p99_latency_ms=2000, average_quality_score=0.5)
    # performance 0.4*0.5 + 0.3*1.0 + 0.3*0.5 = 0.65 instead of 0.905, and availability
    # is scaled by the measured success rate: 0.20 * 0.5
    assert selector.calculate_suitability_score(CHEAP, request(), poor) == pytest.approx(
        0.30 + 0.25 + 0.25 * 0.65 + 0.20 * 0.5)
    few = PerformanceMetrics("cheap", 24, 2, 1, 1, 50.0, 1000, 1000, 1500, 2000, 0.5)
    assert selector.calculate_suitability_score(CHEAP, request(), few) == pytest.approx(base)


async def test_measured_success_and_quality_move_the_choice():
    monitor = FakeMonitor()
    monitor.stats[("cheap", "implementation")] = snapshot("cheap", success_rate=0.2, quality=0.3,
                                                          p50=3000)
    selector, _, _ = build([CHEAP, make_model("steady", cost_in=0.002, cost_out=0.004)],
                           monitor=monitor)
    selection = await selector.select_model(request(), "implementation")
    assert selection.model_id == "steady"


async def test_all_agent_stats_are_used_when_the_agent_type_has_too_few_samples():
    monitor = FakeMonitor()
    monitor.stats[("cheap", "implementation")] = snapshot("cheap", count=2, success_rate=1.0)
    monitor.stats[("cheap", None)] = snapshot("cheap", count=50, success_rate=0.1, quality=0.1,
                                              p50=5000)
    selector, _, _ = build([CHEAP, make_model("steady", cost_in=0.002, cost_out=0.004)],
                           monitor=monitor)
    assert (await selector.select_model(request(), "implementation")).model_id == "steady"


async def test_registry_changes_are_picked_up_through_its_version():
    selector, _, _ = build([DEAR])
    assert (await selector.select_model(request(), "implementation")).model_id == "dear"
    selector.registry.add_model(CHEAP)
    assert (await selector.select_model(request(), "implementation")).model_id == "cheap"


async def test_bad_input_is_a_typed_error():
    selector, _, sink = build([CHEAP])
    with pytest.raises(InvalidRequestError, match="ModelRequest"):
        await selector.select_model("write code", "implementation")  # type: ignore[arg-type]
    with pytest.raises(InvalidRequestError, match="agent_type"):
        await selector.select_model(request(), None)  # type: ignore[arg-type]
    assert sink.events == []


def test_score_context_is_per_request_and_scorer_caches_nothing_across_contexts():
    scorer = WeightedScorer()
    from amm.scoring import Candidate

    cand = Candidate(CHEAP, frozenset(CHEAP.capabilities), 0.001, 1000.0, 0.95, 0.75, False)
    a = ScoreContext(frozenset(), Priority.MEDIUM, 0.001, 0.01, 1000.0, 2)
    b = ScoreContext(frozenset(), Priority.MEDIUM, 0.0001, 0.001, 500.0, 2)
    assert scorer.score(cand, a).cost == pytest.approx(0.25)
    assert scorer.score(cand, b).cost == pytest.approx(0.0)
    assert scorer.score(cand, a).cost == pytest.approx(0.25)


# -- experiments --------------------------------------------------------------------------

EXPERIMENT = Experiment(name="impl-ab", agent_type="implementation",
                        arms={"cheap": 0.7, "dear": 0.3})


def test_assignment_is_deterministic_per_task_id():
    a, b = HashAssigner(), HashAssigner()
    arms = [a.assign(EXPERIMENT, f"task-{i}") for i in range(200)]
    assert arms == [b.assign(EXPERIMENT, f"task-{i}") for i in range(200)]
    assert set(arms) == {"cheap", "dear"}


def test_assignment_split_follows_the_weights_over_10000_task_ids():
    assigner = HashAssigner()
    counts = Counter(assigner.assign(EXPERIMENT, f"task-{i}") for i in range(10_000))
    # binomial sd at n=10,000, p=0.3 is 0.46 %: 2 % is over four sd
    assert abs(counts["cheap"] / 10_000 - 0.7) < 0.02
    assert abs(counts["dear"] / 10_000 - 0.3) < 0.02


def task_with_arm(arm: str) -> str:
    assigner = HashAssigner()
    return next(f"task-{i}" for i in range(1000) if assigner.assign(EXPERIMENT, f"task-{i}") == arm)


async def test_experiment_arm_is_chosen_with_its_weight_as_propensity():
    selector, _, sink = build([CHEAP, DEAR], experiments=[EXPERIMENT])
    selection = await selector.select_model(request(task_id=task_with_arm("dear")),
                                            "implementation")
    assert selection.model_id == "dear"  # scoring alone would pick cheap
    assert (selection.experiment, selection.arm) == ("impl-ab", "dear")
    assert selection.propensity == pytest.approx(0.3)
    assert selection.selection_reason.startswith("experiment impl-ab: arm dear (propensity 0.30)")
    (event,) = sink.events
    assert (event.experiment, event.arm, event.propensity) == ("impl-ab", "dear", 0.3)


async def test_rate_limited_arm_falls_back_records_the_arm_and_why():
    other = make_model("other", cost_in=0.005, cost_out=0.01)
    selector, limiter, _ = build([CHEAP, DEAR, other], experiments=[EXPERIMENT])
    limiter.provider_limited("dear", retry_after_s=30)
    selection = await selector.select_model(request(task_id=task_with_arm("dear")),
                                            "implementation")
    assert selection.model_id == "cheap"
    assert (selection.experiment, selection.arm) == ("impl-ab", "dear")
    assert selection.model_id != selection.arm  # the arm was not honoured
    assert selection.selection_reason.startswith(
        "experiment impl-ab: arm dear unavailable: rate-limited (resets in 30s); "
        "fell back to highest score")
    # cheap is picked when its own arm is drawn (0.7) and as the fallback of dear (0.3)
    assert selection.propensity == pytest.approx(1.0)


async def test_fallback_outside_the_experiment_gets_the_ineligible_arms_weight():
    best = make_model("best", cost_in=0.0001, cost_out=0.0002, latency_ms=200,
                      capabilities=["text-generation", "code-generation"])
    selector, _, _ = build([CHEAP, DEAR, best], experiments=[EXPERIMENT], down=["dear"])
    selection = await selector.select_model(request(task_id=task_with_arm("dear")),
                                            "implementation")
    assert selection.model_id == "best"
    assert selection.propensity == pytest.approx(0.3)
    honoured = await selector.select_model(request(task_id=task_with_arm("cheap")),
                                           "implementation")
    assert honoured.model_id == "cheap"
    assert honoured.propensity == pytest.approx(0.7)


def test_logging_propensity_sums_arm_weight_and_fallback_mass():
    arms = {"a": 0.5, "b": 0.3, "c": 0.2}
    assert logging_propensity(arms, "a", [], fallback="a") == pytest.approx(0.5)
    assert logging_propensity(arms, "a", ["b"], fallback="a") == pytest.approx(0.8)
    assert logging_propensity(arms, "a", ["b"], fallback="z") == pytest.approx(0.5)
    assert logging_propensity(arms, "z", ["b", "c"], fallback="z") == pytest.approx(0.5)


async def test_requests_without_task_id_are_not_enrolled_in_experiments():
    selector, _, _ = build([CHEAP, DEAR], experiments=[EXPERIMENT])
    selection = await selector.select_model(request(task_id=""), "implementation")
    assert (selection.experiment, selection.arm, selection.propensity) == (None, None, 1.0)


async def test_experiments_apply_only_to_their_agent_type():
    selector, _, _ = build([CHEAP, DEAR], experiments=[EXPERIMENT])
    selection = await selector.select_model(request(task_id=task_with_arm("dear"),
                                                    agent_type="review"), "review")
    assert (selection.model_id, selection.experiment) == ("cheap", None)


async def test_selection_over_fleet_statistics_reads_the_merged_snapshot(tmp_path):
    """In a fleet the selector is given FleetStats, which merges the other workers'
    statistics into ``snapshot``; selection must read them through it (not around it
    through the wrapped monitor): another worker's 200 requests at quality 0.95 and
    success 1.0 make ``dear`` a measured candidate here, with nothing observed locally."""
    import json as _json

    from amm.state.stats import FleetStats

    monitor = PerformanceMonitor(tmp_path / "perf.db")
    try:
        fleet = FleetStats(monitor)
        other = [200, 200, 900.0, 850.0, 1500.0, 2000.0, 0.95 * 200, 200, 0.5, 40_000, 20_000]
        fleet.merge({"worker-2": _json.dumps({"spend": 0.5, "models": {"dear": other}})})
        selector, _, sink = build([CHEAP, DEAR], monitor=fleet)
        await selector.select_model(request(agent_type="review"), "review")
        rows = {row[0]: row for row in sink.events[-1].candidates}
        assert rows["dear"][4] == pytest.approx(0.95)  # quality: the fleet's, measured
        assert rows["dear"][5] == pytest.approx(850.0)  # p50 latency: the fleet's
        assert rows["cheap"][4] != pytest.approx(0.95)  # nothing anywhere: the prior
    finally:
        monitor.close()
