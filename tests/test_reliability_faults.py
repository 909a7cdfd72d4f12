"""Fault injection through the real request path: a careless OpenAI-compatible
provider (a tiny aiohttp server, real HTTP through litellm) that echoes keys and
prompts in its errors, answers 401/403 for one model, 429 without Retry-After, and
requests litellm refuses before sending. Nothing of amm is mocked.

Each test pins one finding of the fault-injection audit:
bad input never poisons health; a 401/403 rests only the key's scope; prompts never
leave without the content opt-in; no key in any chained exception; a 429 without
Retry-After is not retried sooner than amm's own window.
"""

from __future__ import annotations

import json
import logging
import time
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from amm.api_client import APIClientManager
from amm.api_key_manager import APIKeyManager
from amm.errors import (
    APIModelError,
    AuthenticationError,
    InvalidRequestError,
    ProviderError,
    RateLimitError,
)
from amm.health_checker import HealthChecker
from amm.manager import ModelManager
from amm.models import ModelMetadata, ModelRequest, ModelResponse
from amm.registry import ModelRegistry
from telemetry.recorder import Recorder
from tests.fixtures_manager import EventLog, model_entry

SECRET = "sk-live-DO-NOT-LEAK-0123456789abcdefABCDEF"
OTHER_SECRET = "sk-live-SECOND-KEY-9876543210fedcbaFEDCBA"
PROMPT = "Summarise the confidential merger plan for Project Nightingale by Friday."

# -- the careless provider ------------------------------------------------------------------


@dataclass
class FaultServer:
    """OpenAI-compatible chat endpoint; the behaviour is chosen by the model name:
    ``ok*`` answers, ``e400``/``e401``/``e403``/``e500`` fail echoing the key and the
    prompt, ``e429`` is a 429 without Retry-After. ``keys`` are the keys each model saw."""

    api_base: str = ""
    keys: dict[str, list[str]] = field(default_factory=dict)

    def count(self, model: str) -> int:
        return len(self.keys.get(model, []))

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        model = body["model"]
        auth = request.headers.get("Authorization", "")
        self.keys.setdefault(model, []).append(auth.removeprefix("Bearer "))
        text = " ".join(str(m.get("content")) for m in body["messages"])
        echo = f"key {auth} rejected for input {text!r}"
        for prefix, status in (("e400", 400), ("e401", 401), ("e403", 403), ("e500", 500)):
            if model.startswith(prefix):
                return web.json_response(
                    {"error": {"message": echo, "type": "invalid_request_error",
                               "param": None, "code": str(status)}}, status=status)
        if model.startswith("e429"):
            return web.json_response({"error": {"message": "Rate limit reached",
                                                "type": "requests", "code": None}}, status=429)
        return web.json_response({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 0, "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {
                "role": "assistant",
                "content": "The merger plan summary: timeline, owners and the open risks."}}],
            "usage": {"prompt_tokens": 12, "completion_tokens": 11, "total_tokens": 23},
        })


@pytest.fixture
async def fault_server() -> AsyncIterator[FaultServer]:
    server = FaultServer()
    app = web.Application()
    app.router.add_post("/v1/chat/completions", server.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    server.api_base = f"http://127.0.0.1:{port}/v1"
    yield server
    await runner.cleanup()


def entry(model_id: str, server: FaultServer, **kw: Any) -> dict[str, Any]:
    m = model_entry(model_id, **kw)
    m["api_base"] = server.api_base
    return m


@dataclass
class Built:
    manager: ModelManager
    keys: APIKeyManager
    spans: InMemorySpanExporter
    log: EventLog


def build(tmp_path: Path, models: list[dict[str, Any]], *, keys: APIKeyManager | None = None,
          **kwargs: Any) -> Built:
    """A ModelManager from a registry file over the fault server, spans kept in memory."""
    config = tmp_path / "registry.json"
    config.write_text(json.dumps({"models": models}))
    if keys is None:
        keys = APIKeyManager()
        keys.add_key("openai", SECRET)
    spans = InMemorySpanExporter()
    tracer = TracerProvider()
    tracer.add_span_processor(SimpleSpanProcessor(spans))
    kwargs.setdefault("start_health_checks", False)
    kwargs.setdefault("base_backoff_seconds", 0.001)
    kwargs.setdefault("timeout_s", 5.0)
    manager = ModelManager.from_config(config, data_dir=tmp_path / "data", key_manager=keys,
                                       telemetry=False, recorder=Recorder(tracer_provider=tracer),
                                       cache_enabled=False, **kwargs)
    log = EventLog()
    manager.recorder.add_listener(log)
    return Built(manager, keys, spans, log)


def request(i: int = 0, prompt: str = PROMPT, **kw: Any) -> ModelRequest:
    return ModelRequest(prompt=prompt, task_id=f"t{i}", agent_type="research", max_tokens=50,
                        **kw)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# -- 1. bad input never poisons health ----------------------------------------------------


async def test_requests_litellm_refuses_before_sending_leave_every_model_available(
        tmp_path: Path, fault_server: FaultServer) -> None:
    built = build(tmp_path, [entry("ok-a", fault_server), entry("ok-b", fault_server),
                             entry("ok-c", fault_server)])
    async with built.manager as manager:
        for i in range(6):  # litellm raises TypeError for this before any HTTP
            with pytest.raises(InvalidRequestError) as info:
                await manager.complete(request(i, parameters={"response_format": "garbage"}))
            assert info.value.error_type == "client_error"
        assert all(manager.health_checker.is_model_available(m) for m in ("ok-a", "ok-b", "ok-c"))
        response = await manager.complete(request(99))
    assert response.content.startswith("The merger plan")
    assert sum(fault_server.count(m) for m in ("ok-a", "ok-b", "ok-c")) == 1  # nothing was sent


async def test_a_provider_400_for_one_request_never_counts_against_the_model(
        tmp_path: Path, fault_server: FaultServer) -> None:
    built = build(tmp_path, [entry("e400-only", fault_server)])
    async with built.manager as manager:
        for i in range(5):
            with pytest.raises(InvalidRequestError):
                await manager.complete(request(i))
        status = manager.health_checker.get_model_status("e400-only")
    assert status.is_available and status.consecutive_failures == 0


class RefusingAdapter:
    """A custom adapter that, like litellm, refuses input it cannot send."""

    async def complete(self, model: ModelMetadata, request: ModelRequest, *,
                       api_key: str | None, timeout_s: float) -> ModelResponse:
        raise ValueError(f"unsupported message shape in {request.prompt!r}")


async def test_a_custom_adapter_refusing_input_is_a_request_error_not_a_model_failure(
        fault_server: FaultServer) -> None:
    registry = ModelRegistry.from_dict({"models": [entry("ok-a", fault_server)]})
    health = HealthChecker(registry, failure_threshold=1)
    keys = APIKeyManager()
    keys.add_key("openai", SECRET)
    async with APIClientManager(keys, {"openai": RefusingAdapter()}, registry=registry,
                                events=health) as client:
        for i in range(3):
            with pytest.raises(InvalidRequestError) as info:
                await client.send_request_with_retry("ok-a", request(i), max_retries=3)
            assert info.value.error_type == "client_error" and not info.value.is_retryable
    assert health.is_model_available("ok-a")
    assert PROMPT not in str(info.value) and "[redacted prompt]" in str(info.value)


# -- 2. a 401/403 rests only the key's scope ----------------------------------------------


async def test_a_403_from_one_model_never_takes_the_providers_other_models_down(
        tmp_path: Path, fault_server: FaultServer) -> None:
    clock = FakeClock()
    keys = APIKeyManager(clock=clock)
    keys.add_key("openai", SECRET)
    # The locked model is the cheapest and fastest: selection tries it first.
    built = build(tmp_path, [entry("e403-locked", fault_server, cost_in=0.00001, cost_out=0.00001,
                                   latency_ms=10),
                             entry("ok-open", fault_server)], keys=keys)
    async with built.manager as manager:
        answers = [await manager.complete(request(i)) for i in range(10)]
        assert [a.model_id for a in answers] == ["ok-open"] * 10
        assert fault_server.count("e403-locked") == 1  # the (key, model) pair rests
        clock.now += 301  # after its rest the pair is tried again
        await manager.complete(request(10))
    assert fault_server.count("e403-locked") == 2
    assert fault_server.count("ok-open") == 11


async def test_a_401_rests_the_key_at_that_base_url_and_the_next_key_is_used(
        fault_server: FaultServer) -> None:
    registry = ModelRegistry.from_dict({"models": [entry("e401-a", fault_server),
                                                   entry("ok-b", fault_server)]})
    keys = APIKeyManager()
    keys.add_key("openai", SECRET)
    keys.add_key("openai", OTHER_SECRET)
    async with APIClientManager(keys, registry=registry) as client:
        with pytest.raises(AuthenticationError):
            await client.send_request("e401-a", request())
        for i in range(3):
            await client.send_request("ok-b", request(i))
    assert fault_server.keys["e401-a"] == [SECRET]
    assert fault_server.keys["ok-b"] == [OTHER_SECRET] * 3  # same base URL: SECRET rests


# -- 3. prompts never leave without the content opt-in ----------------------------------


async def test_a_provider_error_quoting_the_prompt_reaches_no_span_log_health_or_selection(
        tmp_path: Path, fault_server: FaultServer, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", raising=False)
    caplog.set_level(logging.DEBUG, logger="amm")
    built = build(tmp_path, [entry("e500-echo", fault_server, cost_in=0.00001, cost_out=0.00001,
                                   latency_ms=10),
                             entry("ok-good", fault_server)], retries_per_model=0)
    async with built.manager as manager:
        for i in range(4):  # the echoing model fails 3 times, becomes unavailable
            await manager.complete(request(i))
        status = manager.health_checker.get_model_status("e500-echo")
        with pytest.raises(APIModelError) as info:
            await manager.api_client.send_request("e500-echo", request(9))
    assert not status.is_available  # a 500 is the model's failure...
    assert status.last_error and "[redacted prompt]" in status.last_error  # ...its text is not
    texts = [json.dumps({"name": s.name, "status": s.status.description,
                         "attrs": dict(s.attributes or {})}, default=str)
             for s in built.spans.get_finished_spans()]
    texts += [r.getMessage() for r in caplog.records if r.name.startswith("amm")]  # not litellm's
    # Events stay in the process (they carry the messages for the opt-in); their error texts leave.
    texts += [str(getattr(e, "error_message", None) or getattr(e, "error", None) or "")
              for e in built.log.events]
    texts += [status.last_error, str(info.value), "".join(traceback.format_exception(info.value))]
    assert any("e500-echo" in t and "unavailable" in t for t in texts)
    leaks = [t for t in texts if "Project Nightingale" in t or "confidential merger" in t]
    assert leaks == []
    assert SECRET not in "".join(texts)


async def test_with_the_content_opt_in_the_error_keeps_the_quote_but_health_does_not(
        fault_server: FaultServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "SPAN_ONLY")
    registry = ModelRegistry.from_dict({"models": [entry("e500-echo", fault_server)]})
    health = HealthChecker(registry, failure_threshold=1)
    keys = APIKeyManager()
    keys.add_key("openai", SECRET)
    async with APIClientManager(keys, registry=registry, events=health) as client:
        with pytest.raises(ProviderError) as info:
            await client.send_request("e500-echo", request())
    assert "Project Nightingale" in str(info.value) and SECRET not in str(info.value)
    last_error = health.get_model_status("e500-echo").last_error or ""
    assert "Project Nightingale" not in last_error and "[redacted prompt]" in last_error


# -- 4. no key in any chained exception -------------------------------------------------


def _chain(err: BaseException) -> list[BaseException]:
    seen: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and current not in seen:
        seen.append(current)
        current = current.__cause__ or current.__context__
    return seen


@pytest.mark.parametrize("model", ["e401-x", "e403-x", "e400-x", "e500-x"])
async def test_no_key_in_the_formatted_traceback_or_any_chained_exception(
        fault_server: FaultServer, model: str) -> None:
    registry = ModelRegistry.from_dict({"models": [entry(model, fault_server)]})
    keys = APIKeyManager()
    keys.add_key("openai", SECRET)
    async with APIClientManager(keys, registry=registry) as client:
        with pytest.raises(APIModelError) as info:
            await client.send_request(model, request())
    err = info.value
    assert fault_server.keys[model] == [SECRET]  # the provider did get (and echo) it
    printed = "".join(traceback.format_exception(err))
    assert SECRET not in printed and "Project Nightingale" not in printed
    assert "Bearer ***" in printed  # the provider's text is kept, redacted
    for link in _chain(err):
        dumped = repr(link.args) + repr(getattr(link, "__dict__", {}))
        assert SECRET not in dumped, type(link)


async def test_no_key_in_the_traceback_of_a_failover_error_through_the_manager(
        tmp_path: Path, fault_server: FaultServer) -> None:
    built = build(tmp_path, [entry("e401-a", fault_server), entry("e500-b", fault_server)])
    async with built.manager as manager:
        with pytest.raises(APIModelError) as info:
            await manager.complete(request())
    printed = "".join(traceback.format_exception(info.value))
    # The 401 rests the key at that base URL, which e500-b shares: it is not tried.
    assert "e401-a" in printed
    assert SECRET not in printed and "Project Nightingale" not in printed


# -- 5. a 429 without Retry-After waits for amm's own window ------------------------------


class Sleeps:
    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)


def _client(server: FaultServer, *keys_: str, sleep: Callable[[float], Awaitable[None]],
            backoff_max_s: float = 30.0) -> APIClientManager:
    registry = ModelRegistry.from_dict({"models": [entry("e429-busy", server)]})
    keys = APIKeyManager()
    for key in keys_:
        keys.add_key("openai", key)
    return APIClientManager(keys, registry=registry, sleep=sleep, backoff_max_s=backoff_max_s)


async def test_a_429_without_retry_after_is_not_retried_before_the_window_but_failed_over(
        fault_server: FaultServer) -> None:
    sleeps = Sleeps()
    async with _client(fault_server, SECRET, sleep=sleeps) as client:
        with pytest.raises(RateLimitError) as info:
            await client.send_request_with_retry("e429-busy", request(), max_retries=3)
    assert info.value.retry_after_seconds is None
    assert fault_server.count("e429-busy") == 1 and sleeps.delays == []  # 60 s > backoff_max_s


async def test_a_429_without_retry_after_waits_out_the_keys_cool_down_when_allowed(
        fault_server: FaultServer) -> None:
    sleeps = Sleeps()
    async with _client(fault_server, SECRET, sleep=sleeps, backoff_max_s=120) as client:
        with pytest.raises(RateLimitError):
            await client.send_request_with_retry("e429-busy", request(), max_retries=1)
    assert len(sleeps.delays) == 1 and sleeps.delays[0] >= 59.9


async def test_a_429_without_retry_after_retries_at_once_with_another_ready_key(
        fault_server: FaultServer) -> None:
    sleeps = Sleeps()
    async with _client(fault_server, SECRET, OTHER_SECRET, sleep=sleeps) as client:
        with pytest.raises(RateLimitError):
            await client.send_request_with_retry("e429-busy", request(), max_retries=1)
    assert fault_server.keys["e429-busy"] == [SECRET, OTHER_SECRET]
    assert len(sleeps.delays) == 1 and sleeps.delays[0] < 1.0  # backoff only


async def test_a_429_without_retry_after_fails_over_at_once_through_the_manager(
        tmp_path: Path, fault_server: FaultServer) -> None:
    built = build(tmp_path, [entry("e429-busy", fault_server, cost_in=0.00001, cost_out=0.00001,
                                   latency_ms=10),
                             entry("ok-free", fault_server)], retries_per_model=3)
    async with built.manager as manager:
        started = time.monotonic()
        response = await manager.complete(request())
        elapsed = time.monotonic() - started
        assert manager.rate_limiter.is_rate_limited("e429-busy")
    assert response.model_id == "ok-free"
    assert fault_server.count("e429-busy") == 1 and elapsed < 1.0
