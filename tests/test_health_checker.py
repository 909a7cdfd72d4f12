"""HealthChecker: transitions, backoff, what counts as a failure, passive health from
traffic, the one background loop, and a real check against the provider simulator."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from amm.errors import (
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    ProviderTimeoutError,
    RateLimitError,
)
from amm.health_checker import HealthChecker, counts_against_health, ping_request
from amm.models import ModelMetadata, ModelRequest, ModelResponse, RateLimits, TokenUsage
from amm.registry import ModelRegistry
from telemetry.events import AttemptEvent, HealthChangeEvent

T0 = datetime(2025, 5, 1, 8, 0, tzinfo=UTC)


class FakeTime:
    """Monotonic clock, wall clock and sleep in one: sleeping moves the clock. After
    ``rounds`` sleeps the loop parks, so a test sees a fixed number of rounds."""

    def __init__(self, rounds: int = 10**9) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []
        self.rounds = rounds
        self.parked = asyncio.Event()

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t)

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        if len(self.sleeps) >= self.rounds:
            self.parked.set()
            await asyncio.Event().wait()  # until cancelled
        self.t += delay
        await asyncio.sleep(0)


class FakeClient:
    """Stands in for APIClientManager: answers by a per-model script of outcomes."""

    def __init__(self) -> None:
        self.script: dict[str, list[BaseException | None]] = {}
        self.calls: list[tuple[str, ModelRequest]] = []
        self.in_flight = 0
        self.max_in_flight = 0

    async def send_request(self, model_id: str, request: ModelRequest) -> ModelResponse:
        self.calls.append((model_id, request))
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)
            outcomes = self.script.get(model_id) or [None]
            outcome = outcomes.pop(0) if len(outcomes) > 1 else outcomes[0]
            if outcome is not None:
                raise outcome
            return ModelResponse("pong", model_id, TokenUsage(1, 1), 12.5, 0.0)
        finally:
            self.in_flight -= 1


class ListSink:
    def __init__(self) -> None:
        self.events: list[Any] = []

    def record(self, event: Any) -> None:
        self.events.append(event)


def model(model_id: str, enabled: bool = True, **over: Any) -> ModelMetadata:
    m = ModelMetadata(
        id=model_id, provider="openai", name=model_id, capabilities=["text-generation"],
        cost_per_1k_input_tokens=0.001, cost_per_1k_output_tokens=0.002,
        rate_limits=RateLimits(100, 100_000), context_window=8000,
        average_response_time_ms=500, enabled=enabled)
    return replace(m, **over)


def attempt(model_id: str, success: bool, error_type: str | None = None, *,
            agent: str = "impl", task: str = "t1") -> AttemptEvent:
    return AttemptEvent(model_id, "openai", agent, task, 1, 30.0, success,
                        error_type=error_type, error_message=error_type and f"{error_type}!")


def down() -> ProviderError:
    return ProviderError("503 from upstream", error_type="503", status_code=503)


@pytest.fixture
def registry() -> ModelRegistry:
    return ModelRegistry.from_models([model("a"), model("b"), model("off", enabled=False)])


@pytest.fixture
def fake() -> FakeTime:
    return FakeTime()


@pytest.fixture
def client() -> FakeClient:
    return FakeClient()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def checker(registry: ModelRegistry, fake: FakeTime, client: FakeClient,
            sink: ListSink) -> HealthChecker:
    return HealthChecker(registry, 60, api_client=client, clock=fake, wall_clock=fake.wall,
                         sleep=fake.sleep, events=sink, max_backoff_s=300)


async def test_unavailable_after_three_consecutive_failures_and_back_after_one_success(
    checker: HealthChecker, client: FakeClient, sink: ListSink
) -> None:
    assert checker.is_model_available("a")
    client.script["a"] = [down(), down(), down(), None]
    for expected_failures in (1, 2):
        status = await checker.check_model_health("a")
        assert status.is_available and status.consecutive_failures == expected_failures
    status = await checker.check_model_health("a")
    assert not status.is_available and status.consecutive_failures == 3
    assert status.error_message == "503 from upstream"
    assert not checker.is_model_available("a")
    status = await checker.check_model_health("a")
    assert status.is_available and status.consecutive_failures == 0
    assert status.response_time_ms == 12.5
    assert sink.events == [HealthChangeEvent("a", False, 3, "503 from upstream"),
                           HealthChangeEvent("a", True, 0)]


async def test_a_check_sends_the_one_token_ping(checker: HealthChecker,
                                                client: FakeClient) -> None:
    await checker.check_model_health("a")
    ((model_id, request),) = client.calls
    assert model_id == "a" and request == ping_request()
    assert (request.prompt, request.max_tokens, request.temperature) == ("ping", 1, 0)
    assert (request.agent_type, request.task_id) == ("health", "health-check")


async def test_failed_models_are_rechecked_with_capped_exponential_backoff(
    checker: HealthChecker, client: FakeClient, fake: FakeTime
) -> None:
    client.script["a"] = [down()]
    waits = []
    for _ in range(5):
        await checker.check_model_health("a")
        next_check = checker.get_model_status("a").next_check
        assert next_check is not None
        waits.append((next_check - fake.wall()).total_seconds())
    assert waits == [60, 120, 240, 300, 300]
    client.script["a"] = [None]
    await checker.check_model_health("a")
    assert checker.get_model_status("a").next_check == fake.wall() + timedelta(seconds=60)


async def test_status_explains_why_a_model_is_unavailable(
    checker: HealthChecker, client: FakeClient, fake: FakeTime
) -> None:
    client.script["a"] = [ProviderTimeoutError("no answer in 30s", error_type="timeout")]
    for _ in range(3):
        await checker.check_model_health("a")
        fake.t += 1
    status = checker.get_model_status("a")
    assert not status.is_available
    assert status.unavailable_since == T0 + timedelta(seconds=2)
    assert status.last_error == "no answer in 30s"
    assert status.last_check == T0 + timedelta(seconds=2)
    assert "after 3 consecutive failures: no answer in 30s" in status.reason


async def test_rate_limits_and_client_errors_do_not_count_against_health(
    checker: HealthChecker, client: FakeClient
) -> None:
    client.script["a"] = [RateLimitError("slow down", error_type="rate_limited"),
                          AuthenticationError("bad key", error_type="authentication")]
    for _ in range(4):
        status = await checker.check_model_health("a")
        assert status.is_available and status.consecutive_failures == 0
        assert status.error_message in ("slow down", "bad key")


def test_which_error_types_count_against_health() -> None:
    for counted in ("timeout", "503", "500", "connection_error", "malformed_response",
                    "ProviderError", "SomethingNew", None):
        assert counts_against_health(counted), counted
    for ignored in ("rate_limited", "insufficient_quota", "authentication", "404", "400",
                    "429", "bad_request", "context_window_exceeded", "model_not_found"):
        assert not counts_against_health(ignored), ignored


def test_passive_health_counts_traffic_failures_and_successes(
    checker: HealthChecker, sink: ListSink
) -> None:
    for _ in range(2):
        checker.record(attempt("b", False, "timeout"))
    checker.record(attempt("b", False, "rate_limited"))  # not a health failure
    checker.record(attempt("b", False, "400"))
    assert checker.is_model_available("b")
    checker.record(attempt("b", False, "connection_error"))
    assert not checker.is_model_available("b")
    assert checker.get_model_status("b").last_error == "connection_error!"
    checker.record(attempt("b", True))
    assert checker.is_model_available("b")
    assert checker.get_model_status("b").last_response_time_ms == 30.0
    assert [e.is_available for e in sink.events] == [False, True]


def test_the_health_checks_own_attempts_are_not_counted_as_traffic(
    checker: HealthChecker,
) -> None:
    for _ in range(5):
        checker.record(attempt("a", False, "503", agent="health", task="health-check"))
    assert checker.get_model_status("a").consecutive_failures == 0


def test_unknown_models_are_unavailable_and_their_status_is_a_typed_error(
    checker: HealthChecker,
) -> None:
    assert not checker.is_model_available("nope")
    with pytest.raises(InvalidRequestError, match="unknown model 'nope'"):
        checker.get_model_status("nope")
    statuses = checker.statuses()
    assert set(statuses) == {"a", "b", "off"}
    assert all(s.is_available for s in statuses.values())


async def test_checking_an_unknown_model_raises_and_sends_nothing(
    checker: HealthChecker, client: FakeClient
) -> None:
    with pytest.raises(InvalidRequestError, match="nope"):
        await checker.check_model_health("nope")
    assert client.calls == []


async def test_the_loop_checks_enabled_models_when_due_and_never_at_start_by_default(
    registry: ModelRegistry, client: FakeClient
) -> None:
    fake = FakeTime(rounds=3)
    checker = HealthChecker(registry, 60, api_client=client, clock=fake,
                            wall_clock=fake.wall, sleep=fake.sleep)
    await checker.start()
    await asyncio.wait_for(fake.parked.wait(), 5)
    await checker.stop()
    # round 1 at t=0: nothing due; round 2 at t=60: a and b; round 3 at t=120: a and b
    assert fake.sleeps == [60, 60, 60]
    assert [m for m, _ in client.calls] == ["a", "b", "a", "b"]


async def test_check_on_start_pings_every_enabled_model_at_once(
    registry: ModelRegistry, client: FakeClient
) -> None:
    fake = FakeTime(rounds=1)
    checker = HealthChecker(registry, 60, api_client=client, clock=fake,
                            wall_clock=fake.wall, sleep=fake.sleep, check_on_start=True)
    await checker.start()
    await asyncio.wait_for(fake.parked.wait(), 5)
    await checker.stop()
    assert sorted(m for m, _ in client.calls) == ["a", "b"]


async def test_the_loop_skips_models_backing_off_and_bounds_concurrency(
    client: FakeClient,
) -> None:
    registry = ModelRegistry.from_models([model(f"m{i}") for i in range(10)])
    client.script["m0"] = [down()]
    fake = FakeTime(rounds=3)
    checker = HealthChecker(registry, 10, api_client=client, clock=fake, wall_clock=fake.wall,
                            sleep=fake.sleep, check_on_start=True, max_concurrent_checks=3)
    await checker.start()
    await asyncio.wait_for(fake.parked.wait(), 5)
    await checker.stop()
    assert client.max_in_flight == 3
    # t=0 and t=10: all ten; t=20: all but m0, which failed twice and waits until t=30
    assert len(client.calls) == 29
    assert "m0" not in [m for m, _ in client.calls[20:]]
    assert checker.get_model_status("m0").consecutive_failures == 2
    assert fake.sleeps == [10, 10, 10]


async def test_a_failing_round_is_logged_and_the_loop_goes_on(
    registry: ModelRegistry, client: FakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    class BrokenOnce:
        def __init__(self) -> None:
            self.broken = True

        def get_model(self, model_id: str) -> ModelMetadata | None:
            return registry.get_model(model_id)

        def models(self) -> list[ModelMetadata]:
            if self.broken:
                self.broken = False
                raise RuntimeError("registry file vanished")
            return registry.models()

    fake = FakeTime(rounds=2)
    checker = HealthChecker(BrokenOnce(), 60, api_client=client, clock=fake,
                            wall_clock=fake.wall, sleep=fake.sleep, check_on_start=False)
    await checker.start()
    await asyncio.wait_for(fake.parked.wait(), 5)
    assert checker.running
    await checker.stop()
    assert "a round of checks failed" in caplog.text
    assert fake.sleeps == [60, 60]


async def test_start_and_stop_are_idempotent_and_stop_leaves_no_task(
    checker: HealthChecker,
) -> None:
    await checker.stop()
    await checker.start()
    task = checker._task
    await checker.start()
    assert checker._task is task and checker.running
    await checker.stop()
    await checker.stop()
    assert task is not None and task.done() and not checker.running
    assert [t for t in asyncio.all_tasks() if t.get_name() == "amm-health-checker"] == []


async def test_a_real_check_against_the_simulator_marks_an_outage_and_its_end(
    make_simulator: Any,
) -> None:
    from amm.api_client import APIClientManager
    from amm.api_key_manager import APIKeyManager
    from amm.sim.profile import ModelProfile

    sim = make_simulator({"flaky": ModelProfile(latency_ms=0, latency_jitter_ms=0,
                                                outages=((0, 3),))})
    registry = ModelRegistry.from_models([model(
        "flaky", litellm_model="openai/flaky", api_base=sim.api_base("openai"))])
    keys = APIKeyManager()
    keys.add_key("openai", "sk-test-openai-0123456789abcdef0123")

    class Forward:  # the client's events reach the checker, as the manager wires them
        target: HealthChecker | None = None

        def record(self, event: Any) -> None:
            assert self.target is not None
            self.target.record(event)

    forward = Forward()
    sink = ListSink()
    async with APIClientManager(keys, registry=registry, timeout_s=5.0,
                                events=forward) as client:
        checker = HealthChecker(registry, 60, api_client=client, events=sink)
        forward.target = checker
        results = [await checker.check_model_health("flaky") for _ in range(4)]
    assert [r.consecutive_failures for r in results] == [1, 2, 3, 0]
    assert [r.is_available for r in results] == [True, True, False, True]
    assert [e.is_available for e in sink.events] == [False, True]
