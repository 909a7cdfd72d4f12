"""Reliability of the request path through the real manager on the simulator: broken
200s, missing usage, bad settings, a failing build that leaks nothing, the whole-
request deadline.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from amm.errors import ConfigurationError, FailoverError, InvalidRequestError
from amm.manager import ModelManager
from amm.models import ModelRequest
from amm.sim import ModelProfile
from telemetry.events import AttemptEvent
from tests.fixtures_manager import model_entry


def request(i: int = 0, **kw: Any) -> ModelRequest:
    return ModelRequest(prompt=f"Explain the write-ahead log, case {i}", task_id=f"r{i}",
                        agent_type="research", max_tokens=80, **kw)


def ledger(manager: Any) -> dict[str, tuple[int, int]]:
    manager.cost_tracker.flush()
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        rows = conn.execute("SELECT model_id, SUM(input_tokens), SUM(output_tokens) "
                            "FROM amm_cost_ledger GROUP BY model_id").fetchall()
    return {m: (int(i), int(o)) for m, i, o in rows}


async def test_a_200_with_empty_choices_is_a_provider_fault_and_fails_over(build_manager):
    manager, sim, log = build_manager(
        {"hollow": ModelProfile(latency_ms=1, empty_choices_rate=1.0),
         "solid": ModelProfile(latency_ms=1)},
        [model_entry("hollow", cost_in=0.0, cost_out=0.0), model_entry("solid")],
        retries_per_model=0)
    async with manager:
        reply = await manager.complete(request())
    assert reply.model_id == "solid" and reply.content
    failed = [e for e in log.of(AttemptEvent) if e.model_id == "hollow"]
    assert [e.error_type for e in failed] == ["empty_response"]
    assert sim.request_count("hollow") == 1


async def test_a_200_without_usage_is_billed_an_estimate_flagged_never_zero(build_manager):
    manager, _, log = build_manager({"m": ModelProfile(latency_ms=1, missing_usage_rate=1.0)},
                                      [model_entry("m")])
    async with manager:
        reply = await manager.complete(request())
    usage = reply.token_usage
    assert usage.input_tokens > 0 and usage.output_tokens > 0 and reply.cost > 0
    assert reply.metadata.get("usage_estimated") is True
    attempt = log.of(AttemptEvent)[0]
    assert attempt.usage_estimated and attempt.cost_usd == reply.cost
    assert ledger(manager)["m"] == (usage.input_tokens, usage.output_tokens)
    with sqlite3.connect(manager.cost_tracker.db_path) as conn:
        assert conn.execute("SELECT source FROM amm_cost_ledger").fetchall() == [
            ("attempt:estimated",)]


async def test_a_truncated_body_fails_over_and_every_request_ends_typed(build_manager):
    manager, _, _ = build_manager(
        {"cut": ModelProfile(latency_ms=1, truncated_body_rate=1.0),
         "ok": ModelProfile(latency_ms=1)},
        [model_entry("cut", cost_in=0.0, cost_out=0.0), model_entry("ok")], retries_per_model=0)
    async with manager:
        replies = [await manager.complete(request(i)) for i in range(3)]
    assert {r.model_id for r in replies} == {"ok"}


def test_a_bad_budget_policy_is_a_configuration_error_before_anything_opens(tmp_path):
    config = tmp_path / "r.json"
    config.write_text(json.dumps({"models": [model_entry("m", provider="ollama",
                                                        api_base="http://127.0.0.1:9")]}))
    with pytest.raises(ConfigurationError, match="budget_policy"):
        ModelManager.from_config(config, data_dir=tmp_path / "d", budget_policy="spend-it-all")
    assert not (tmp_path / "d").exists()


def test_a_failing_build_leaves_no_thread_and_no_open_file(tmp_path):
    config = tmp_path / "r.json"
    config.write_text(json.dumps({"models": [model_entry("m", provider="ollama",
                                                        api_base="http://127.0.0.1:9")]}))

    def fds() -> int:
        return len(os.listdir("/proc/self/fd"))

    threads, files = threading.active_count(), fds()
    for i in range(10):  # fails after telemetry, the store and the HTTP client are open
        with pytest.raises(ConfigurationError):
            ModelManager.from_config(config, data_dir=tmp_path / f"d{i}", daily_budget=-1.0)
    time.sleep(0.2)
    assert threading.active_count() - threads <= 1  # the OTel SDK's one shared at-exit thread
    assert fds() - files <= 1


def test_an_unwritable_data_directory_is_a_configuration_error_naming_it(tmp_path):
    config = tmp_path / "r.json"
    config.write_text(json.dumps({"models": [model_entry("m", provider="ollama",
                                                        api_base="http://127.0.0.1:9")]}))
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(ConfigurationError) as info:
        ModelManager.from_config(config, data_dir=blocker / "data", telemetry=False)
    assert str(blocker / "data") in str(info.value)


async def test_a_hung_model_holds_a_request_no_longer_than_its_deadline(build_manager):
    manager, _, _ = build_manager(
        {"hung": ModelProfile(timeout_rate=1.0, hang_s=30)}, [model_entry("hung")],
        timeout_s=30.0, request_timeout_s=1.5, retries_per_model=5)
    async with manager:
        started = time.monotonic()
        with pytest.raises((FailoverError, InvalidRequestError)) as info:
            await manager.complete(request())
        elapsed = time.monotonic() - started
    assert elapsed < 3.0, f"held {elapsed:.1f} s past a 1.5 s deadline"
    assert info.value.attempted_models == ["hung"]


def test_the_data_directory_and_store_are_private(build_manager, tmp_path):
    manager, _, _ = build_manager({"m": ModelProfile(latency_ms=1)}, [model_entry("m")])
    manager.close()
    data = Path(manager.cost_tracker.db_path).parent
    assert data.stat().st_mode & 0o777 == 0o700
    for path in data.iterdir():
        assert path.stat().st_mode & 0o077 == 0, path
