"""A fleet: 4 worker processes share one provider quota and one budget through Redis.

Each worker is a real process running the real manager (``from_config(...,
state_url=...)``) against the provider simulator served from the test process; a
real ``redis-server`` runs on a free loopback port. Every request must end in a
response or a typed ``APIModelError`` (the worker writes each outcome down).
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from amm.sim import ModelProfile, Simulator
from tests.fixtures_redis import RedisServer, redis_server  # noqa: F401  (fixture)

ROOT = Path(__file__).resolve().parents[1]
WORKERS = 4
LANES = 4

WORKER = textwrap.dedent("""
    import asyncio, faulthandler, json, sys
    from amm.api_key_manager import APIKeyManager
    from amm.errors import APIModelError
    from amm.manager import ModelManager
    from amm.models import ModelRequest

    config, data, out, name, count, max_tokens, budget, state_url = sys.argv[1:9]

    async def main() -> None:
        from amm._litellm import load_litellm

        load_litellm()  # imported before the start line: the run is not an import race
        keys = APIKeyManager()
        keys.add_key("openai", "sk-test-openai-0123456789abcdef0123")
        manager = ModelManager.from_config(
            config, data_dir=data, key_manager=keys, telemetry=False,
            start_health_checks=False, base_backoff_seconds=0.001, timeout_s=5.0,
            degradation_check_interval_s=0, daily_budget=float(budget), max_failovers=1,
            cache_enabled=False, state_url=state_url or None)
        outcomes = []

        async def lane(lane_no: int, n: int) -> None:
            for i in range(n):
                task = f"{name}-{lane_no}-{i}"
                try:
                    await manager.complete(ModelRequest(
                        prompt=f"Write a short note for {task}", task_id=task,
                        agent_type="impl", max_tokens=int(max_tokens)))
                    outcomes.append({"task": task, "ok": True})
                except APIModelError as exc:
                    outcomes.append({"task": task, "ok": False,
                                     "error": type(exc).__name__, "kind": exc.error_type})
                except Exception as exc:  # untyped: the test fails on it
                    outcomes.append({"task": task, "ok": False, "untyped": repr(exc)})

        async with manager:
            print("ready", flush=True)
            sys.stdin.readline()  # every worker starts at once
            # A worker that hangs prints every thread's stack and exits: the test shows it.
            faulthandler.dump_traceback_later(100, exit=True)
            per_lane = int(count) // 4
            await asyncio.gather(*(lane(k, per_lane) for k in range(4)))
            state = manager.state
            summary = {"fallbacks": state.fallbacks if state else None,
                       "shared": state.shared if state else None}
        with open(out, "w") as f:
            json.dump({"outcomes": outcomes, "summary": summary}, f)

    asyncio.run(main())
""")


def _registry(path: Path, sim: Simulator, *, rpm: int, tpm: int,
              cost_in: float = 0.001, cost_out: float = 0.002) -> Path:
    path.write_text(json.dumps({"models": [{
        "id": "sim-m", "provider": "openai", "name": "sim-m", "litellm_model": "openai/sim-m",
        "api_base": sim.api_base("openai"), "capabilities": ["text-generation"],
        "cost_per_1k_input_tokens": cost_in, "cost_per_1k_output_tokens": cost_out,
        "rate_limits": {"requests_per_minute": rpm, "tokens_per_minute": tpm},
        "context_window": 32000, "average_response_time_ms": 5, "enabled": True}]}))
    return path


def run_fleet(tmp_path: Path, config: Path, *, state_url: str, requests: int,
              max_tokens: int, budget: float = 100.0) -> list[dict[str, Any]]:
    """Start WORKERS processes, let them go together, return each one's report."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False"}
    env.pop("AMM_STATE_URL", None)
    procs = []
    for w in range(WORKERS):
        out = tmp_path / f"w{w}.json"
        procs.append((subprocess.Popen(
            [sys.executable, "-c", WORKER, str(config), str(tmp_path / f"data{w}"), str(out),
             f"w{w}", str(requests // WORKERS), str(max_tokens), str(budget), state_url],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=(tmp_path / f"w{w}.err").open("w"), text=True), out))
    try:
        for w, (proc, _) in enumerate(procs):
            assert proc.stdout is not None
            line = proc.stdout.readline().strip()
            assert line == "ready", (tmp_path / f"w{w}.err").read_text()[-3000:]
        for proc, _ in procs:
            assert proc.stdin is not None
            proc.stdin.write("go\n")
            proc.stdin.flush()
        for w, (proc, _) in enumerate(procs):
            assert proc.wait(timeout=120) == 0, (tmp_path / f"w{w}.err").read_text()[-3000:]
    finally:
        for proc, _ in procs:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    return [json.loads(out.read_text()) for _, out in procs]


def _outcomes(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for r in reports for o in r["outcomes"]]


def _ledger(tmp_path: Path) -> tuple[float, set[str]]:
    total, tasks = 0.0, set()
    for w in range(WORKERS):
        with sqlite3.connect(tmp_path / f"data{w}" / "amm.db") as conn:
            for task, cost in conn.execute("SELECT task_id, cost_usd FROM amm_cost_ledger"):
                total += cost
                tasks.add(task)
    return total, tasks


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_four_workers_on_one_redis_stay_under_the_providers_limit_together(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    profiles = {"sim-m": ModelProfile(latency_ms=20, latency_jitter_ms=5, quality=1.0,
                                      rpm_limit=30)}
    results = {}
    for label, url in (("per-process", ""), ("redis", redis_server.url)):
        run_dir = tmp_path / f"run-{label}"
        run_dir.mkdir()
        with Simulator(profiles, seed=5) as sim:
            config = _registry(run_dir / "registry.json", sim, rpm=30, tpm=10_000)
            started = time.monotonic()
            reports = run_fleet(run_dir, config, state_url=url, requests=400, max_tokens=600)
            wall = time.monotonic() - started
            outcomes = _outcomes(reports)
            billed_in, billed_out = sim.billed().get("sim-m", (0, 0))
            results[label] = {
                "received": sim.request_count("sim-m"),
                "tokens": billed_in + billed_out,
                "provider_429": sim.status_counts("sim-m").get(429, 0),
                "served": sum(o["ok"] for o in outcomes),
                "refused": sorted({o.get("error", "") for o in outcomes if not o["ok"]}),
                "untyped": [o for o in outcomes if "untyped" in o],
                "requests": len(outcomes), "wall_s": round(wall, 1),
            }
    print("\nfleet of 4 workers, 400 requests, model limited to 30 req/min, 10,000 tok/min:")
    for label, r in results.items():
        print(f"  {label:12s} {r}")
    shared, alone = results["redis"], results["per-process"]
    # The whole run is well inside one 60 s window: every request counts against it.
    assert shared["wall_s"] < 60
    assert shared["requests"] == 400 and shared["untyped"] == []
    assert shared["received"] <= 27 and shared["tokens"] <= 9000
    assert shared["provider_429"] == 0
    assert shared["served"] == shared["received"] > 0
    # Without shared state every worker admits its own 27: the provider answers 429.
    assert alone["requests"] == 400 and alone["untyped"] == []
    assert alone["received"] > 27 and alone["provider_429"] > 0


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_four_workers_share_one_daily_budget_and_lose_no_request(
        tmp_path: Path, redis_server: RedisServer) -> None:  # noqa: F811
    profiles = {"sim-m": ModelProfile(latency_ms=10, latency_jitter_ms=5, quality=1.0,
                                      rpm_limit=1_000_000)}
    with Simulator(profiles, seed=7) as sim:
        config = _registry(tmp_path / "registry.json", sim, rpm=100_000, tpm=10**9,
                           cost_in=0.01, cost_out=0.02)
        reports = run_fleet(tmp_path, config, state_url=redis_server.url, requests=400,
                            max_tokens=100, budget=0.05)
    outcomes = _outcomes(reports)
    spent, ledger_tasks = _ledger(tmp_path)
    one_request = (200 * 0.01 + 100 * 0.02) / 1000  # a generous bound of one call's cost
    served = [o["task"] for o in outcomes if o["ok"]]
    print(f"\nbudget $0.05 over 4 workers: spent ${spent:.4f} in {len(ledger_tasks)} ledger "
          f"rows, {len(served)} served, refused: "
          f"{sorted({o.get('kind', '') for o in outcomes if not o['ok']})}")
    assert len(outcomes) == 400 and not [o for o in outcomes if "untyped" in o]
    assert spent <= 0.05 + WORKERS * one_request
    assert spent > 0.03  # the budget was used, not refused from the start
    assert set(served) <= ledger_tasks  # every response the caller saw is in the ledger
    refused = [o for o in outcomes if not o["ok"]]
    assert refused and {o["error"] for o in refused} == {"BudgetExceededError"}
