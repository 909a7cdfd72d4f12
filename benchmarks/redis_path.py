"""The Redis state backend's cost: one managed call with ``state_url`` and one without.

DESIGN.md's budget: the managed call on a fleet's shared Redis adds at most 0.5 ms at
p50 over the same call on the in-process default, measured in the same run. This
section starts a real ``redis-server`` on a free loopback port (in a temp dir, no
persistence), builds two managers from the same registry over the benchmark's mock,
identical but for ``state_url``, and measures both sequentially, alternating call by
call. Both run with telemetry off: the
figure is the backend's, and the main run's span counts stay the main manager's.

Besides the two paths it times the backend's own round trips from the same process
(``admit`` + ``settle`` of :class:`~amm.state.redis_backend.RedisState`, and a
``cache_get`` miss), so a change in the added p50 can be told apart from Redis's.

    python -m benchmarks --only redis         # this section alone
    python -m benchmarks.redis_path           # the same, printed as JSON
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path as FsPath
from typing import Any

from amm.testing.redis import free_port, spawn_redis
from benchmarks.amm_env import AGENT_TYPE, registry_document
from benchmarks.paths import BENCH_API_KEY, MAX_TOKENS, TEMPERATURE, prompt
from benchmarks.runner import PromptCounter, Series, warm_up
from benchmarks.stats import summarise

__all__ = ["RedisProcess", "StatePath", "bench_redis_state"]

BUDGET_ADDED_P50_MS = 0.5


class RedisProcess:
    """A ``redis-server`` on a free loopback port, no persistence; a context manager."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server is not installed (apt-get install redis-server)")
        self.binary = binary
        self.port = free_port()
        self._dir: tempfile.TemporaryDirectory[str] | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def __enter__(self) -> RedisProcess:
        self._dir = tempfile.TemporaryDirectory(prefix="amm-bench-redis-")
        try:
            self._proc = spawn_redis(self.binary, self.port, self._dir.name)
        except RuntimeError:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        if self._dir is not None:
            self._dir.cleanup()
            self._dir = None


class StatePath:
    """``ModelManager.complete`` (a cache miss) on a manager of its own; ``state_url``
    ``""`` is the in-process default, a URL the fleet's shared state."""

    def __init__(self, name: str, api_base: str, workdir: FsPath, state_url: str) -> None:
        self.name = name
        self._api_base = api_base
        self._dir = workdir / name
        self._state_url = state_url
        self.manager: Any = None
        self._request_type: Any = None

    async def setup(self) -> None:
        from amm.manager import ModelManager
        from amm.models import ModelRequest

        os.environ.setdefault("OPENAI_API_KEY", BENCH_API_KEY)  # as AmmBench does
        self._dir.mkdir(parents=True, exist_ok=True)
        config = self._dir / "model_registry.json"
        config.write_text(json.dumps(registry_document(self._api_base)))
        self.manager = ModelManager.from_config(
            config, data_dir=self._dir / "data", daily_budget=1e12, telemetry=False,
            start_health_checks=False, state_url=self._state_url)
        await self.manager.start()
        self._request_type = ModelRequest

    async def call(self, i: int) -> None:
        request = self._request_type(
            prompt=prompt(i), task_id=f"task-{i}", agent_type=AGENT_TYPE,
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE)
        reply = await self.manager.complete(request)
        if not reply.content:
            raise RuntimeError(f"empty completion from {self.name}")

    def settle(self) -> None:
        """Write now what this path's calls queued (charged to this path)."""
        self.manager.flush()

    async def close(self) -> None:
        manager, self.manager = self.manager, None
        if manager is not None:
            await manager.stop()


async def _round_trips(url: str, calls: int) -> dict[str, Any]:
    """The backend alone, from this process: ``calls`` admissions, then as many
    one-settlement writes, then as many cache misses, each timed from here (p50/p99)
    and by the server (``INFO commandstats``: its mean time inside the command)."""
    import redis.asyncio as aioredis

    from amm.state.base import Admission, Settlement
    from amm.state.redis_backend import RedisState

    state = RedisState(url, prefix="amm-rtt")
    admin = aioredis.Redis.from_url(url)
    tickets = [Admission(f"rtt-{i}", "bench-0", 100, 10**8, 10**9, 60.0, day="d",
                         worker="w", cost_usd=1e-5, budget_usd=1e12) for i in range(calls)]
    steps: list[tuple[str, str, Callable[[int], Awaitable[Any]]]] = [
        ("admit", "evalsha", lambda i: state.admit(tickets[i])),
        ("settle", "evalsha", lambda i: state.write([Settlement(tickets[i], 90, 0.0)])),
        ("cache_get_miss", "get", lambda i: state.cache_get(f"miss-{i}")),
    ]
    out: dict[str, Any] = {}
    try:
        for name, command, step in steps:
            await admin.config_resetstat()
            samples = []
            for i in range(calls):
                start = time.perf_counter()
                await step(i)
                samples.append(time.perf_counter() - start)
            server = (await admin.info("commandstats")).get(f"cmdstat_{command}", {})
            s = summarise(samples, concurrency=1, wall_s=0.0)
            out[name] = {"p50_us": round(s.p50_ms * 1000, 1), "p99_us": round(s.p99_ms * 1000, 1),
                         "server_us": round(float(server.get("usec_per_call", "nan")), 1)}
    finally:
        await state.aclose()
        await admin.aclose()
    return out


async def _alternate(paths: list[StatePath], counter: PromptCounter,
                     calls: int) -> dict[str, Series]:
    """``calls`` calls per path, alternating call by call (the order swapped every
    call), so the host's drift (other processes, frequency) falls on both alike: a
    difference of 0.5 ms cannot be told from chunks seconds apart on a busy machine.
    Each path's pending writes are made every 100 calls, outside the timings."""
    series = {p.name: Series() for p in paths}
    gc.collect()
    for i in range(calls):
        for p in (paths if i % 2 else paths[::-1]):
            s = series[p.name]
            start, cpu = time.perf_counter(), time.process_time()
            try:
                await p.call(counter.next())
            except Exception as exc:  # counted and reported: one failure must not end the run
                s.errors += 1
                s.first_error = s.first_error or f"{type(exc).__name__}: {exc}"[:300]
            else:
                s.latencies_s.append(time.perf_counter() - start)
            s.wall_s += time.perf_counter() - start
            s.cpu_s += time.process_time() - cpu
        if i % 100 == 99:
            for p in paths:
                p.settle()
    return series


async def bench_redis_state(api_base: str, *, calls: int, warmup: int) -> dict[str, Any]:
    """Both paths alternating at concurrency 1, ``calls`` each; the
    added p50/p99 of the Redis path and the backend's own round trips. Without a
    redis-server on this host: ``{"skipped": why}`` (the budget reads SKIP)."""
    if shutil.which("redis-server") is None:
        return {"skipped": "redis-server is not installed"}
    with RedisProcess() as redis, tempfile.TemporaryDirectory(prefix="amm-bench-state-") as tmp:
        paths = [StatePath("in_process", api_base, FsPath(tmp), ""),
                 StatePath("redis", api_base, FsPath(tmp), redis.url)]
        counter = PromptCounter(10**7)  # never a prompt of the main run
        try:
            for p in paths:
                await p.setup()
            await warm_up(paths, counter, calls=warmup)
            series = await _alternate(paths, counter, calls)
            redis_manager = paths[1].manager
            fallbacks = redis_manager.state.fallbacks if redis_manager.state else None
        finally:
            for p in paths:
                await p.close()
        rtt = await _round_trips(redis.url, max(50, calls // 4))
    out: dict[str, Any] = {"server": "redis-server on loopback", "calls": calls,
                           "fallbacks": fallbacks, "round_trips": rtt}
    for name, s in series.items():
        summary = s.summary(1).as_dict()
        if s.first_error:
            summary["first_error"] = s.first_error
        out[name] = summary
    for stat in ("p50_ms", "p99_ms"):
        out[f"added_{stat}"] = round(out["redis"][stat] - out["in_process"][stat], 4)
    return out


def main() -> None:
    """Run the section alone against a mock of its own; print the JSON."""
    from benchmarks.mock_server import MockServer
    from benchmarks.paths import litellm_env

    litellm_env()
    import litellm  # noqa: F401  (imported before any clock starts)

    with MockServer() as server:
        print(json.dumps(asyncio.run(bench_redis_state(
            server.api_base, calls=2000, warmup=100)), indent=2))


if __name__ == "__main__":
    main()
