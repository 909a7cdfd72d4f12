"""Profile ``ModelManager.complete`` against the mock with cProfile, every thread included.

``litellm.acompletion`` runs part of each call in the default thread pool, and the
OTLP exporter works on its own thread, so profiling the event loop's thread alone
hides where CPU goes. The loop's default executor is replaced by one whose workers
each run their own ``cProfile.Profile``; the stats of every thread are merged and
grouped by package (amm, telemetry, opentelemetry, litellm, ...).

    python -m benchmarks.hot_path --calls 2000 [--path litellm] [--top 30] [--steps]
    python -m benchmarks.hot_path --path amm_stream --calls 1500   # streamed, read to its end
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import io
import pstats
import threading
import time
from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from benchmarks.amm_env import AmmBench, AmmPath, AmmStreamPath, DecoratorPath, DecoratorStreamPath
from benchmarks.mock_server import MockServer
from benchmarks.paths import LitellmPath, LitellmStreamPath, Path, StreamPath, litellm_env
from benchmarks.runner import PromptCounter, warm_up
from benchmarks.streaming import warm_up_streams

__all__ = ["bucket_of", "main", "profile_path"]

_BUCKETS = (
    ("/amm/", "amm"), ("/telemetry/", "telemetry (ours)"), ("opentelemetry", "opentelemetry"),
    ("/litellm/", "litellm"), ("/openai/", "openai"), ("/httpx/", "httpx"),
    ("/httpcore/", "httpcore"), ("/pydantic", "pydantic"), ("/asyncio/", "asyncio"),
    ("sqlite3", "sqlite3"), ("/json/", "json"), ("/logging/", "logging"),
    ("/threading.py", "threading"), ("/concurrent/", "concurrent"), ("/benchmarks/", "benchmarks"),
)


# Where an idle thread waits (a pool worker for work, the loop for I/O): not CPU.
_IDLE = ("'get' of '_queue.SimpleQueue'", "'poll' of 'select.epoll'", "'acquire' of '_thread.lock'")


def bucket_of(filename: str, function: str) -> str:
    """The package a profiled function belongs to (built-ins by their name)."""
    if filename == "~" and any(idle in function for idle in _IDLE):
        return "idle (waiting)"
    for needle, bucket in _BUCKETS:
        if needle in filename:
            return bucket
    if filename == "~":
        if "sqlite3" in function:
            return "sqlite3"
        if "lock" in function or "acquire" in function:
            return "locks (built-in)"
        return "built-ins"
    return "other"


class _ProfilingExecutor(ThreadPoolExecutor):
    """A thread pool whose every worker runs under its own cProfile profile."""

    def __init__(self, workers: int) -> None:
        self.profiles: list[cProfile.Profile] = []
        self._lock = threading.Lock()
        super().__init__(max_workers=workers, initializer=self._start)

    def _start(self) -> None:
        profile = cProfile.Profile()
        with self._lock:
            self.profiles.append(profile)
        profile.enable()

    def stop_profiles(self) -> None:
        """Disable each worker's profile in its own thread (cProfile is per thread)."""
        count = len(self.profiles)
        barrier = threading.Barrier(count) if count else None

        def stop_mine() -> None:
            assert barrier is not None
            barrier.wait(10)  # holds each worker until all have one: one stop per thread
            for p in self.profiles:
                p.disable()  # disables only the profile active on this thread

        futures = [self.submit(stop_mine) for _ in range(count)]
        for f in futures:
            f.result(20)


async def profile_path(path: Path | StreamPath, calls: int) -> tuple[pstats.Stats, float]:
    """Run ``calls`` sequential calls of ``path`` under cProfile; merged stats and wall seconds."""
    loop = asyncio.get_running_loop()
    executor = _ProfilingExecutor(workers=4)
    loop.set_default_executor(executor)
    counter = PromptCounter(10**7)
    if path.name.endswith("_stream"):
        await warm_up_streams([path], counter, calls=50)  # type: ignore[list-item]
    else:
        await warm_up([path], counter, calls=50)  # type: ignore[list-item]
    # Starts every worker (and its profile) even when the path uses none.
    await asyncio.gather(*(loop.run_in_executor(None, time.sleep, 0.01) for _ in range(4)))
    main_profile = cProfile.Profile()
    start = time.perf_counter()
    main_profile.enable()
    for _ in range(calls):
        await path.call(counter.next())
    main_profile.disable()
    wall = time.perf_counter() - start
    executor.stop_profiles()
    stats = pstats.Stats(main_profile)
    for p in executor.profiles:
        stats.add(p)
    return stats, wall


def report(stats: pstats.Stats, calls: int, wall_s: float, top: int) -> str:
    """Per-call time by package (tottime) and the top functions by own time."""
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    buckets: dict[str, float] = defaultdict(float)
    total = 0.0
    for (filename, _line, function), (_cc, _nc, tottime, _ct, _callers) in raw.items():
        bucket = bucket_of(filename, function)
        buckets[bucket] += tottime
        if bucket != "idle (waiting)":
            total += tottime
    lines = [f"{calls} calls, wall {wall_s / calls * 1e3:.2f} ms/call, profiled CPU "
             f"{total / calls * 1e3:.2f} ms/call without idle waits (cProfile inflates small "
             "functions)", "",
             "| package | own time us/call | share of CPU |", "| --- | --- | --- |"]
    for name, t in sorted(buckets.items(), key=lambda kv: -kv[1]):
        share = "-" if name == "idle (waiting)" else f"{t / total * 100:.1f}%"
        lines.append(f"| {name} | {t / calls * 1e6:.0f} | {share} |")
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(top)
    lines += ["", "Top functions by own time (all threads):", "```", out.getvalue().strip(), "```"]
    return "\n".join(lines)


async def step_costs(bench: AmmBench, *, iterations: int = 2000) -> dict[str, dict[str, float]]:
    """p50/mean microseconds of each step of a managed call, through the components' own APIs.

    Runs outside cProfile (no inflation). Each step is timed on its own, with the
    manager's real components, recorder and telemetry, inside an agent span.
    """
    from amm.models import ModelRequest
    from benchmarks.micro import time_async

    m = bench.manager
    cache, selector, evaluator, recorder = m.cache_manager, m.selector, m.evaluator, m.recorder
    counter = PromptCounter(2 * 10**7)
    model = m.registry.models()[0]
    reply = await m.complete(ModelRequest(prompt="seed", task_id="seed", agent_type="bench",
                                          max_tokens=64, temperature=0.0))

    def fresh() -> Any:
        n = counter.next()
        return ModelRequest(prompt=f"Summarise benchmark item {n:08d} in one short sentence.",
                            task_id=f"step-{n}", agent_type="bench", max_tokens=64, temperature=0.0)

    async def key_and_miss() -> None:
        request = fresh()
        await cache.get(cache.generate_cache_key(request), agent_type="bench",
                        task_id=request.task_id)

    async def select() -> None:
        request = fresh()
        await selector.select_model(request, "bench")

    async def store() -> None:
        await cache.set(cache.generate_cache_key(fresh()), reply)

    async def evaluate() -> None:
        request = fresh()
        quality = await evaluator.evaluate_response(reply, request)
        evaluator.record_score(reply.model_id, "bench", quality.overall_score)

    async def agent_span() -> None:
        with recorder.agent_span("bench", "step"):
            pass

    async def price_map() -> None:
        from amm._litellm import price_map_cost

        price_map_cost(model.litellm_model or model.id, 12, 14)

    steps = {"cache key + L1/L2 miss (CacheEvent recorded)": key_and_miss,
             "select_model, 4 models (SelectionEvent -> amm.select span)": select,
             "cache store (SQLite INSERT + commit)": store,
             "evaluate + record_score (QualityEvent)": evaluate,
             "agent span open/close (invoke_agent)": agent_span,
             "litellm price-map cost of a reply (now only for unregistered models)": price_map}
    out = {}
    for name, fn in steps.items():
        async def inside(fn: Any = fn) -> None:
            with recorder.agent_span("bench", "steps"):
                await fn()

        out[name] = await time_async(inside if fn is not agent_span else fn, iterations=iterations)
    return out


async def _run(path_name: str, calls: int, top: int, cumulative: str | None,
               callers: str | None, steps: bool) -> None:
    litellm_env()
    import litellm  # noqa: F401  (imported before profiling)

    with MockServer() as server:
        async with AmmBench(server.api_base) as bench:
            builders: dict[str, Any] = {"amm": lambda: AmmPath(bench),
                                        "amm_decorator": lambda: DecoratorPath(bench),
                                        "litellm": lambda: LitellmPath(server.api_base),
                                        "amm_stream": lambda: AmmStreamPath(bench),
                                        "amm_decorator_stream": lambda: DecoratorStreamPath(bench),
                                        "litellm_stream":
                                            lambda: LitellmStreamPath(server.api_base)}
            path = builders[path_name]()
            await path.setup()
            if steps:
                print("| step | p50 us | mean us |\n| --- | --- | --- |")
                for name, t in (await step_costs(bench)).items():
                    print(f"| {name} | {t['p50_us']:.0f} | {t['mean_us']:.0f} |")
                print()
            stats, wall = await profile_path(path, calls)
            print(report(stats, calls, wall, top))
            if cumulative:
                out = io.StringIO()
                stats.stream = out  # type: ignore[attr-defined]
                stats.sort_stats("cumulative").print_stats(cumulative, top)
                print(out.getvalue())
            if callers:
                out = io.StringIO()
                stats.stream = out  # type: ignore[attr-defined]
                stats.sort_stats("cumulative").print_callers(callers)
                print(out.getvalue())


def main() -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.hot_path",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--path", default="amm", choices=(
        "amm", "amm_decorator", "litellm", "amm_stream", "amm_decorator_stream", "litellm_stream"))
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--top", type=int, default=35)
    parser.add_argument("--cumulative", metavar="REGEX",
                        help="also list cumulative times of functions matching REGEX (e.g. amm/)")
    parser.add_argument("--callers", metavar="REGEX",
                        help="also list who calls functions matching REGEX")
    parser.add_argument("--steps", action="store_true",
                        help="first time each step of the request path on its own (no cProfile)")
    args = parser.parse_args()
    asyncio.run(_run(args.path, args.calls, args.top, args.cumulative, args.callers, args.steps))


if __name__ == "__main__":
    main()
