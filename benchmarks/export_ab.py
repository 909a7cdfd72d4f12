"""Span export in a child process or in-process: amm alone at concurrency 64, side by side.

Each run is one fresh process (:mod:`benchmarks.solo`), in rotated rounds: litellm,
amm with ``AMM_EXPORT_PROCESS=1`` (OTLP encoded by the exporter process) and amm with
``AMM_EXPORT_PROCESS=0`` (the SDK's batch processor in amm's process), all on one mock.
Prints one line per run and, at the end, per variant the median calls/s and p99, the
CPU per call of amm's process plus its exporter process, the spans lost and the GC
pauses per generation of each run.

    python -m benchmarks.export_ab --rounds 5 --calls 2048
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path as FsPath
from typing import Any

from benchmarks.mock_server import MockServer

__all__ = ["VARIANTS", "main", "run"]

_REPO_ROOT = FsPath(__file__).resolve().parent.parent
VARIANTS: tuple[tuple[str, str, dict[str, str]], ...] = (
    ("litellm", "litellm", {}),
    ("amm_export_process", "amm", {"AMM_EXPORT_PROCESS": "1"}),
    ("amm_in_process", "amm", {"AMM_EXPORT_PROCESS": "0"}),
)


def _one(path: str, extra: dict[str, str], api_base: str, calls: int, concurrency: int
         ) -> dict[str, Any]:
    env = {**os.environ, **extra, "PYTHONPATH": os.pathsep.join(
        p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.solo", "--path", path, "--api-base", api_base,
         "--concurrency", str(concurrency), "--calls", str(calls), "--warmup", "100",
         *(["--gc-freeze"] if path.startswith("amm") else [])],
        cwd=_REPO_ROOT, env=env, capture_output=True, text=True, timeout=900)
    if done.returncode != 0:
        raise RuntimeError(f"solo run of {path} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def run(rounds: int, calls: int, concurrency: int = 64) -> dict[str, list[dict[str, Any]]]:
    """Every variant once per round, the order rotated each round; every run's figures."""
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name, _, _ in VARIANTS}
    with MockServer() as server:
        for r in range(rounds):
            shift = r % len(VARIANTS)
            for name, path, extra in (*VARIANTS[shift:], *VARIANTS[:shift]):
                result = _one(path, extra, server.api_base, calls, concurrency)
                result["load_average"] = round(os.getloadavg()[0], 1)
                runs[name].append(result)
                spans = result.get("spans") or {}
                print(f"[{time.strftime('%H:%M:%S')}] round {r} {name:19s} "
                      f"{result['calls_per_s']:7.1f} calls/s  p50 {result['p50_ms']:7.1f}  "
                      f"p99 {result['p99_ms']:7.1f} ms  cpu/call {result['cpu_ms_per_call']:.2f} "
                      f"+ {result.get('export_process_cpu_ms_per_call') or 0:.2f} ms  "
                      f"spans {spans.get('emitted', '-')}/{spans.get('received', '-')} "
                      f"dropped {spans.get('dropped_by_processor', '-')}  "
                      f"load {result['load_average']}", file=sys.stderr, flush=True)
    return runs


def summary(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per variant: medians and ranges of calls/s, p99 and CPU per call; spans lost."""
    out: dict[str, dict[str, Any]] = {}
    for name, measured in runs.items():
        rates = [m["calls_per_s"] for m in measured]
        p99 = [m["p99_ms"] for m in measured]
        cpu = [m["cpu_ms_per_call"] + (m.get("export_process_cpu_ms_per_call") or 0.0)
               for m in measured]
        spans = [m.get("spans") or {} for m in measured]
        out[name] = {
            "calls_per_s_median": round(statistics.median(rates), 1),
            "calls_per_s_runs": rates,
            "p99_ms_median": round(statistics.median(p99), 1), "p99_ms_runs": p99,
            "cpu_ms_per_call_median": round(statistics.median(cpu), 2),
            "spans_lost": sum(s.get("emitted", 0) - s.get("received", 0) for s in spans),
            "spans_dropped": sum(s.get("dropped_by_processor", 0) for s in spans),
            "gc_runs": [m.get("gc") for m in measured],
        }
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point: run the rounds, print the summary as JSON."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.export_ab",
                                     description=__doc__.split("\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calls", type=int, default=2048)
    parser.add_argument("--concurrency", type=int, default=64)
    args = parser.parse_args(argv)
    print(json.dumps(summary(run(args.rounds, args.calls, args.concurrency)), indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
