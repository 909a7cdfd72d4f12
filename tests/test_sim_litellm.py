"""Real ``litellm.acompletion`` calls against the simulator, one per protocol and fault.

These pin what litellm 1.110 raises for each simulated provider answer, so that
``amm.api_client``'s mapping is written against observed behaviour. litellm is
imported once for the module (5-8 s).
"""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any

import pytest

from amm.sim import ModelProfile, Simulator, count_tokens

pytestmark = [
    pytest.mark.asyncio(loop_scope="module"),
    # litellm's Gemini types trip a pydantic notice on first use; not ours to fix.
    pytest.mark.filterwarnings("ignore:Item.*ReadOnly:UserWarning"),
]

PREFIX = {"openai": "openai", "anthropic": "anthropic", "ollama": "ollama_chat",
          "google": "gemini"}
PROTOCOLS = tuple(PREFIX)
SYSTEM = "You are a careful assistant."
PROMPT = "Explain how retry budgets protect provider quotas.\n1. budgets\n2. quotas"

FAULTS: dict[str, ModelProfile] = {
    "rate": ModelProfile(latency_ms=0, rpm_limit=1, retry_after_s=7),
    "quota": ModelProfile(latency_ms=0, quota_exhausted=True),
    "down": ModelProfile(latency_ms=0, error_rate=1.0),
    "auth": ModelProfile(latency_ms=0, api_key="the-right-key"),
    "forbidden": ModelProfile(latency_ms=0, forbidden=True),
    "context": ModelProfile(latency_ms=0, max_context=8),
    "malformed": ModelProfile(latency_ms=0, malformed_rate=1.0),
    "hang": ModelProfile(latency_ms=0, timeout_rate=1.0, hang_s=5),
}

# (protocol, fault) -> (litellm exception class name, its status_code), as observed.
EXPECTED: dict[tuple[str, str], tuple[str, int]] = {
    ("openai", "rate"): ("RateLimitError", 429),
    ("openai", "quota"): ("RateLimitError", 429),
    ("openai", "down"): ("ServiceUnavailableError", 503),
    ("openai", "auth"): ("AuthenticationError", 401),
    ("openai", "forbidden"): ("APIError", 403),
    ("openai", "missing"): ("NotFoundError", 404),
    ("openai", "context"): ("ContextWindowExceededError", 400),
    ("openai", "malformed"): ("InternalServerError", 500),
    ("openai", "hang"): ("Timeout", 408),
    ("anthropic", "rate"): ("RateLimitError", 429),
    ("anthropic", "quota"): ("RateLimitError", 429),
    ("anthropic", "down"): ("ServiceUnavailableError", 503),
    ("anthropic", "auth"): ("AuthenticationError", 401),
    ("anthropic", "forbidden"): ("PermissionDeniedError", 403),
    ("anthropic", "missing"): ("NotFoundError", 404),
    ("anthropic", "context"): ("ContextWindowExceededError", 400),
    ("anthropic", "malformed"): ("APIConnectionError", 500),
    ("anthropic", "hang"): ("Timeout", 408),
    ("ollama", "rate"): ("RateLimitError", 429),
    ("ollama", "quota"): ("RateLimitError", 429),
    ("ollama", "down"): ("ServiceUnavailableError", 503),
    ("ollama", "auth"): ("AuthenticationError", 401),
    ("ollama", "forbidden"): ("PermissionDeniedError", 403),
    ("ollama", "missing"): ("NotFoundError", 404),
    # litellm checks no context wording for Ollama: a plain 400.
    ("ollama", "context"): ("BadRequestError", 400),
    ("ollama", "malformed"): ("APIConnectionError", 500),
    ("ollama", "hang"): ("Timeout", 408),
    ("google", "rate"): ("RateLimitError", 429),
    ("google", "quota"): ("RateLimitError", 429),
    # Gemini's real 503 text ("The model is overloaded.") makes litellm say 500.
    ("google", "down"): ("InternalServerError", 500),
    ("google", "auth"): ("AuthenticationError", 401),
    ("google", "forbidden"): ("BadRequestError", 403),
    ("google", "missing"): ("NotFoundError", 404),
    ("google", "context"): ("ContextWindowExceededError", 400),
    ("google", "malformed"): ("BadRequestError", 422),
    ("google", "hang"): ("Timeout", 408),
}


@pytest.fixture(scope="module")
def litellm() -> ModuleType:
    import litellm

    return litellm


@pytest.fixture(scope="module")
def fault_sim() -> Any:
    healthy = {f"ok-{p}": ModelProfile(latency_ms=0, quality=1.0) for p in PROTOCOLS}
    with Simulator({**FAULTS, **healthy}, seed=5) as sim:
        yield sim


async def call(litellm: ModuleType, sim: Simulator, protocol: str, model: str,
               **kw: Any) -> Any:
    options: dict[str, Any] = {"max_tokens": 200, "api_key": "sk-test", "timeout": 5.0}
    options.update(kw)
    return await litellm.acompletion(
        model=f"{PREFIX[protocol]}/{model}", api_base=sim.api_base(protocol), max_retries=0,
        messages=[{"role": "system", "content": SYSTEM}, {"role": "user", "content": PROMPT}],
        **options)


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_each_protocol_round_trips_content_and_usage_through_litellm(
        litellm: ModuleType, fault_sim: Simulator, protocol: str) -> None:
    fault_sim.reset()
    response = await call(litellm, fault_sim, protocol, f"ok-{protocol}")
    content = response.choices[0].message.content
    assert re.search(r"^1\. budgets: .*\n2\. quotas: ", content, re.MULTILINE)
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == count_tokens(SYSTEM) + count_tokens(PROMPT)
    assert response.usage.completion_tokens == count_tokens(content)
    assert fault_sim.billed() == {f"ok-{protocol}": (response.usage.prompt_tokens,
                                                      response.usage.completion_tokens)}


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_each_protocol_reports_truncation_at_max_tokens_as_length(
        litellm: ModuleType, fault_sim: Simulator, protocol: str) -> None:
    response = await call(litellm, fault_sim, protocol, f"ok-{protocol}", max_tokens=6)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 6


@pytest.mark.parametrize(("protocol", "fault"), sorted(EXPECTED))
async def test_each_fault_raises_the_litellm_exception_a_real_provider_would(
        litellm: ModuleType, fault_sim: Simulator, protocol: str, fault: str) -> None:
    fault_sim.reset()
    if fault == "rate":  # the first request fills the one-request window
        await call(litellm, fault_sim, protocol, fault)
    kw = {"timeout": 0.2} if fault == "hang" else {}
    with pytest.raises(Exception) as info:
        await call(litellm, fault_sim, protocol, "missing" if fault == "missing" else fault, **kw)
    assert (type(info.value).__name__, info.value.status_code) == EXPECTED[(protocol, fault)]
    assert type(info.value).__module__.startswith("litellm")


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_retry_after_is_readable_from_every_rate_limit_error(
        litellm: ModuleType, fault_sim: Simulator, protocol: str) -> None:
    fault_sim.reset()
    await call(litellm, fault_sim, protocol, "rate")
    with pytest.raises(litellm.RateLimitError) as info:
        await call(litellm, fault_sim, protocol, "rate")
    assert info.value.litellm_response_headers["retry-after"] == "7"
    assert info.value.litellm_response_headers["x-ratelimit-remaining-requests"] == "0"


async def test_openai_rate_limit_keeps_retry_after_on_the_exceptions_response(
        litellm: ModuleType, fault_sim: Simulator) -> None:
    fault_sim.reset()
    await call(litellm, fault_sim, "openai", "rate")
    with pytest.raises(litellm.RateLimitError) as info:
        await call(litellm, fault_sim, "openai", "rate")
    assert info.value.response.headers["retry-after"] == "7"


@pytest.mark.parametrize("protocol", PROTOCOLS)
async def test_insufficient_quota_is_recognisable_on_every_protocol(
        litellm: ModuleType, fault_sim: Simulator, protocol: str) -> None:
    with pytest.raises(litellm.RateLimitError) as info:
        await call(litellm, fault_sim, protocol, "quota")
    # OpenAI's message does not say it, its body's code does (litellm keeps the body as
    # exc.body and sets exc.code to "429"); the other protocols carry it in the text.
    body = info.value.body if isinstance(info.value.body, dict) else {}
    if protocol == "openai":
        assert body["code"] == "insufficient_quota"
    else:
        assert "insufficient_quota" in str(info.value)


async def test_the_right_api_key_is_accepted_where_others_get_401(
        litellm: ModuleType, fault_sim: Simulator) -> None:
    response = await call(litellm, fault_sim, "openai", "auth", api_key="the-right-key")
    assert response.choices[0].message.content


async def test_litellm_at_concurrency_64_gets_every_answer(
        litellm: ModuleType, make_simulator: Any) -> None:
    import asyncio

    sim = make_simulator({"sim-openai": ModelProfile(latency_ms=2)})
    responses = await asyncio.gather(*(call(litellm, sim, "openai", "sim-openai")
                                       for _ in range(128)))
    assert len({r.id for r in responses}) == 128
    assert sim.status_counts() == {200: 128}
