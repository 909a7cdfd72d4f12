"""``python -m benchmarks``: every performance budget of DESIGN.md, measured side by side.

Sections, in order: ``import`` (``import amm`` in fresh interpreters), ``ceiling``
(the mock's own limit), ``latency`` (sequential, every path interleaved),
``streaming`` (time to first and last chunk of streamed calls, sequential,
interleaved), ``throughput`` (concurrency 16 and 64, interleaved in this process),
``isolated`` (concurrency 64, each path alone in a process of its own: the throughput
figure that counts, see :mod:`benchmarks.solo`), ``micro`` (selection, cache hit, recorder),
``memory`` (RSS over many requests through amm at concurrency 64, the highest load,
then spans emitted versus received), ``redis`` (the managed call on a fleet's shared
Redis versus the in-process default, sequential, alternating; a real redis-server on
loopback, see :mod:`benchmarks.redis_path`). ``--only`` takes section and/or path names.

    python -m benchmarks                 # the full run (make bench), under 10 minutes
    python -m benchmarks --quick         # small counts (the smoke test)
    python -m benchmarks --only latency,amm,litellm
    python -m benchmarks --only streaming                 # the streamed paths only
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib.metadata
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path as FsPath
from typing import Any

from benchmarks import micro
from benchmarks.amm_env import (
    AmmBench,
    AmmPath,
    AmmStreamPath,
    DecoratorPath,
    DecoratorStreamPath,
)
from benchmarks.gc_pauses import GcPauses
from benchmarks.mock_server import MockServer, measure_ceiling
from benchmarks.paths import (
    LitellmPath,
    LitellmStreamPath,
    Path,
    RawHttpxPath,
    RouterPath,
    StreamPath,
    litellm_env,
)
from benchmarks.redis_path import bench_redis_state
from benchmarks.report import evaluate, to_markdown, write_results
from benchmarks.runner import PromptCounter, Series, measure, warm_up
from benchmarks.solo import SOLO_PATHS, run_isolated
from benchmarks.stats import summarise
from benchmarks.streaming import measure_streams, summarise_streams, warm_up_streams
from telemetry.gc_tuning import freeze_warm_heap

__all__ = ["FULL", "PATHS", "QUICK", "SECTIONS", "STREAM_PATHS", "Counts", "main", "run"]

SECTIONS = ("import", "ceiling", "latency", "streaming", "throughput", "isolated", "micro",
            "memory", "redis")
PATHS = ("raw_httpx", "litellm", "router", "amm", "amm_decorator")
STREAM_PATHS = ("litellm_stream", "amm_stream", "amm_decorator_stream")
RESULTS_DIR = FsPath(__file__).resolve().parent / "results"


@dataclass(frozen=True, slots=True)
class Counts:
    """How much of everything one run does."""

    warmup: int
    sequential: int  # calls per path at concurrency 1
    sequential_rounds: int
    concurrent: int  # calls per path at each concurrency > 1
    concurrent_rounds: int
    streamed: int  # streamed calls per path, sequential
    streamed_rounds: int
    ceiling: int
    memory: int  # requests through amm in the memory run
    select_50: int
    select_1000: int
    cache_hits: int
    recorder: int
    import_runs: int
    reservations: int = 20_000
    isolated: int = 2048  # calls per path and run in the isolated section
    # Five, not two: litellm alone moved 200-344 calls/s between runs on a quiet machine,
    # and a median of two runs per path put the ratio anywhere from 0.84 to 1.02.
    isolated_rounds: int = 5
    redis: int = 2000  # managed calls per path (state_url and in-process), alternating


FULL = Counts(warmup=100, sequential=2000, sequential_rounds=10, concurrent=1024,
              concurrent_rounds=2, streamed=1000, streamed_rounds=10, ceiling=2000, memory=20_000,
              select_50=2000, select_1000=200, cache_hits=3000, recorder=2000, import_runs=5)
QUICK = Counts(warmup=5, sequential=30, sequential_rounds=2, concurrent=64, concurrent_rounds=1,
               streamed=30, streamed_rounds=2,
               ceiling=128, memory=256, select_50=100, select_1000=10, cache_hits=100, recorder=100,
               import_runs=2, reservations=500, isolated=64,
               isolated_rounds=1, redis=60)


def _rss_mb() -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return round(int(line.split()[1]) / 1024.0, 1)
    return float("nan")


def _cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _machine() -> dict[str, Any]:
    model = ""
    try:
        with open("/proc/cpuinfo") as info:
            model = next((ln.split(":", 1)[1].strip() for ln in info
                          if ln.startswith("model name")), "")
    except OSError:
        pass
    return {"cores": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(terse=True),
            "litellm": importlib.metadata.version("litellm"),
            "httpx": importlib.metadata.version("httpx"),
            "opentelemetry_sdk": importlib.metadata.version("opentelemetry-sdk")}


def _log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


async def _ceiling(server: MockServer, counts: Counts) -> dict[str, Any]:
    assert server.pid is not None
    cpu0, wall0 = _cpu_seconds(server.pid), time.perf_counter()
    rps = await measure_ceiling(server.url, concurrency=64, requests=counts.ceiling)
    share = (_cpu_seconds(server.pid) - cpu0) / (time.perf_counter() - wall0)
    return {"ceiling_rps": round(rps, 1), "concurrency": 64, "requests": counts.ceiling,
            "server_cpu_share": round(share, 3)}


def _store(results: dict[str, Any], level: str, measured: dict[str, Series],
           concurrency: int) -> None:
    for name, series in measured.items():
        summary = series.summary(concurrency).as_dict()
        if series.first_error:
            summary["first_error"] = series.first_error
        results["paths"].setdefault(name, {})[level] = summary


async def _memory_run(bench: AmmBench, counter: PromptCounter, counts: Counts) -> dict[str, Any]:
    """RSS at 0, half and all of ``counts.memory`` requests through amm at concurrency 64."""
    path = AmmPath(bench)
    await path.setup()
    half = counts.memory // 2
    gc.collect()
    start = _rss_mb()
    first = await measure([path], counter, calls_per_path=half, concurrency=64, rounds=1)
    gc.collect()
    mid = _rss_mb()
    second = await measure([path], counter, calls_per_path=counts.memory - half, concurrency=64,
                           rounds=1)
    gc.collect()
    end = _rss_mb()
    series = first["amm"]
    series.latencies_s += second["amm"].latencies_s
    series.wall_s += second["amm"].wall_s
    series.errors += second["amm"].errors
    return {"requests": counts.memory, "concurrency": 64, "rss_mb_start": start, "rss_mb_mid": mid,
            "rss_mb_end": end, "errors": series.errors, "first_error": series.first_error,
            "calls_per_s": round(series.summary(64).calls_per_s, 1)}


def _durable_summary(samples_s: Sequence[float]) -> dict[str, Any]:
    """The durable ledger's share of each managed call of the latency section: how long
    ``await cost_tracker.durable()`` took (the commit of the call's ledger row)."""
    summary = summarise(samples_s, concurrency=1, wall_s=0.0).as_dict()
    return {k: summary[k] for k in ("calls", "p50_ms", "p95_ms", "p99_ms", "p999_ms", "mean_ms")}


def _paths(names: Sequence[str], server: MockServer, bench: AmmBench) -> list[Path]:
    build: dict[str, Callable[[], Path]] = {
        "raw_httpx": lambda: RawHttpxPath(server.url),
        "litellm": lambda: LitellmPath(server.api_base),
        "router": lambda: RouterPath(server.api_base), "amm": lambda: AmmPath(bench),
        "amm_decorator": lambda: DecoratorPath(bench)}
    return [build[n]() for n in PATHS if n in names]


def _stream_paths(names: Sequence[str], server: MockServer, bench: AmmBench) -> list[StreamPath]:
    build: dict[str, Callable[[], StreamPath]] = {
        "litellm_stream": lambda: LitellmStreamPath(server.api_base),
        "amm_stream": lambda: AmmStreamPath(bench),
        "amm_decorator_stream": lambda: DecoratorStreamPath(bench)}
    return [build[n]() for n in STREAM_PATHS if n in names]


async def _streaming(paths: Sequence[StreamPath], counter: PromptCounter,
                     counts: Counts) -> dict[str, Any]:
    for p in paths:
        await p.setup()
    try:
        _log(f"streaming warm-up of {', '.join(p.name for p in paths)}")
        await warm_up_streams(paths, counter, calls=counts.warmup)
        _log("streaming: time to first and last chunk (concurrency 1), interleaved")
        return summarise_streams(await measure_streams(
            paths, counter, calls_per_path=counts.streamed, rounds=counts.streamed_rounds))
    finally:
        for p in paths:
            await p.close()


async def run(counts: Counts, *, sections: Sequence[str] = SECTIONS, paths: Sequence[str] = PATHS,
              stream_paths: Sequence[str] = STREAM_PATHS, protocol: str = "http/protobuf",
              mode: str = "full", gc_freeze: bool = True) -> dict[str, Any]:
    """Run the chosen sections over the chosen paths; return the results (budgets included).

    ``gc_freeze``: freeze the warmed-up heap (:func:`telemetry.gc_tuning.freeze_warm_heap`)
    after the warm-up, as an amm application does; in the isolated section only the
    amm processes do (a default litellm client does not).
    """
    litellm_env()
    began = time.perf_counter()
    results: dict[str, Any] = {"mode": mode, "machine": _machine(), "counts": asdict(counts),
                               "sections": list(sections), "paths": {},
                               "gc": {"freeze_after_warm_up": gc_freeze}}
    if "import" in sections:
        _log("import amm in fresh interpreters")
        results["import_amm"] = micro.bench_import_amm(runs=counts.import_runs)
    with MockServer() as server:
        if "ceiling" in sections:
            _log("mock server ceiling")
            results["mock_server"] = await _ceiling(server, counts)
        t = time.perf_counter()
        import litellm  # noqa: F401  (timed once, so no path pays it inside a measurement)

        results["import_litellm_s"] = round(time.perf_counter() - t, 2)
        async with AmmBench(server.api_base, protocol=protocol) as bench:
            chosen = _paths(paths, server, bench)
            counter = PromptCounter()
            for p in chosen:
                await p.setup()
            try:
                if chosen and ({"latency", "throughput"} & set(sections)):
                    _log(f"warm-up of {', '.join(p.name for p in chosen)}")
                    await warm_up(chosen, counter, calls=counts.warmup)
                if gc_freeze:
                    results["gc"]["frozen_objects"] = freeze_warm_heap()
                if chosen and "latency" in sections:
                    _log("sequential latency (concurrency 1), interleaved")
                    assert bench.durable is not None
                    bench.durable.start()
                    pauses = GcPauses()
                    pauses.start()
                    measured = await measure(chosen, counter, calls_per_path=counts.sequential,
                                             concurrency=1, rounds=counts.sequential_rounds)
                    _store(results, "c1", measured, 1)
                    results["gc"]["latency_section_pauses"] = pauses.stop()
                    results["durable_ledger"] = _durable_summary(bench.durable.stop())
                if "streaming" in sections and stream_paths:
                    results["streaming"] = await _streaming(
                        _stream_paths(stream_paths, server, bench), counter, counts)
                if chosen and "throughput" in sections:
                    for level in (16, 64):
                        _log(f"throughput at concurrency {level}, interleaved")
                        _store(results, f"c{level}", await measure(
                            chosen, counter, calls_per_path=counts.concurrent, concurrency=level,
                            rounds=counts.concurrent_rounds), level)
            finally:
                for p in chosen:
                    await p.close()
            if "isolated" in sections:
                solo = [n for n in SOLO_PATHS if n in paths]
                _log(f"throughput at concurrency 64, each of {', '.join(solo)} in its own process, "
                     f"{counts.isolated_rounds} round(s)")
                results["isolated"] = run_isolated(
                    solo, server.api_base, concurrency=64, calls=counts.isolated,
                    warmup=counts.warmup, rounds=counts.isolated_rounds, gc_freeze=gc_freeze)
            if "micro" in sections:
                _log("micro: select_model, cache hit, recorder")
                results["micro"] = await micro.bench_select_model(
                    bench, (50, 1000), iterations={50: counts.select_50, 1000: counts.select_1000})
                results["micro"]["cache_hit"] = await micro.bench_cache_hit(
                    bench, iterations=counts.cache_hits)
                results["micro"]["recorder"] = await micro.bench_recorder(
                    bench, iterations=counts.recorder)
                results["micro"]["reservation"] = micro.bench_reservation(
                    bench, iterations=counts.reservations)
            if "memory" in sections:
                _log(f"memory: {counts.memory} requests through amm at concurrency 64")
                results["memory"] = await _memory_run(bench, counter, counts)
            _log("flushing telemetry, counting spans received")
            results["spans"] = {**bench.span_totals(), "protocol": protocol}
            _log("stopping amm")
        if "redis" in sections:
            _log("redis: the managed call with state_url vs in-process (concurrency 1), "
                 "alternating call by call")
            results["redis_state"] = await bench_redis_state(
                server.api_base, calls=counts.redis, warmup=counts.warmup)
        _log("stopping the mock server")
    _log("done")
    results["duration_s"] = round(time.perf_counter() - began, 1)
    results["budgets"] = evaluate(results)
    return results


def _split(values: Sequence[str]) -> list[str]:
    return [v.strip() for item in values for v in item.split(",") if v.strip()]


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point; returns the exit status."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small counts (smoke test)")
    parser.add_argument("--only", action="append", default=[], metavar="NAME",
                        help=f"sections {', '.join(SECTIONS)} and/or paths "
                             f"{', '.join(PATHS + STREAM_PATHS)}; "
                             "repeat or comma-separate")
    parser.add_argument("--protocol", default="http/protobuf", choices=("http/protobuf", "grpc"),
                        help="OTLP protocol of the exporter (default: http/protobuf)")
    parser.add_argument("--out", type=FsPath, default=RESULTS_DIR, help="results directory")
    parser.add_argument("--no-gc-freeze", dest="gc_freeze", action="store_false",
                        help="leave the heap unfrozen after warm-up "
                             "(to measure gc.freeze's effect)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a budget fails")
    args = parser.parse_args(argv)
    names = _split(args.only)
    known = SECTIONS + PATHS + STREAM_PATHS
    unknown = [n for n in names if n not in known]
    if unknown:
        parser.error(f"unknown --only name(s): {', '.join(unknown)}; "
                     f"choose from {', '.join(known)}")
    sections = [s for s in SECTIONS if s in names] or list(SECTIONS)
    paths = [p for p in PATHS if p in names] or list(PATHS)
    stream_paths = [p for p in STREAM_PATHS if p in names] or list(STREAM_PATHS)
    counts = QUICK if args.quick else FULL
    results = asyncio.run(run(counts, sections=sections, paths=paths, stream_paths=stream_paths,
                              protocol=args.protocol, mode="quick" if args.quick else "full",
                              gc_freeze=args.gc_freeze))
    json_path, md_path = write_results(results, args.out)
    print(to_markdown(results))
    print(f"results: {json_path} and {md_path}")
    failed = [b["figure"] for b in results["budgets"]
              if b["verdict"] == "FAIL" and not b["stretch"]]
    return 1 if args.strict and failed else 0
