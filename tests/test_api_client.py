"""APIClientManager over real HTTP to the provider simulator, through real litellm.

This is the one test module that imports litellm (through the client).
"""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest

from amm.api_client import APIClientManager
from amm.api_key_manager import APIKeyManager
from amm.errors import (
    APIModelError,
    AuthenticationError,
    ConfigurationError,
    ContextWindowExceededError,
    ModelNotFoundError,
    ModelUnavailableError,
    ProviderError,
    ProviderTimeoutError,
    QuotaExceededError,
    RateLimitError,
)
from amm.models import ModelMetadata, ModelRequest, ModelResponse, TokenUsage
from amm.registry import ModelRegistry
from amm.sim import ModelProfile, Simulator
from telemetry.events import AttemptEvent, RateLimitedEvent

K1 = "sk-test-key-one-aaaaaaaaaaaaaaaa"
K2 = "sk-test-key-two-bbbbbbbbbbbbbbbb"
PREFIX = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama_chat", "google": "gemini"}
PROTOCOLS = tuple(PREFIX)
REQUEST = ModelRequest(prompt="Explain the fibonacci numbers", task_id="task-1",
                       agent_type="research", max_tokens=12)


class Sink:
    """Collects events (a fake of the telemetry recorder)."""

    def __init__(self) -> None:
        self.events: list[Any] = []

    def record(self, event: Any) -> None:
        self.events.append(event)

    def attempts(self) -> list[AttemptEvent]:
        return [e for e in self.events if isinstance(e, AttemptEvent)]


class Sleeps:
    """Injected sleep: records the delays, and moves the simulator's clock on."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.delays: list[float] = []
        self.clock = clock

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        if self.clock is not None:
            self.clock.now += delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


class FixedRandom:
    def __init__(self, value: float) -> None:
        self.value = value

    def random(self) -> float:
        return self.value


def _registry(sim: Simulator, names: dict[str, str]) -> ModelRegistry:
    """One registry model per (wire model -> protocol), priced 1 and 2 USD per 1k tokens."""
    provider = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama",
                "google": "google"}
    return ModelRegistry.from_dict({"models": [
        {"id": name, "provider": provider[proto], "name": name,
         "litellm_model": f"{PREFIX[proto]}/{name}", "api_base": sim.api_base(proto),
         "capabilities": ["text-generation"], "cost_per_1k_input_tokens": 1.0,
         "cost_per_1k_output_tokens": 2.0,
         "rate_limits": {"requests_per_minute": 100, "tokens_per_minute": 100000},
         "context_window": 8000, "average_response_time_ms": 10}
        for name, proto in names.items()
    ]})


def _keys(*openai_keys: str) -> APIKeyManager:
    keys = APIKeyManager()
    for key in openai_keys or (K1,):
        keys.add_key("openai", key)
    keys.add_key("anthropic", K1)
    keys.add_key("google", K1)
    return keys


@pytest.fixture
def sink() -> Sink:
    return Sink()


MakeSim = Callable[..., Simulator]
FAST = {"latency_ms": 0, "latency_jitter_ms": 0}


# -- successful requests ------------------------------------------------------------------

@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_each_protocol_returns_the_billed_tokens_at_registry_prices(
    make_simulator: MakeSim, sink: Sink, protocol: str,
) -> None:
    name = f"m-{protocol}"
    sim = make_simulator({name: ModelProfile(**FAST)})
    async with APIClientManager(_keys(), registry=_registry(sim, {name: protocol}),
                                events=sink) as client:
        response = await client.send_request(name, REQUEST)
    billed_in, billed_out = sim.billed()[name]
    assert response.model_id == name and response.content
    assert response.token_usage == TokenUsage(billed_in, billed_out)
    assert response.cost == pytest.approx((billed_in * 1.0 + billed_out * 2.0) / 1000)
    assert response.metadata["provider"] == protocol
    assert response.metadata["server_address"] == "127.0.0.1"
    assert response.metadata["finish_reason"] in ("stop", "length")
    assert response.metadata["response_id"]
    [event] = sink.attempts()
    assert (event.success, event.attempt, event.input_tokens, event.output_tokens) == (
        True, 1, billed_in, billed_out)
    assert event.cost_usd == response.cost and event.request_max_tokens == 12
    assert event.start_time_ns < event.end_time_ns
    assert event.output_text == response.content
    assert event.input_messages == ({"role": "user", "content": REQUEST.prompt},)


async def test_openai_rate_limit_headers_are_reported_in_metadata(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(rpm_limit=50, **FAST)})
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"})) as client:
        response = await client.send_request("m", REQUEST)
    limits = response.metadata["rate_limit"]
    assert limits["remaining_requests"] == 49
    assert 0 < limits["reset_requests_s"] <= 60
    assert K1 not in repr(response.metadata)


async def test_default_max_tokens_is_always_sent(make_simulator: MakeSim, sink: Sink) -> None:
    sim = make_simulator({"m": ModelProfile(**FAST)})
    request = ModelRequest(prompt="hi", parameters={"top_p": 0.5, "seed": 3, "priority": "high"})
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "anthropic"}),
                                events=sink) as client:
        response = await client.send_request("m", request)
    assert response.token_usage.output_tokens <= 1024
    assert sink.attempts()[0].request_max_tokens == 1024


async def test_unregistered_model_goes_to_litellm_as_is_priced_from_its_price_map(
    make_simulator: MakeSim, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import litellm

    sim = make_simulator({}, default_profile=ModelProfile(**FAST))
    monkeypatch.setenv("OPENAI_BASE_URL", sim.api_base("openai"))
    registry = ModelRegistry.from_dict({"models": []})
    async with APIClientManager(_keys(), registry=registry) as client:
        response = await client.send_request("openai/gpt-4o-mini", REQUEST)
    usage = response.token_usage
    prompt, completion = litellm.cost_per_token(model="openai/gpt-4o-mini",
                                                prompt_tokens=usage.input_tokens,
                                                completion_tokens=usage.output_tokens)
    assert response.cost == pytest.approx(prompt + completion) and response.cost > 0
    assert sim.billed()["gpt-4o-mini"] == (usage.input_tokens, usage.output_tokens)


async def test_custom_adapter_replaces_litellm_for_its_provider(sink: Sink) -> None:
    seen: list[tuple[str, str | None]] = []

    class EchoAdapter:
        async def complete(self, model: ModelMetadata, request: ModelRequest, *,
                           api_key: str | None, timeout_s: float) -> ModelResponse:
            seen.append((model.id, api_key))
            return ModelResponse(content="echo", model_id=model.id,
                                 token_usage=TokenUsage(1000, 500), latency_ms=0, cost=99.0)

    registry = ModelRegistry.from_dict({"models": [{
        "id": "m", "provider": "openai", "name": "m", "capabilities": ["x"],
        "cost_per_1k_input_tokens": 0.01, "cost_per_1k_output_tokens": 0.03,
        "rate_limits": {"requests_per_minute": 1, "tokens_per_minute": 1},
        "context_window": 10, "average_response_time_ms": 1}]})
    async with APIClientManager(_keys(), {"openai": EchoAdapter()}, registry=registry,
                                events=sink) as client:
        response = await client.send_request("m", REQUEST)
    assert seen == [("m", K1)]
    assert response.content == "echo" and response.cost == pytest.approx(0.025)  # registry prices
    assert response.metadata["server_address"] == "api.openai.com"
    assert len(sink.attempts()) == 1


def test_an_adapter_without_complete_is_a_configuration_error() -> None:
    with pytest.raises(ConfigurationError, match=r"adapters\[openai\]"):
        APIClientManager(_keys(), {"openai": object()})  # type: ignore[dict-item]


# -- error mapping: one HTTP request, one typed error ---------------------------------------

ERROR_CASES: list[tuple[str, dict[str, Any], type[APIModelError], str, bool]] = [
    ("rate_limited", {"rpm_limit": 1, "retry_after_s": 7}, RateLimitError, "rate_limited", True),
    ("quota", {"quota_exhausted": True}, QuotaExceededError, "insufficient_quota", False),
    ("unauthorized", {"api_key": "the-right-key"}, AuthenticationError, "authentication", False),
    ("forbidden", {"forbidden": True}, AuthenticationError, "permission_denied", False),
    # 503 reads as "model unavailable" (the seed); litellm reports Gemini's 503 as a 500.
    ("overloaded", {"error_rate": 1.0}, ModelUnavailableError, "", True),
    ("malformed", {"malformed_rate": 1.0}, ProviderError, "malformed_response", True),
    ("timeout", {"timeout_rate": 1.0, "hang_s": 2.0}, ProviderTimeoutError, "timeout", True),
    ("context", {"max_context": 2}, ContextWindowExceededError, "context_window_exceeded", False),
]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("case", "profile", "error", "error_type", "retryable"),
                         [pytest.param(*c, id=c[0]) for c in ERROR_CASES])
async def test_provider_errors_map_to_one_typed_error_after_one_request(
    make_simulator: MakeSim, sink: Sink, protocol: str, case: str, profile: dict[str, Any],
    error: type[APIModelError], error_type: str, retryable: bool,
) -> None:
    if case == "overloaded" and protocol == "google":
        error = ProviderError
    sim = make_simulator({"m": ModelProfile(**FAST, **profile)})
    keys = _keys()
    async with APIClientManager(keys, registry=_registry(sim, {"m": protocol}), events=sink,
                                timeout_s=0.3) as client:
        if case == "rate_limited":
            await client.send_request("m", REQUEST)  # uses the minute's only slot
            sim.reset()
            await client.send_request("m", REQUEST)
            sink.events.clear()
        with pytest.raises(error) as info:
            await client.send_request("m", REQUEST)
    err = info.value
    assert type(err) is error
    if error_type:
        assert err.error_type == error_type
    else:
        assert err.status_code is not None and err.status_code >= 500
    assert err.is_retryable is retryable
    assert (err.model_id, err.task_id) == ("m", "task-1")
    assert sim.request_count("m") == (2 if case == "rate_limited" else 1)
    [attempt] = sink.attempts()
    assert (attempt.success, attempt.error_type) == (False, err.error_type)
    assert K1 not in str(err) and K1 not in repr(attempt)
    if case == "rate_limited":
        assert err.retry_after_seconds == 7
        assert [e for e in sink.events if isinstance(e, RateLimitedEvent)] == [
            RateLimitedEvent("m", "provider", 7.0, agent_type="research", task_id="task-1")]


async def test_unknown_model_is_model_not_found(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(**FAST)})
    registry = _registry(sim, {"m": "openai"})
    registry.add_model(ModelMetadata(**{**_asdict(registry.get_model("m")), "id": "ghost",
                                        "litellm_model": "openai/ghost"}))
    async with APIClientManager(_keys(), registry=registry) as client:
        with pytest.raises(ModelNotFoundError) as info:
            await client.send_request_with_retry("ghost", REQUEST)
    assert info.value.status_code == 404 and not info.value.is_retryable
    assert sim.request_count("ghost") == 1


def _asdict(model: ModelMetadata | None) -> dict[str, Any]:
    assert model is not None
    return {f: getattr(model, f) for f in ModelMetadata.__dataclass_fields__}


async def test_missing_key_fails_before_any_http(make_simulator: MakeSim, sink: Sink) -> None:
    sim = make_simulator({"m": ModelProfile(**FAST)})
    async with APIClientManager(APIKeyManager(), registry=_registry(sim, {"m": "openai"}),
                                events=sink) as client:
        with pytest.raises(AuthenticationError, match="no usable API key for provider 'openai'"):
            await client.send_request_with_retry("m", REQUEST)
    assert sim.request_count() == 0
    assert [e.error_type for e in sink.attempts()] == ["missing_api_key"]


async def test_ollama_needs_no_key(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(**FAST)})
    async with APIClientManager(APIKeyManager(), registry=_registry(sim, {"m": "ollama"})) as c:
        assert (await c.send_request("m", REQUEST)).content


# -- retries --------------------------------------------------------------------------------

async def test_retryable_errors_back_off_exponentially_then_raise_the_last(
    make_simulator: MakeSim, sink: Sink,
) -> None:
    sim = make_simulator({"m": ModelProfile(error_rate=1.0, **FAST)})
    sleeps = Sleeps()
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"}), events=sink,
                                sleep=sleeps, rng=FixedRandom(0.5), backoff_base_s=0.2) as client:
        with pytest.raises(ModelUnavailableError) as info:
            await client.send_request_with_retry("m", REQUEST, max_retries=3)
    assert sleeps.delays == pytest.approx([0.1, 0.2, 0.4])  # 0.5 * 0.2 * 2**n
    assert sim.request_count("m") == 4
    assert info.value.attempted_models == ["m"] and info.value.status_code == 503
    assert [e.attempt for e in sink.attempts()] == [1, 2, 3, 4]


async def test_jittered_backoff_stays_under_the_capped_exponential(make_simulator: MakeSim) -> None:
    import random

    sim = make_simulator({"m": ModelProfile(error_rate=1.0, **FAST)})
    sleeps = Sleeps()
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"}), sleep=sleeps,
                                rng=random.Random(3), backoff_base_s=1.0,
                                backoff_max_s=4.0) as client:
        with pytest.raises(ModelUnavailableError):
            await client.send_request_with_retry("m", REQUEST, max_retries=5)
    caps = [1.0, 2.0, 4.0, 4.0, 4.0]
    assert len(sleeps.delays) == 5
    assert all(0 <= d < cap for d, cap in zip(sleeps.delays, caps, strict=True))
    assert len(set(sleeps.delays)) == 5  # jittered, not fixed


async def test_success_after_retries_returns_the_response(make_simulator: MakeSim,
                                                          sink: Sink) -> None:
    sim = make_simulator({"m": ModelProfile(outages=[(0, 2)], **FAST)})
    sleeps = Sleeps()
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"}), events=sink,
                                sleep=sleeps, rng=FixedRandom(0.0)) as client:
        response = await client.send_request_with_retry("m", REQUEST)
    assert response.content and len(sleeps.delays) == 2
    assert [(e.attempt, e.success) for e in sink.attempts()] == [(1, False), (2, False), (3, True)]


async def test_permanent_errors_are_not_retried(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(api_key="other", **FAST)})
    sleeps = Sleeps()
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"}),
                                sleep=sleeps) as client:
        with pytest.raises(AuthenticationError) as info:
            await client.send_request_with_retry("m", REQUEST, max_retries=3)
    assert sleeps.delays == [] and sim.request_count("m") == 1
    assert info.value.attempted_models == ["m"]


async def test_retry_after_is_honoured_as_the_minimum_wait(make_simulator: MakeSim) -> None:
    clock = FakeClock()
    # No fixed Retry-After: the simulator says when its 60 s window frees a slot.
    sim = make_simulator({"m": ModelProfile(rpm_limit=1, **FAST)}, clock=clock)
    sleeps = Sleeps(clock)
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "anthropic"}), sleep=sleeps,
                                rng=FixedRandom(0.0), backoff_max_s=120) as client:
        await client.send_request("m", REQUEST)
        clock.now += 15
        response = await client.send_request_with_retry("m", REQUEST)
    assert response.content
    assert sleeps.delays == [pytest.approx(45, abs=1)]
    assert sim.status_counts("m") == {200: 2, 429: 1}


async def test_retry_after_longer_than_the_backoff_cap_raises_at_once(
        make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(rpm_limit=1, retry_after_s=45, **FAST)})
    sleeps = Sleeps()
    async with APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"}), sleep=sleeps,
                                backoff_max_s=30) as client:
        await client.send_request("m", REQUEST)
        with pytest.raises(RateLimitError) as info:
            await client.send_request_with_retry("m", REQUEST, max_retries=3)
    assert sleeps.delays == [] and info.value.retry_after_seconds == 45
    assert sim.request_count("m") == 2


async def test_negative_max_retries_is_rejected() -> None:
    client = APIClientManager(_keys(), registry=ModelRegistry.from_dict({"models": []}))
    with pytest.raises(APIModelError, match="max_retries"):
        await client.send_request_with_retry("m", REQUEST, max_retries=-1)


# -- keys -----------------------------------------------------------------------------------

async def test_a_401_disables_the_key_and_rotation_moves_to_the_other(
        make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(api_key=K2, **FAST)})
    keys = _keys(K1, K2)
    async with APIClientManager(keys, registry=_registry(sim, {"m": "openai"})) as client:
        with pytest.raises(AuthenticationError):
            await client.send_request("m", REQUEST)  # K1
        for _ in range(3):
            await client.send_request("m", REQUEST)  # K2 every time: K1 is disabled
    assert sim.status_counts("m") == {401: 1, 200: 3}


async def test_a_429_cools_the_key_down_and_rotation_moves_away(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(rpm_limit=1, retry_after_s=30, **FAST)})
    keys = _keys(K1, K2)
    async with APIClientManager(keys, registry=_registry(sim, {"m": "openai"})) as client:
        await client.send_request("m", REQUEST)  # K1 takes the slot
        with pytest.raises(RateLimitError):
            await client.send_request("m", REQUEST)  # K2: 429, cools down for 30 s
        # From now on only K1 is accepted: a request with K2 would be a 401.
        sim.set_profile("m", ModelProfile(api_key=K1, **FAST))
        for _ in range(3):
            await client.send_request("m", REQUEST)
    assert sim.status_counts("m") == {200: 4, 429: 1}


async def test_no_key_in_errors_logs_or_events(
    make_simulator: MakeSim, sink: Sink, caplog: pytest.LogCaptureFixture,
) -> None:
    class LeakyAdapter:
        async def complete(self, model: ModelMetadata, request: ModelRequest, *,
                           api_key: str | None, timeout_s: float) -> ModelResponse:
            raise RuntimeError(f"upstream rejected Authorization: Bearer {api_key}")

    sim = make_simulator({"m": ModelProfile(api_key="nope", **FAST)})
    registry = _registry(sim, {"m": "openai", "a": "anthropic"})
    caplog.set_level(logging.DEBUG)
    async with APIClientManager(_keys(), {"anthropic": LeakyAdapter()}, registry=registry,
                                events=sink) as client:
        errors = []
        for model in ("m", "a"):
            with pytest.raises(APIModelError) as info:
                await client.send_request(model, REQUEST)
            errors.append(info.value)
    leaked = errors[1]
    assert isinstance(leaked, ProviderError) and "Bearer ***" in leaked.error_message
    texts = [caplog.text, *map(str, errors), *map(repr, errors), *map(repr, sink.events),
             *(str(e.__cause__) for e in errors)]
    assert not any(K1 in text for text in texts)


# -- lifecycle ------------------------------------------------------------------------------

async def test_aclose_is_idempotent_and_leaves_no_task_behind(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(**FAST), "a": ModelProfile(**FAST)})
    client = APIClientManager(_keys(), registry=_registry(sim, {"m": "openai", "a": "anthropic"}))
    await client.send_request("m", REQUEST)
    await client.send_request("a", REQUEST)
    await client.aclose()
    await client.aclose()
    client.close()
    await asyncio.sleep(0)
    assert [t for t in asyncio.all_tasks() if t is not asyncio.current_task()] == []
    with pytest.raises(ProviderError, match="closed"):
        await client.send_request("m", REQUEST)


def test_sync_close_closes_clients_opened_in_a_finished_loop(make_simulator: MakeSim) -> None:
    sim = make_simulator({"m": ModelProfile(**FAST)})
    client = APIClientManager(_keys(), registry=_registry(sim, {"m": "openai"}))
    loop = asyncio.new_event_loop()
    try:
        loop.run_until_complete(client.send_request("m", REQUEST))
        with client:
            pass  # __exit__ closes
        client.close()
    finally:
        loop.close()
    assert "closed" in repr(client)


def test_import_amm_does_not_import_litellm() -> None:
    code = ("import amm, amm.api_client, amm.api_key_manager, amm.registry, sys; "
            "assert 'litellm' not in sys.modules, 'litellm imported'")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
