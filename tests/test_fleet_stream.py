"""Streams and the shared cache on a real Redis: a streamed call settles the fleet's
window with the tokens it used, and one worker's answer is another worker's hit."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from amm.sim import ModelProfile, Simulator
from tests.fixtures_redis import RedisServer, redis_server  # noqa: F401  (fixture)


def _manager(tmp_path: Path, sim: Simulator, url: str, name: str = "w1") -> Any:
    from amm.api_key_manager import APIKeyManager
    from amm.manager import ModelManager

    config = tmp_path / "registry.json"
    config.write_text(json.dumps({"models": [{
        "id": "sim-m", "provider": "openai", "name": "sim-m", "litellm_model": "openai/sim-m",
        "api_base": sim.api_base("openai"), "capabilities": ["text-generation"],
        "cost_per_1k_input_tokens": 0.001, "cost_per_1k_output_tokens": 0.002,
        "rate_limits": {"requests_per_minute": 1000, "tokens_per_minute": 10**6},
        "context_window": 32000, "average_response_time_ms": 5, "enabled": True}]}))
    keys = APIKeyManager()
    keys.add_key("openai", "sk-test-openai-0123456789abcdef0123")
    return ModelManager.from_config(
        config, data_dir=tmp_path / name, key_manager=keys, telemetry=False,
        start_health_checks=False, base_backoff_seconds=0.001, timeout_s=5.0,
        degradation_check_interval_s=0, state_url=url)


@pytest.mark.timeout(60)
async def test_a_streamed_call_settles_its_shared_tokens_and_budget_hold(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    import redis.asyncio as aioredis

    from amm.models import ModelRequest

    profiles = {"sim-m": ModelProfile(latency_ms=2, quality=1.0, rpm_limit=1_000_000)}
    with Simulator(profiles, seed=3) as sim:
        manager = _manager(tmp_path, sim, redis_server.url)
        async with manager:
            stream = manager.stream(ModelRequest(
                prompt="Explain consistent hashing in depth", task_id="s1",
                agent_type="impl", max_tokens=400))
            text = "".join([chunk.delta async for chunk in stream])
            assert text and stream.response is not None
            await manager.state.flush()
            used_in, used_out = sim.billed()["sim-m"]
            client = aioredis.Redis.from_url(redis_server.url, decode_responses=True)
            try:
                tokens = await client.hgetall("amm:rl:sim-m:tok")
                total = int(await client.get("amm:rl:sim-m:sum"))
                day = dt.datetime.now(dt.UTC).date().isoformat()
                holds = await client.hlen(f"amm:budget:{day}:holds")
                spent = await client.hgetall(f"amm:budget:{day}:spent")
            finally:
                await client.aclose()
            estimate = 400  # at least the answer's allowance was reserved at admission
            assert list(tokens.values()) == [str(used_in + used_out)]
            assert total == used_in + used_out < estimate
            assert holds == 0  # the stream's budget hold ended with it
            assert float(spent[manager.state.worker]) == pytest.approx(
                manager.cost_tracker.current_spend())
            assert manager.cost_tracker.current_spend() > 0


@pytest.mark.timeout(60)
async def test_one_workers_answer_is_a_cache_hit_for_another_after_a_sync(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    from amm.models import ModelRequest

    profiles = {"sim-m": ModelProfile(latency_ms=2, quality=1.0, rpm_limit=1_000_000)}

    def ask() -> ModelRequest:
        return ModelRequest(prompt="What is a bloom filter?", task_id="q", agent_type="impl",
                            temperature=0.0, max_tokens=64)

    with Simulator(profiles, seed=4) as sim:
        first = _manager(tmp_path, sim, redis_server.url, "w1")
        second = _manager(tmp_path, sim, redis_server.url, "w2")
        async with first, second:
            answer = await first.complete(ask())
            await first.state.flush()  # shared with the fleet (off the request path)
            await second.state.sync()  # the next sync round learns the key
            hit = await second.complete(ask())
    assert sim.request_count("sim-m") == 1
    assert hit.metadata.get("cache_hit") is True and hit.content == answer.content
