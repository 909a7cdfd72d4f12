"""One path alone in its own process: throughput at a given concurrency, nothing else running.

The interleaved sections (:mod:`benchmarks.runner`) run every path in one process, so
a path also pays for the others' process state: amm's background threads (span
export, the store writer) and its heap (every cyclic GC pass walks amm's objects
too) slow down litellm's chunks as well as amm's. A client in production runs
alone, so the figure that counts for throughput is one process per path:

    python -m benchmarks.solo --path litellm --api-base http://127.0.0.1:PORT/v1 --concurrency 64

prints one JSON line (calls, wall_s, calls_per_s, cpu_ms_per_call, latency percentiles;
for amm paths also the spans emitted, received and dropped after a flush, and the p50 and
p99 of the durable ledger's wait in each call).
:func:`run_isolated` runs each path so, one after the other, in rotated rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

__all__ = ["SOLO_PATHS", "main", "run_isolated", "run_solo"]

SOLO_PATHS = ("litellm", "router", "amm", "amm_decorator")
_REPO_ROOT = FsPath(__file__).resolve().parent.parent


async def run_solo(path_name: str, api_base: str, *, concurrency: int, calls: int,
                   warmup: int, gc_freeze: bool = False) -> dict[str, Any]:
    """Warm up, then measure ``calls`` calls of ``path_name`` at ``concurrency`` (this process)."""
    from benchmarks.gc_pauses import GcPauses
    from benchmarks.paths import LitellmPath, Path, RouterPath, litellm_env
    from benchmarks.runner import PromptCounter, measure, warm_up

    litellm_env()
    import litellm  # noqa: F401  (imported before the clock starts)

    counter = PromptCounter()
    bench: Any = None
    path: Path
    if path_name in ("amm", "amm_decorator"):
        from benchmarks.amm_env import AmmBench, AmmPath, DecoratorPath

        bench = AmmBench(api_base)
        await bench.__aenter__()
        path = AmmPath(bench) if path_name == "amm" else DecoratorPath(bench)
    elif path_name == "litellm":
        path = LitellmPath(api_base)
    elif path_name == "router":
        path = RouterPath(api_base)
    else:
        raise ValueError(f"unknown path {path_name!r}; choose from {', '.join(SOLO_PATHS)}")
    try:
        await path.setup()
        await warm_up([path], counter, calls=warmup, concurrency=concurrency)
        if gc_freeze:
            from telemetry.gc_tuning import freeze_warm_heap

            freeze_warm_heap()
        helpers = _helper_pids(bench)
        helper_cpu = {pid: _cpu_s(pid) for pid in helpers}
        pauses = GcPauses()
        pauses.start()
        if bench is not None:
            bench.durable.start()
        series = (await measure([path], counter, calls_per_path=calls, concurrency=concurrency,
                                rounds=1))[path.name]
        out = {"path": path_name, **series.summary(concurrency).as_dict(), "gc": pauses.stop()}
        if bench is not None:  # the durable ledger's share of each call (commit of its row)
            waits = sorted(s * 1000.0 for s in bench.durable.stop())
            out["durable_ms"] = {q: round(waits[min(len(waits) - 1, int(len(waits) * f))], 3)
                                 for q, f in (("p50", 0.5), ("p99", 0.99))} if waits else None
        if series.first_error:
            out["first_error"] = series.first_error
        if bench is not None:
            # CPU of amm's exporter process during the measurement (it runs on the same
            # cores, so it is part of what a call costs the machine).
            spent = sum(_cpu_s(pid) - cpu for pid, cpu in helper_cpu.items())
            out["export_process_cpu_ms_per_call"] = (
                round(spent * 1000.0 / max(1, len(series.latencies_s)), 3) if helpers else None)
            out["spans"] = bench.span_totals()
        return out
    finally:
        await path.close()
        if bench is not None:
            await bench.__aexit__(None, None, None)


def _helper_pids(bench: Any) -> list[int]:
    """The exporter processes of amm's telemetry (none when export runs in-process)."""
    tel = bench.manager.telemetry if bench is not None else None
    pids = [getattr(p, "pid", None) for p in (tel.processors if tel is not None else ())]
    return [pid for pid in pids if pid is not None]


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc; 0.0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_isolated(paths: Sequence[str], api_base: str, *, concurrency: int, calls: int,
                 warmup: int, rounds: int, gc_freeze: bool = False,
                 timeout_s: float = 600.0) -> dict[str, Any]:
    """Each path in a fresh process of its own, one at a time, ``rounds`` times (the order
    rotated each round); per path, every run's figures and the median calls/s.
    ``gc_freeze``: the amm processes freeze their heap after warm-up (litellm's do not)."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    runs: dict[str, list[dict[str, Any]]] = {p: [] for p in paths}
    order = list(paths)
    for r in range(rounds):
        shift = r % len(order)
        for name in (*order[shift:], *order[:shift]):
            done = subprocess.run(
                [sys.executable, "-m", "benchmarks.solo", "--path", name, "--api-base", api_base,
                 "--concurrency", str(concurrency), "--calls", str(calls), "--warmup", str(warmup),
                 *(["--gc-freeze"] if gc_freeze and name.startswith("amm") else [])],
                cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=timeout_s)
            if done.returncode != 0:
                raise RuntimeError(f"solo run of {name} failed: {done.stderr[-2000:]}")
            runs[name].append(json.loads(done.stdout.strip().splitlines()[-1]))
    out: dict[str, Any] = {}
    for name, measured in runs.items():
        rates = [m["calls_per_s"] for m in measured]
        out[name] = {"concurrency": concurrency, "calls": calls,
                     "calls_per_s": round(statistics.median(rates), 1),
                     "calls_per_s_runs": [m["calls_per_s"] for m in measured],
                     "errors": sum(m["errors"] for m in measured), "runs": measured}
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: measure one path, print its figures as one JSON line."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.solo",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--path", required=True, choices=SOLO_PATHS)
    parser.add_argument("--api-base", required=True, help="the mock's OpenAI base URL")
    parser.add_argument("--concurrency", type=int, default=64)
    parser.add_argument("--calls", type=int, default=2048)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--gc-freeze", action="store_true", help="freeze the heap after warm-up")
    args = parser.parse_args(argv)
    began = time.perf_counter()
    result = asyncio.run(run_solo(args.path, args.api_base, concurrency=args.concurrency,
                                  calls=args.calls, warmup=args.warmup, gc_freeze=args.gc_freeze))
    result["process_s"] = round(time.perf_counter() - began, 1)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
