"""Durability under SIGKILL: a response the caller saw has its ledger row.

A worker process runs concurrent requests through the real manager against the
provider simulator (whose ``complete`` awaits the ledger's durability barrier,
``CostTracker.durable()``, before returning) and appends each returned task id to
a file. The worker is SIGKILLed mid-run three times
(a new worker continues on the same store). Every task id in the file must have
exactly one ledger row.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from amm.sim import ModelProfile, Simulator

ROOT = Path(__file__).resolve().parents[1]

WORKER = textwrap.dedent("""
    import asyncio, os, sys
    from amm.api_key_manager import APIKeyManager
    from amm.manager import ModelManager
    from amm.errors import APIModelError
    from amm.models import ModelRequest

    config, data, out, run, barrier = sys.argv[1:6]
    if barrier == "0":  # to measure what is lost without it
        from amm.cost_tracker import CostTracker

        async def no_barrier(self) -> bool:
            return True

        CostTracker.durable = no_barrier

    async def main() -> None:
        keys = APIKeyManager()
        keys.add_key("openai", "sk-test-openai-0123456789abcdef0123")
        manager = ModelManager.from_config(
            config, data_dir=data, key_manager=keys, telemetry=False,
            start_health_checks=False, base_backoff_seconds=0.001, timeout_s=5.0,
            degradation_check_interval_s=0)
        fd = os.open(out, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

        async def loop(lane: int) -> None:
            for i in range(100000):
                task = f"{run}-{lane}-{i}"
                try:
                    await manager.complete(ModelRequest(
                        prompt=f"Say hello to {task}", task_id=task, agent_type="impl",
                        max_tokens=16))
                except APIModelError as exc:  # not returned: not written down
                    print(task, repr(exc), file=sys.stderr, flush=True)
                    continue
                os.write(fd, (task + "\\n").encode())

        async with manager:
            print("ready", flush=True)
            await asyncio.gather(*(loop(lane) for lane in range(8)))

    asyncio.run(main())
""")


def _start(tmp_path: Path, config: Path, run: int, barrier: bool) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "LITELLM_LOCAL_MODEL_COST_MAP": "True",
           "LITELLM_TELEMETRY": "False"}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(config), str(tmp_path / "data"),
         str(tmp_path / "returned.txt"), str(run), "1" if barrier else "0"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE,
        stderr=(tmp_path / f"worker-{run}.err").open("w"), text=True)


def _lines(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def kill_runs(tmp_path: Path, *, barrier: bool, kills: int = 3) -> tuple[list[str], dict[str, int]]:
    """Run ``kills`` workers, each SIGKILLed after some responses; (task ids the
    workers saw returned, ledger rows per task id)."""
    profiles = {"sim-m": ModelProfile(latency_ms=1, latency_jitter_ms=1, quality=1.0,
                                      rpm_limit=1000000)}
    with Simulator(profiles, seed=3) as sim:
        config = tmp_path / "registry.json"
        config.write_text(json.dumps({"models": [{
            "id": "sim-m", "provider": "openai", "name": "sim-m",
            "litellm_model": "openai/sim-m", "api_base": sim.api_base("openai"),
            "capabilities": ["text-generation"], "cost_per_1k_input_tokens": 0.001,
            "cost_per_1k_output_tokens": 0.002,
            "rate_limits": {"requests_per_minute": 100000, "tokens_per_minute": 10**9},
            "context_window": 32000, "average_response_time_ms": 5, "enabled": True}]}))
        returned = tmp_path / "returned.txt"
        for run in range(kills):
            proc = _start(tmp_path, config, run, barrier)
            try:
                assert proc.stdout is not None
                err = tmp_path / f"worker-{run}.err"
                assert proc.stdout.readline().strip() == "ready", err.read_text()
                target = len(_lines(returned)) + 60 + 20 * run
                deadline = time.monotonic() + 20
                while len(_lines(returned)) < target and time.monotonic() < deadline:
                    assert proc.poll() is None, err.read_text()
                    time.sleep(0.005)
                os.kill(proc.pid, signal.SIGKILL)  # mid-run: requests are in flight
                proc.wait(timeout=10)
            finally:
                if proc.poll() is None:
                    proc.kill()
                    proc.wait()
            assert proc.returncode == -signal.SIGKILL
    with sqlite3.connect(tmp_path / "data" / "amm.db") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        rows = dict(conn.execute(
            "SELECT task_id, COUNT(*) FROM amm_cost_ledger GROUP BY task_id").fetchall())
    return _lines(returned), rows


@pytest.mark.timeout(60)
def test_every_response_returned_before_a_sigkill_has_exactly_one_ledger_row(
    tmp_path: Path,
) -> None:
    returned, rows = kill_runs(tmp_path, barrier=True)
    assert len(returned) >= 3 * 60
    assert len(set(returned)) == len(returned)
    missing = [task for task in returned if task not in rows]
    assert missing == []
    assert {task: n for task, n in rows.items() if n != 1} == {}  # no duplicates
