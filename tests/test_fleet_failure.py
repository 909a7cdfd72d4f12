"""Redis killed mid-run and started again: no request fails because of it, the fallback
is reported once, and the shared state resumes."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from amm.sim import ModelProfile, Simulator
from tests.fixtures_redis import RedisServer, redis_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]


def _manager(tmp_path: Path, sim: Simulator, url: str, **kwargs: Any) -> Any:
    from amm.api_key_manager import APIKeyManager
    from amm.manager import ModelManager

    config = tmp_path / "registry.json"
    config.write_text(json.dumps({"models": [{
        "id": "sim-m", "provider": "openai", "name": "sim-m", "litellm_model": "openai/sim-m",
        "api_base": sim.api_base("openai"), "capabilities": ["text-generation"],
        "cost_per_1k_input_tokens": 0.001, "cost_per_1k_output_tokens": 0.002,
        "rate_limits": {"requests_per_minute": 100_000, "tokens_per_minute": 10**9},
        "context_window": 32000, "average_response_time_ms": 5, "enabled": True}]}))
    keys = APIKeyManager()
    keys.add_key("openai", "sk-test-openai-0123456789abcdef0123")
    return ModelManager.from_config(
        config, data_dir=tmp_path / "data", key_manager=keys, telemetry=False,
        start_health_checks=False, base_backoff_seconds=0.001, timeout_s=5.0,
        degradation_check_interval_s=0, cache_enabled=False, state_url=url, **kwargs)


@pytest.mark.timeout(120)
async def test_requests_survive_redis_going_away_and_shared_state_resumes(
        tmp_path: Path, redis_server: RedisServer, caplog: pytest.LogCaptureFixture,  # noqa: F811
) -> None:
    from amm.models import ModelRequest

    profiles = {"sim-m": ModelProfile(latency_ms=2, quality=1.0, rpm_limit=1_000_000)}
    with Simulator(profiles, seed=1) as sim:
        manager = _manager(tmp_path, sim, redis_server.url)
        manager.state.sync_interval_s = 0.1  # a quick sync loop for the test
        manager.state.retry_interval_s = 0.1
        done: list[str] = []

        async def run(phase: str, n: int) -> None:
            for i in range(n):
                reply = await manager.complete(ModelRequest(
                    prompt=f"note {phase} {i}", task_id=f"{phase}-{i}", agent_type="impl",
                    max_tokens=16))
                done.append(reply.content)

        with caplog.at_level(logging.INFO, logger="amm.state"):
            async with manager:
                await run("before", 10)
                assert manager.state.shared and manager.state.fallbacks == 0
                redis_server.kill()
                await run("during", 30)  # none raises
                assert not manager.state.shared
                assert manager.state.fallbacks >= 30
                redis_server.start()  # the same port, empty
                for _ in range(100):
                    if manager.state.shared:
                        break
                    await asyncio.sleep(0.05)
                assert manager.state.shared
                await run("after", 10)
                import redis.asyncio as aioredis

                client = aioredis.Redis.from_url(redis_server.url)
                assert await client.zcard("amm:rl:sim-m") >= 10  # counted in Redis again
                await client.aclose()
    assert len(done) == 50
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING
                and "unreachable" in r.getMessage()]
    assert len(warnings) == 1  # one outage, one warning
    assert any("answers again" in r.getMessage() for r in caplog.records)


@pytest.mark.timeout(60)
async def test_fail_closed_refuses_budgeted_calls_while_redis_is_away(
        tmp_path: Path, redis_server: RedisServer, monkeypatch: pytest.MonkeyPatch,  # noqa: F811
) -> None:
    from amm.errors import BudgetExceededError
    from amm.models import ModelRequest

    monkeypatch.setenv("AMM_STATE_FAIL_CLOSED", "1")
    profiles = {"sim-m": ModelProfile(latency_ms=2, quality=1.0, rpm_limit=1_000_000)}
    with Simulator(profiles, seed=1) as sim:
        manager = _manager(tmp_path, sim, redis_server.url)
        async with manager:
            await manager.complete(ModelRequest(prompt="hi", task_id="a", agent_type="impl"))
            redis_server.kill()
            with pytest.raises(BudgetExceededError) as info:
                await manager.complete(ModelRequest(prompt="hi again", task_id="b",
                                                    agent_type="impl"))
            assert info.value.error_type == "state_unavailable"


def test_the_state_url_comes_from_the_argument_then_the_environment_then_the_registry(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from amm.state import resolve_state_url

    monkeypatch.delenv("AMM_STATE_URL", raising=False)
    assert resolve_state_url(None, None) is None
    assert resolve_state_url(None, "redis://file:6379/0") == "redis://file:6379/0"
    monkeypatch.setenv("AMM_STATE_URL", "redis://env:6379/0")
    assert resolve_state_url(None, "redis://file:6379/0") == "redis://env:6379/0"
    assert resolve_state_url("redis://arg:6379/0", "redis://file:6379/0") == "redis://arg:6379/0"
    assert resolve_state_url("", "redis://file:6379/0") is None  # explicitly in-process


def test_experiment_assignment_is_the_same_in_every_worker_process() -> None:
    code = ("from amm.experiments import HashAssigner; import sys; "
            "print(','.join(f'{HashAssigner.bucket(\"exp\", f\"task-{i}\"):.12f}' "
            "for i in range(50)))")
    outs = {subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                           text=True, check=True,
                           env={"PYTHONHASHSEED": str(seed), "PYTHONPATH": str(ROOT),
                                "PATH": "/usr/bin:/bin"}).stdout
            for seed in (1, 2, 3)}
    assert len(outs) == 1 and outs.pop().count(",") == 49
