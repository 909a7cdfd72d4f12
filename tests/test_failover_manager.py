"""FailoverManager: classification, backoff, alternatives, history, alerts, FailoverError."""

from __future__ import annotations

import logging

import pytest

from amm.errors import (
    AuthenticationError,
    BudgetExceededError,
    ConfigurationError,
    ContextWindowExceededError,
    FailoverError,
    InvalidRequestError,
    ModelNotFoundError,
    ModelUnavailableError,
    ProviderError,
    ProviderTimeoutError,
    QualityThresholdError,
    QuotaExceededError,
    RateLimitError,
)
from amm.failover_manager import ExponentialBackoff, FailoverManager, classify
from amm.models import FailoverReason, ModelRequest, ModelResponse, TokenUsage
from amm.rate_limiter import RateLimiter
from amm.registry import ModelRegistry
from amm.selector import ModelSelector
from telemetry.events import DegradationEvent, FailoverEvent
from tests.routing_fakes import FakeHealth, FakeMonitor, ListSink, make_model

# Ranked by price: a < b < c < d (all else equal, the cheapest wins).
MODELS = [make_model(m, cost_in=0.001 * (i + 1), cost_out=0.002 * (i + 1))
          for i, m in enumerate(["a", "b", "c", "d", "e"])]


class Clock:
    def __init__(self) -> None:
        self.now = 10_000.0

    def __call__(self) -> float:
        return self.now


class Sleeps:
    def __init__(self) -> None:
        self.calls: list[float] = []

    async def __call__(self, seconds: float) -> None:
        self.calls.append(seconds)


def build(models=MODELS, **kw):
    registry = ModelRegistry.from_models(models)
    sink = ListSink()
    selector = ModelSelector(registry, FakeHealth(), RateLimiter(registry), FakeMonitor())
    sleeps, clock = Sleeps(), Clock()
    manager = FailoverManager(selector, sleep=sleeps, clock=clock, events=sink, **kw)
    return manager, sleeps, clock, sink


REQUEST = ModelRequest(prompt="Summarise the release notes", task_id="task-9",
                       agent_type="research", max_tokens=100)


def ok(model_id: str) -> ModelResponse:
    return ModelResponse(content="done.", model_id=model_id, token_usage=TokenUsage(5, 2),
                         latency_ms=10.0, cost=0.0)


def scripted(errors: dict[str, BaseException]):
    calls: list[str] = []

    async def request_func(model_id: str) -> ModelResponse:
        calls.append(model_id)
        if model_id in errors:
            raise errors[model_id]
        return ok(model_id)

    return request_func, calls


async def test_primary_success_needs_no_failover():
    manager, sleeps, _, sink = build()
    func, calls = scripted({})
    response = await manager.execute_with_failover("c", REQUEST, func)
    assert (response.model_id, calls, sleeps.calls, sink.events) == ("c", ["c"], [], [])


async def test_failure_moves_to_the_best_untried_alternative_after_backoff():
    manager, sleeps, _, sink = build(base_backoff_seconds=0.002)
    func, calls = scripted({"c": ProviderError("503")})
    response = await manager.execute_with_failover("c", REQUEST, func)
    assert response.model_id == "a"
    assert calls == ["c", "a"]
    assert sleeps.calls == [0.002]
    (event,) = sink.of(FailoverEvent)
    assert (event.from_model, event.to_model, event.reason, event.task_id, event.agent_type) == (
        "c", "a", "error", "task-9", "research")


async def test_backoff_doubles_2_4_8_scaled_to_milliseconds_and_error_says_everything():
    manager, sleeps, _, _ = build(max_retries=3, base_backoff_seconds=0.002)
    last = ProviderTimeoutError("no answer in 60s")
    func, calls = scripted({
        "b": RateLimitError("429", retry_after_seconds=2),
        "a": ModelUnavailableError("health checks failing"),
        "c": QuotaExceededError("insufficient_quota"),
        "d": last,
    })
    with pytest.raises(FailoverError) as info:
        await manager.execute_with_failover("b", REQUEST, func)
    assert sleeps.calls == [0.002, 0.004, 0.008]
    error = info.value
    assert calls == error.attempted_models == ["b", "a", "c", "d"]
    assert error.failure_reasons == {
        "b": "rate_limited: retry after 2s",
        "a": "unavailable: health checks failing",
        "c": "quota_exceeded: insufficient_quota",
        "d": "timeout: no answer in 60s",
    }
    assert error.task_id == "task-9"
    assert error.__cause__ is last
    assert "gave up after 3 failovers" in error.error_message


def test_default_backoff_is_2_4_8_seconds():
    manager, _, _, _ = build()
    assert [manager.backoff.delay(k) for k in range(3)] == [2.0, 4.0, 8.0]


def test_exponential_backoff_caps_at_max_and_rejects_negative_values():
    assert [ExponentialBackoff(1, factor=3, max_s=5).delay(k) for k in range(3)] == [1, 3, 5]
    with pytest.raises(ConfigurationError, match="base_s"):
        ExponentialBackoff(-1)


async def test_injected_backoff_policy_is_used():
    class Fixed:
        def delay(self, attempt: int) -> float:
            return 0.5

    manager, sleeps, _, _ = build(backoff=Fixed())
    func, _ = scripted({"a": ProviderError("x"), "b": ProviderError("x")})
    await manager.execute_with_failover("a", REQUEST, func)
    assert sleeps.calls == [0.5, 0.5]


@pytest.mark.parametrize(("error", "reason"), [
    (RateLimitError("x"), FailoverReason.RATE_LIMITED),
    (ProviderTimeoutError("x"), FailoverReason.TIMEOUT),
    (ModelUnavailableError("x"), FailoverReason.UNAVAILABLE),
    (ProviderError("x"), FailoverReason.ERROR),
    (AuthenticationError("x"), FailoverReason.AUTHENTICATION),
    (ModelNotFoundError("x"), FailoverReason.MODEL_NOT_FOUND),
    (ContextWindowExceededError("x"), FailoverReason.CONTEXT_TOO_LONG),
    (QuotaExceededError("x"), FailoverReason.QUOTA_EXCEEDED),
    (QualityThresholdError("x"), FailoverReason.LOW_QUALITY),
    (RuntimeError("sdk exploded"), FailoverReason.ERROR),
])
def test_errors_are_classified_into_failover_reasons(error, reason):
    assert classify(error) is reason


@pytest.mark.parametrize("error", [BudgetExceededError("spent"), InvalidRequestError("bad")])
async def test_budget_and_invalid_request_errors_are_raised_without_failover(error):
    manager, sleeps, _, sink = build()
    func, calls = scripted({"a": error})
    with pytest.raises(type(error)) as info:
        await manager.execute_with_failover("a", REQUEST, func)
    assert info.value is error
    assert (calls, sleeps.calls, sink.events) == (["a"], [], [])


async def test_permanent_errors_of_one_model_still_fail_over_to_another():
    manager, _, _, _ = build()
    func, _ = scripted({"a": AuthenticationError("401 invalid key")})
    assert (await manager.execute_with_failover("a", REQUEST, func)).model_id == "b"
    assert manager.history()[0].reason is FailoverReason.AUTHENTICATION


async def test_foreign_exception_is_wrapped_as_provider_error_and_failed_over():
    manager, _, _, _ = build(max_retries=0)
    boom = ValueError("connection reset")
    func, _ = scripted({"a": boom})
    with pytest.raises(FailoverError) as info:
        await manager.execute_with_failover("a", REQUEST, func)
    wrapped = info.value.__cause__
    assert isinstance(wrapped, ProviderError)
    assert wrapped.__cause__ is boom
    assert info.value.failure_reasons == {"a": "error: ValueError: connection reset"}


async def test_context_too_long_fails_over_only_to_a_larger_context_window():
    models = [
        make_model("small", context_window=8_000, cost_in=0.0001, cost_out=0.0001),
        make_model("mid", context_window=16_000, cost_in=0.001, cost_out=0.002),
        make_model("mid-twin", context_window=16_000, cost_in=0.001, cost_out=0.002),
        make_model("large", context_window=128_000, cost_in=0.01, cost_out=0.03),
    ]
    manager, _, _, _ = build(models)
    func, calls = scripted({"mid": ContextWindowExceededError("prompt too long")})
    response = await manager.execute_with_failover("mid", REQUEST, func)
    assert response.model_id == "large"
    assert calls == ["mid", "large"]


async def test_no_alternative_left_raises_with_the_single_attempt():
    manager, sleeps, _, sink = build([make_model("only")])
    func, _ = scripted({"only": ProviderError("500")})
    with pytest.raises(FailoverError) as info:
        await manager.execute_with_failover("only", REQUEST, func)
    assert info.value.attempted_models == ["only"]
    assert "no alternative left" in info.value.error_message
    assert sleeps.calls == []
    (event,) = sink.of(FailoverEvent)
    assert event.to_model is None


async def test_agent_type_and_constraints_are_passed_to_the_selector():
    from amm.models import SelectionConstraints

    models = [make_model("a"), make_model("b", provider="anthropic"),
              make_model("c", cost_in=0.5, cost_out=0.5)]
    manager, _, _, _ = build(models)
    func, calls = scripted({"a": ProviderError("x")})
    await manager.execute_with_failover(
        "a", REQUEST, func, agent_type="research",
        constraints=SelectionConstraints(excluded_providers=["anthropic"]))
    assert calls == ["a", "c"]


async def test_select_alternative_never_returns_the_failed_or_excluded_models():
    manager, _, _, _ = build()
    assert await manager.select_alternative("a", REQUEST, FailoverReason.RATE_LIMITED) == "b"
    assert await manager.select_alternative("a", REQUEST, FailoverReason.ERROR,
                                            exclude=["b", "c"]) == "d"


async def test_more_than_three_failovers_in_an_hour_alert_once_per_crossing(caplog):
    manager, _, clock, sink = build()
    caplog.set_level(logging.WARNING, logger="amm.failover_manager")
    for _ in range(3):
        manager.record_failover("a", "b", FailoverReason.RATE_LIMITED)
        clock.now += 60
    assert sink.of(DegradationEvent) == []
    manager.record_failover("a", "b", FailoverReason.TIMEOUT)  # the fourth within the hour
    manager.record_failover("a", "b", FailoverReason.TIMEOUT)
    (alert,) = sink.of(DegradationEvent)
    assert (alert.metric, alert.current_value, alert.threshold) == ("failovers", 4.0, 3.0)
    assert manager.alerting
    assert "4 failovers in the last 3600s" in caplog.text
    clock.now += 3600  # the burst ages out of the window: re-armed
    manager.record_failover("a", "b", FailoverReason.TIMEOUT)
    assert not manager.alerting
    for _ in range(3):
        manager.record_failover("a", "b", FailoverReason.TIMEOUT)
    assert len(sink.of(DegradationEvent)) == 2


async def test_history_is_bounded_and_queryable_by_time():
    manager, _, clock, _ = build(history_size=3)
    for i in range(5):
        manager.record_failover(f"m{i}", None, FailoverReason.ERROR, task_id=f"t{i}")
        clock.now += 10
    assert [r.original_model for r in manager.history()] == ["m2", "m3", "m4"]
    assert [r.task_id for r in manager.history(since=clock.now - 20)] == ["t3", "t4"]
    assert manager.failover_count(window_s=15) == 1
    assert manager.failover_count(window_s=3600) == 3


def test_bad_settings_are_typed_errors():
    with pytest.raises(ConfigurationError, match="max_retries"):
        build(max_retries=-1)
    with pytest.raises(ConfigurationError, match="alert_window_s"):
        build(alert_window_s=0)
