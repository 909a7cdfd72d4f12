"""RateLimiter: the 90 % line, sliding windows, exact resets, provider 429s and
headers, atomic reservations under concurrency, listener and bad input."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from amm.errors import ConfigurationError, InvalidRequestError
from amm.models import ModelMetadata, RateLimits
from amm.rate_limiter import RateLimiter
from amm.registry import ModelRegistry
from telemetry.events import AttemptEvent, RateLimitedEvent

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class FakeClock:
    """A monotonic clock the test moves by hand, with the matching wall clock."""

    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def wall(self) -> datetime:
        return T0 + timedelta(seconds=self.t - 1000.0)


class ListSink:
    def __init__(self) -> None:
        self.events: list[object] = []

    def record(self, event: object) -> None:
        self.events.append(event)


def model(model_id: str, rpm: int, tpm: int) -> ModelMetadata:
    return ModelMetadata(
        id=model_id, provider="openai", name=model_id, capabilities=["text-generation"],
        cost_per_1k_input_tokens=0.001, cost_per_1k_output_tokens=0.002,
        rate_limits=RateLimits(requests_per_minute=rpm, tokens_per_minute=tpm),
        context_window=8000, average_response_time_ms=500,
    )


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def sink() -> ListSink:
    return ListSink()


@pytest.fixture
def limiter(clock: FakeClock, sink: ListSink) -> RateLimiter:
    registry = ModelRegistry.from_models(
        [model("small", 10, 100_000), model("tokens", 1000, 1000), model("big", 10_000, 10**7)]
    )
    return RateLimiter(registry, clock=clock, wall_clock=clock.wall, events=sink)


async def test_ninth_request_of_ten_per_minute_makes_the_model_limited(
    limiter: RateLimiter,
) -> None:
    for _ in range(8):
        await limiter.record_request("small", tokens_used=10)
    assert not limiter.is_rate_limited("small")
    status = await limiter.check_rate_limit("small", estimated_tokens=10)
    assert not status.is_limited and status.requests_remaining == 1
    await limiter.record_request("small", tokens_used=10)
    assert limiter.is_rate_limited("small")
    status = await limiter.check_rate_limit("small", estimated_tokens=10)
    assert status.is_limited and status.requests_remaining == 0


async def test_token_window_limits_at_ninety_percent_of_tokens_per_minute(
    limiter: RateLimiter,
) -> None:
    await limiter.record_request("tokens", tokens_used=800)
    assert (await limiter.check_rate_limit("tokens", 100)).is_limited is False
    assert (await limiter.check_rate_limit("tokens", 101)).is_limited is True
    assert (await limiter.check_rate_limit("tokens", 0)).tokens_remaining == 100
    assert not limiter.is_rate_limited("tokens")
    await limiter.record_request("tokens", tokens_used=100)
    assert limiter.is_rate_limited("tokens")


async def test_window_slides_old_requests_out_after_window_seconds(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    for _ in range(9):
        await limiter.record_request("small", tokens_used=1)
    assert limiter.is_rate_limited("small")
    clock.t += 59.999
    assert limiter.is_rate_limited("small")
    clock.t += 0.001
    assert not limiter.is_rate_limited("small")
    assert (await limiter.check_rate_limit("small", 1)).requests_remaining == 9


async def test_reset_time_is_when_the_oldest_needed_entry_leaves_the_window(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    for _ in range(9):  # requests at +0, +5, ... +40 s
        await limiter.record_request("small", tokens_used=1)
        clock.t += 5.0
    # now = +45 s; the first request leaves at +60 s: 15 s from now
    status = await limiter.check_rate_limit("small", 1)
    assert status.is_limited
    assert status.reset_time == T0 + timedelta(seconds=60)
    assert limiter.get_time_until_reset("small") == 15
    clock.t += 14.5
    assert limiter.get_time_until_reset("small") == 1  # 0.5 s rounds up
    clock.t += 0.5
    assert limiter.get_time_until_reset("small") is None


async def test_reset_time_for_tokens_waits_until_enough_tokens_expire(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    await limiter.record_request("tokens", tokens_used=300)  # +0
    clock.t += 10
    await limiter.record_request("tokens", tokens_used=300)  # +10
    clock.t += 10
    await limiter.record_request("tokens", tokens_used=300)  # +20
    # 900 used; 600 more needs the first two entries gone: at +70 s
    status = await limiter.check_rate_limit("tokens", 600)
    assert status.reset_time == T0 + timedelta(seconds=70)
    # 1 token needs only the first: at +60 s
    assert limiter.get_time_until_reset("tokens") == 40


async def test_provider_retry_after_extends_but_never_shortens(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    limiter.provider_limited("big", retry_after_s=30)
    assert limiter.get_time_until_reset("big") == 30
    limiter.provider_limited("big", retry_after_s=10)
    assert limiter.get_time_until_reset("big") == 30
    limiter.provider_limited("big", retry_after_s=90)
    assert limiter.get_time_until_reset("big") == 90
    status = await limiter.check_rate_limit("big", 1)
    assert status.is_limited and status.reset_time == T0 + timedelta(seconds=90)
    clock.t += 90
    assert not limiter.is_rate_limited("big")


async def test_a_429_without_retry_after_limits_for_sixty_seconds(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    await limiter.record_request("big", tokens_used=0, was_rate_limited=True)
    assert limiter.get_time_until_reset("big") == 60
    clock.t += 60
    assert limiter.get_time_until_reset("big") is None


async def test_headers_reporting_less_remaining_capacity_are_believed_until_reset(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    await limiter.record_request("small", tokens_used=1)
    limiter.update_from_headers("small", remaining_requests=1, reset_requests_s=20)
    # provider: 9 of 10 used, so 8 extra beyond our 1: at the 90 % line
    assert limiter.is_rate_limited("small")
    assert (await limiter.check_rate_limit("small", 1)).requests_remaining == 0
    assert limiter.get_time_until_reset("small") == 20
    clock.t += 20
    assert not limiter.is_rate_limited("small")


async def test_headers_reporting_more_capacity_leave_our_count_standing(
    limiter: RateLimiter,
) -> None:
    for _ in range(9):
        await limiter.record_request("small", tokens_used=1)
    limiter.update_from_headers("small", remaining_requests=10, remaining_tokens=100_000)
    assert limiter.is_rate_limited("small")


async def test_remaining_tokens_header_limits_the_token_window(limiter: RateLimiter) -> None:
    limiter.update_from_headers("tokens", remaining_tokens=150, reset_tokens_s=30)
    assert (await limiter.check_rate_limit("tokens", 60)).is_limited
    assert (await limiter.check_rate_limit("tokens", 50)).is_limited is False


def test_two_hundred_concurrent_threads_never_exceed_the_limit(clock: FakeClock) -> None:
    registry = ModelRegistry.from_models([model("m", 100, 10**6)])
    limiter = RateLimiter(registry, clock=clock, wall_clock=clock.wall)
    start = threading.Barrier(20)

    def worker() -> int:
        start.wait()
        return sum(limiter.acquire("m", 10) is not None for _ in range(10))

    with ThreadPoolExecutor(20) as pool:
        admitted = sum(pool.map(lambda _: worker(), range(20)))
    assert admitted == 90  # floor(0.9 * 100)
    assert limiter.is_rate_limited("m")


async def test_two_hundred_concurrent_tasks_never_exceed_the_token_limit(
    clock: FakeClock,
) -> None:
    registry = ModelRegistry.from_models([model("m", 10_000, 1000)])
    limiter = RateLimiter(registry, clock=clock, wall_clock=clock.wall)

    async def caller() -> bool:
        await asyncio.sleep(0)
        return limiter.acquire("m", 7) is not None

    results = await asyncio.gather(*(caller() for _ in range(200)))
    assert sum(results) == 128  # floor(900 / 7)


async def test_settle_corrects_tokens_and_release_gives_the_slot_back(
    limiter: RateLimiter,
) -> None:
    r = limiter.acquire("tokens", 800)
    assert r is not None
    assert (await limiter.check_rate_limit("tokens", 200)).is_limited
    r.settle(100)
    assert (await limiter.check_rate_limit("tokens", 0)).tokens_remaining == 800
    small = [limiter.acquire("small", 1) for _ in range(9)]
    assert limiter.acquire("small", 1) is None
    assert small[0] is not None
    small[0].release()
    small[0].release()  # idempotent: gives back once
    assert (await limiter.check_rate_limit("small", 1)).requests_remaining == 1
    assert small[0].state == "released"
    small[0].settle(5)  # after release: nothing was sent, nothing to correct
    assert (await limiter.check_rate_limit("small", 0)).requests_remaining == 1


async def test_settling_an_expired_reservation_changes_nothing(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    r = limiter.acquire("tokens", 500)
    assert r is not None
    clock.t += 61
    r.settle(900)
    assert (await limiter.check_rate_limit("tokens", 0)).tokens_remaining == 900


async def test_a_refusing_check_emits_a_local_event_and_acquire_leaves_it_to_its_caller(
    limiter: RateLimiter, sink: ListSink
) -> None:
    for _ in range(9):
        assert limiter.acquire("small", 1) is not None
    assert (await limiter.check_rate_limit("tokens", 1)).is_limited is False
    assert limiter.acquire("small", 1) is None
    assert sink.events == []
    assert (await limiter.check_rate_limit("small", 1)).is_limited
    (event,) = sink.events
    assert isinstance(event, RateLimitedEvent)
    assert event.source == "local" and event.model_id == "small"
    assert event.retry_after_s == pytest.approx(60.0)


async def test_wait_time_is_exact_for_the_requested_size(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    await limiter.record_request("tokens", tokens_used=500)
    clock.t += 15
    assert limiter.wait_time("tokens", 400) == 0.0
    assert limiter.wait_time("tokens", 401) == pytest.approx(45.0)
    assert limiter.wait_time("unknown-model", 10**9) == 0.0


def test_listener_limits_on_provider_events_only(limiter: RateLimiter) -> None:
    limiter.record(RateLimitedEvent("big", "local", retry_after_s=30))
    limiter.record(AttemptEvent("big", "openai", "a", "t", 1, 5.0, True, 10, 10, 0.1))
    assert not limiter.is_rate_limited("big")
    limiter.record(RateLimitedEvent("big", "provider", retry_after_s=30))
    assert limiter.get_time_until_reset("big") == 30
    limiter.record(RateLimitedEvent("big", "provider", retry_after_s=-5))  # ignored, no raise
    assert limiter.get_time_until_reset("big") == 30


async def test_an_oversize_request_is_admitted_only_into_an_empty_token_window(
    limiter: RateLimiter, clock: FakeClock
) -> None:
    assert (await limiter.check_rate_limit("tokens", 5000)).is_limited is False
    await limiter.record_request("tokens", tokens_used=1)
    status = await limiter.check_rate_limit("tokens", 5000)
    assert status.is_limited and status.reset_time == T0 + timedelta(seconds=60)


async def test_bad_input_raises_a_typed_error_and_changes_nothing(
    limiter: RateLimiter,
) -> None:
    with pytest.raises(InvalidRequestError, match="tokens_used"):
        await limiter.record_request("small", tokens_used=-1)
    with pytest.raises(InvalidRequestError, match="estimated_tokens"):
        limiter.acquire("small", -5)
    with pytest.raises(InvalidRequestError, match="unknown model 'nope'"):
        await limiter.check_rate_limit("nope", 1)
    with pytest.raises(InvalidRequestError, match="retry_after_s"):
        limiter.provider_limited("small", retry_after_s=-1)
    with pytest.raises(InvalidRequestError, match="remaining_requests"):
        limiter.update_from_headers("small", remaining_requests=-3)
    with pytest.raises(ConfigurationError, match="threshold"):
        RateLimiter(ModelRegistry.from_models([]), threshold=1.5)
    assert (await limiter.check_rate_limit("small", 1)).requests_remaining == 9
    assert not limiter.is_rate_limited("small")
    assert not limiter.is_rate_limited("nope")


async def test_repr_shows_each_models_window_and_provider_limit(limiter: RateLimiter) -> None:
    await limiter.record_request("small", tokens_used=42)
    limiter.provider_limited("big", 12)
    text = repr(limiter)
    assert "small: 1/9 req, 42/90000 tok" in text
    assert "big: 0/9000 req" in text and "429 for 12.0s" in text


async def test_two_limiters_do_not_share_state(clock: FakeClock) -> None:
    registry = ModelRegistry.from_models([model("m", 10, 1000)])
    a = RateLimiter(registry, clock=clock)
    b = RateLimiter(registry, clock=clock)
    for _ in range(9):
        await a.record_request("m", 1)
    assert a.is_rate_limited("m") and not b.is_rate_limited("m")


def test_the_selectors_kept_view_always_equals_a_fresh_reading():
    """``is_rate_limited``/``headroom`` (and ``views``, all models at once) are kept per
    window and read without the lock while nothing changed: over 3,000 random steps
    (reservations taken, settled and released, requests recorded, 429s, holds, provider
    headers, time moving by small and large steps, the registry's limits changing) each
    kept answer equals one computed afresh."""
    import dataclasses
    import random

    rng = random.Random(11)
    clock = FakeClock()
    model = ModelMetadata(id="m", provider="openai", name="m", capabilities=["text-generation"],
                          cost_per_1k_input_tokens=0.001, cost_per_1k_output_tokens=0.002,
                          rate_limits=RateLimits(requests_per_minute=12,
                                                 tokens_per_minute=3_000),
                          context_window=8_192, average_response_time_ms=300.0)
    registry = ModelRegistry.from_models([model])
    limiter = RateLimiter(registry, clock=clock, wall_clock=clock.wall)
    open_reservations = []
    changes = 0
    for step in range(3_000):
        action = rng.randrange(9)
        if action == 0:
            reservation = limiter.acquire("m", rng.randrange(1, 600))
            if reservation is not None:
                open_reservations.append(reservation)
        elif action == 1 and open_reservations:
            open_reservations.pop(rng.randrange(len(open_reservations))).settle(
                rng.randrange(0, 800))
        elif action == 2 and open_reservations:
            open_reservations.pop(rng.randrange(len(open_reservations))).release()
        elif action == 3:
            limiter.provider_limited("m", rng.choice([None, 0.5, 3.0, 20.0]))
        elif action == 4:
            limiter.hold("m", rng.choice([0.0, 1.0, 7.5]))
        elif action == 5:
            limiter.update_from_headers("m", remaining_requests=rng.randrange(0, 13),
                                        remaining_tokens=rng.randrange(0, 3_001),
                                        reset_requests_s=rng.choice([None, 2.0, 30.0]),
                                        reset_tokens_s=rng.choice([None, 1.0, 45.0]))
        elif action == 6:
            clock.t += rng.choice([0.001, 0.3, 2.0, 11.0, 61.0])
        elif action == 7 and step % 50 == 0:
            limits = RateLimits(requests_per_minute=rng.choice([2, 5, 12, 40]),
                                tokens_per_minute=rng.choice([300, 500, 3_000]))
            registry.update_model("m", dataclasses.replace(model, rate_limits=limits))
            changes += 1
        kept = (limiter.is_rate_limited("m"), limiter.headroom("m"))
        assert limiter.views(["m", "never-used"]) == [kept, (False, 1.0)]
        window = limiter._windows.get("m")
        if window is not None:
            window.memo = (-1, None, float("-inf"), False, 1.0)  # forget: read afresh
        fresh = (limiter.is_rate_limited("m"), limiter.headroom("m"))
        assert kept == fresh, (step, action, kept, fresh)
    assert changes > 5
