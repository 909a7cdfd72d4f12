"""Budgets (DESIGN.md "Performance budgets") checked against one run's figures; JSON and Markdown.

Every budget is a :class:`Budget` row: the figure's name, how it is computed from
the run's results, its limit and which way is good. A figure that was not
measured (``--only``) is reported as SKIP, never as a pass.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path as FsPath
from typing import Any

__all__ = ["BUDGETS", "Budget", "evaluate", "figures", "to_markdown", "write_results"]

Results = Mapping[str, Any]


def _get(results: Results, *keys: str) -> float | None:
    node: Any = results
    for key in keys:
        if not isinstance(node, Mapping) or key not in node:
            return None
        node = node[key]
    return float(node) if isinstance(node, int | float) and not isinstance(node, bool) else None


def _diff(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else a - b


def _ratio(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None or b == 0 else a / b


def _added(results: Results, path: str, base: str, stat: str, level: str = "c1") -> float | None:
    return _diff(_get(results, "paths", path, level, stat),
                 _get(results, "paths", base, level, stat))


@dataclass(frozen=True, slots=True)
class Budget:
    """One budget: ``measure(results)`` compared with ``limit`` (``at_most`` or at least)."""

    figure: str
    description: str
    unit: str
    limit: float
    measure: Callable[[Results], float | None]
    at_most: bool = True
    stretch: bool = False

    def check(self, results: Results) -> dict[str, Any]:
        """The row of the report: measured value, limit and PASS / FAIL / SKIP."""
        value = self.measure(results)
        if value is None or math.isnan(value):
            verdict = "SKIP"
        else:
            ok = value <= self.limit if self.at_most else value >= self.limit
            verdict = "PASS" if ok else "FAIL"
        return {"figure": self.figure, "description": self.description, "unit": self.unit,
                "measured": None if value is None else round(value, 4),
                "budget": ("<= " if self.at_most else ">= ") + f"{self.limit:g}",
                "verdict": verdict, "stretch": self.stretch}


def _spans_lost(results: Results) -> float | None:
    emitted = _get(results, "spans", "emitted")
    received = _get(results, "spans", "received")
    dropped = _get(results, "spans", "dropped_by_processor")
    if emitted is None or received is None or dropped is None:
        return None
    return (emitted - received) + dropped


def _stream_added(path: str, chunk: str, stat: str) -> Callable[[Results], float | None]:
    """``path``'s streamed figure minus ``litellm.acompletion(stream=True)``'s, in ms."""
    def added(results: Results) -> float | None:
        return _diff(_get(results, "streaming", path, chunk, stat),
                     _get(results, "streaming", "litellm_stream", chunk, stat))
    return added


def _router_share(path: str) -> Callable[[Results], float | None]:
    def share(results: Results) -> float | None:
        return _ratio(_added(results, path, "litellm", "p50_ms"),
                      _added(results, "router", "litellm", "p50_ms"))
    return share


BUDGETS: tuple[Budget, ...] = (
    Budget("amm_added_p50_ms", "managed call minus litellm.acompletion, p50 (sequential)", "ms",
           1.0, lambda r: _added(r, "amm", "litellm", "p50_ms")),
    Budget("amm_added_p99_ms", "managed call minus litellm.acompletion, p99 (sequential)", "ms",
           3.0, lambda r: _added(r, "amm", "litellm", "p99_ms")),
    Budget("amm_added_vs_router_added", "amm's added p50 / the Router's added p50", "ratio", 0.25,
           _router_share("amm")),
    Budget("decorator_added_p50_ms", "@managed_model call minus litellm.acompletion, p50", "ms",
           1.0, lambda r: _added(r, "amm_decorator", "litellm", "p50_ms")),
    Budget("decorator_added_p99_ms", "@managed_model call minus litellm.acompletion, p99 "
           "(issue 17: within 4 ms)", "ms", 4.0,
           lambda r: _added(r, "amm_decorator", "litellm", "p99_ms")),
    Budget("amm_vs_litellm_p50_ratio", "stretch: managed call p50 / litellm.acompletion p50",
           "ratio", 1.0, lambda r: _ratio(_get(r, "paths", "amm", "c1", "p50_ms"),
                                 _get(r, "paths", "litellm", "c1", "p50_ms")), stretch=True),
    Budget("stream_first_chunk_added_p50_ms", "streamed call, time to first chunk: amm's "
           "manager.stream minus litellm.acompletion(stream=True), p50", "ms", 1.0,
           _stream_added("amm_stream", "first_chunk", "p50_ms")),
    Budget("amm_throughput_c64_ratio", "amm calls/s / litellm calls/s at concurrency 64, each "
           "path alone in its own process (median of the runs)", "ratio",
           0.85, lambda r: _ratio(_get(r, "isolated", "amm", "calls_per_s"),
                                  _get(r, "isolated", "litellm", "calls_per_s")), at_most=False),
    Budget("decorator_throughput_c64_ratio", "@managed_model calls/s / litellm calls/s at "
           "concurrency 64, each path alone in its own process", "ratio",
           0.85, lambda r: _ratio(_get(r, "isolated", "amm_decorator", "calls_per_s"),
                                  _get(r, "isolated", "litellm", "calls_per_s")), at_most=False),
    Budget("select_model_50_p50_us", "ModelSelector.select_model over 50 models, p50", "us", 150.0,
           lambda r: _get(r, "micro", "select_model_50", "p50_us")),
    Budget("select_model_1000_p50_us", "ModelSelector.select_model over 1,000 models, p50", "us",
           4000.0, lambda r: _get(r, "micro", "select_model_1000", "p50_us")),
    Budget("select_model_50_softmax_p50_us",
           "select_model over 50 models with the exploring (softmax) policy, p50", "us", 150.0,
           lambda r: _get(r, "micro", "select_model_50_softmax", "p50_us")),
    Budget("select_model_50_softmax_traffic_p50_us",
           "select_model over 50 models with the exploring (softmax) policy after traffic "
           "(every model with measured statistics and a rate-limit window), p50", "us", 150.0,
           lambda r: _get(r, "micro", "select_model_50_softmax_traffic", "p50_us")),
    Budget("cache_hit_p50_us", "cache hit through llm.complete, p50", "us", 300.0,
           lambda r: _get(r, "micro", "cache_hit", "p50_us")),
    Budget("cache_hit_provider_calls", "provider calls made by cache hits", "calls", 0.0,
           lambda r: _get(r, "micro", "cache_hit", "provider_calls_during_hits")),
    Budget("durable_ledger_added_p50_ms", "durable ledger: await cost_tracker.durable() per "
           "managed call (its ledger row committed before the response returns), p50", "ms", 0.2,
           lambda r: _get(r, "durable_ledger", "p50_ms")),
    Budget("spans_lost", "spans emitted minus received by OTLP, plus queue drops (after flush)",
           "spans", 0.0, _spans_lost),
    Budget("rss_growth_second_half_mb", "RSS growth over the second half of the memory run "
           "(10k to 20k requests through amm)", "MB",
           10.0, lambda r: _diff(_get(r, "memory", "rss_mb_end"), _get(r, "memory", "rss_mb_mid"))),
    Budget("redis_state_added_p50_ms", "managed call with state_url (a redis-server on "
           "loopback) minus the same call on the in-process default, p50 (sequential, "
           "alternating call by call, same run)", "ms", 0.5,
           lambda r: _get(r, "redis_state", "added_p50_ms")),
    Budget("import_amm_ms", "import amm in a fresh interpreter, median of 5", "ms", 300.0,
           lambda r: _get(r, "import_amm", "median_ms")),
)


def evaluate(results: Results) -> list[dict[str, Any]]:
    """Every budget's row for ``results``."""
    return [b.check(results) for b in BUDGETS]


def figures(results: Results) -> dict[str, Any]:
    """Headline figures that have no budget (context for the budgets)."""
    paths = results.get("paths", {})
    out: dict[str, Any] = {}
    for name, levels in paths.items():
        for level, s in levels.items():
            out[f"{name}.{level}"] = (f"p50 {s['p50_ms']:.2f} / p95 {s['p95_ms']:.2f} / "
                                      f"p99 {s['p99_ms']:.2f} ms, {s['calls_per_s']:.0f} calls/s"
                                      + (f", {s['errors']} errors" if s.get("errors") else ""))
    return out


def to_markdown(results: Results) -> str:
    """The short report: machine, budgets with verdicts, per-path latencies, micro figures."""
    m = results.get("machine", {})
    lines = [
        "# amm benchmark",
        "",
        f"Machine: {m.get('cores')} cores, Python {m.get('python')}, litellm {m.get('litellm')}, "
        f"{m.get('platform')}. Mode: {results.get('mode')}; "
        f"took {results.get('duration_s', 0):.0f} s.",
        "",
        "| figure | measured | budget | verdict |",
        "| --- | --- | --- | --- |",
    ]
    for row in results.get("budgets", []):
        value = "-" if row["measured"] is None else f"{row['measured']:g} {row['unit']}"
        name = row["description"] + (" (stretch)" if row["stretch"] and "stretch" not in
                                     row["description"] else "")
        lines.append(f"| {name} | {value} | {row['budget']} {row['unit']} | {row['verdict']} |")
    if results.get("paths"):
        lines += ["", "| path | concurrency | p50 ms | p95 ms | p99 ms | p99.9 ms | calls/s "
                  "| CPU ms/call | errors |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for name, levels in results["paths"].items():
            for s in levels.values():
                lines.append(f"| {name} | {s['concurrency']} | {s['p50_ms']:.2f} | "
                             f"{s['p95_ms']:.2f} | "
                             f"{s['p99_ms']:.2f} | {s.get('p999_ms', float('nan')):.2f} | "
                             f"{s['calls_per_s']:.0f} | "
                             f"{s.get('cpu_ms_per_call', float('nan')):.2f} | {s['errors']} |")
    lines += _streaming_lines(results)
    lines += _redis_lines(results)
    extra = []
    ceiling = results.get("mock_server")
    if ceiling:
        extra.append(f"- mock server ceiling (raw httpx, concurrency 64): "
                     f"{ceiling['ceiling_rps']:.0f} req/s, server process at "
                     f"{ceiling['server_cpu_share'] * 100:.0f}% of one core")
    micro = results.get("micro", {})
    for key in ("select_model_50_no_events", "select_model_1000_no_events"):
        if key in micro:
            extra.append(f"- {key}: p50 {micro[key]['p50_us']:.0f} us, "
                         f"p99 {micro[key]['p99_us']:.0f} us")
    for key in ("recorder_full", "recorder_spans_metrics_only"):
        if key in micro.get("recorder", {}):
            r = micro["recorder"][key]
            events = micro["recorder"]["events_per_request"]
            extra.append(f"- {key} (one request's {events} events): p50 {r['p50_us']:.0f} us, "
                         f"mean {r['mean_us']:.0f} us, p99 {r['p99_us']:.0f} us")
    isolated = results.get("isolated")
    if isolated:
        runs = {name: ", ".join(f"{v:.0f}" for v in entry["calls_per_s_runs"])
                for name, entry in isolated.items()}
        extra.append("- concurrency 64, each path alone in its own process (calls/s of each run): "
                     + "; ".join(f"{name} {calls}" for name, calls in runs.items()))
    inline = _ratio(_get(results, "paths", "amm", "c64", "calls_per_s"),
                    _get(results, "paths", "litellm", "c64", "calls_per_s"))
    if inline is not None:
        extra.append(f"- amm / litellm calls/s at concurrency 64 interleaved in one process "
                     f"(shares process state; not the budgeted figure): {inline:.2f}")
    gc_info = results.get("gc") or {}
    for generation, g in (gc_info.get("latency_section_pauses") or {}).items():
        extra.append(f"- GC {generation} pauses in the latency section (the runner's gc.collect() "
                     f"before each chunk included): {g['count']}, p50 {g['p50_ms']:.2f} ms, "
                     f"max {g['max_ms']:.2f} ms (heap frozen after warm-up: "
                     f"{gc_info.get('freeze_after_warm_up')})")
    durable = results.get("durable_ledger")
    if durable and durable.get("calls"):
        extra.append("- durable ledger, await cost_tracker.durable() in each of "
                     f"{durable['calls']} managed calls: p50 {durable['p50_ms']:.3f} / "
                     f"p95 {durable['p95_ms']:.3f} / p99 {durable['p99_ms']:.3f} ms")
    reservation = micro.get("reservation")
    if reservation:
        extra.append(f"- budget reservation (CostTracker.reserve + settle) per call: "
                     f"p50 {reservation['p50_us']:.1f} us, mean {reservation['mean_us']:.1f} us, "
                     f"p99 {reservation['p99_us']:.1f} us")
    memory = results.get("memory")
    if memory:
        n = memory.get("requests", 0)
        extra.append(f"- RSS through amm: {memory.get('rss_mb_start')} MB at 0, "
                     f"{memory.get('rss_mb_mid')} MB at {n // 2}, "
                     f"{memory.get('rss_mb_end')} MB at {n} requests "
                     f"(concurrency {memory.get('concurrency')}, "
                     f"{memory.get('calls_per_s')} calls/s, {memory.get('errors', 0)} errors)")
    spans = results.get("spans")
    if spans:
        extra.append(f"- spans: {spans['emitted']} emitted, {spans['received']} received over "
                     f"OTLP ({spans.get('protocol')}), "
                     f"{spans['dropped_by_processor']} dropped by the queue")
    if extra:
        lines += ["", *extra]
    return "\n".join(lines) + "\n"


def _redis_lines(results: Results) -> list[str]:
    redis = results.get("redis_state")
    if not redis:
        return []
    if "skipped" in redis:
        return ["", f"Redis state backend: not measured ({redis['skipped']})."]
    lines = ["", "Fleet state on Redis (sequential, alternating; see benchmarks/redis_path.py):",
             "",
             "| path | p50 ms | p95 ms | p99 ms | CPU ms/call | errors |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name in ("in_process", "redis"):
        s = redis[name]
        lines.append(f"| {name} | {s['p50_ms']:.2f} | {s['p95_ms']:.2f} | {s['p99_ms']:.2f} | "
                     f"{s.get('cpu_ms_per_call', float('nan')):.2f} | {s['errors']} |")
    rtt = redis.get("round_trips", {})
    lines += ["", f"- added by state_url: p50 {redis['added_p50_ms']:+.3f} ms, p99 "
              f"{redis['added_p99_ms']:+.3f} ms; "
              f"fallbacks during the run: {redis.get('fallbacks')}"]
    if rtt:
        lines.append("- the backend alone (p50 / p99 us from here; mean us inside Redis): "
                     + "; ".join(f"{name} {v['p50_us']:.0f} / {v['p99_us']:.0f}; "
                                 f"{v.get('server_us', float('nan')):.0f}"
                                 for name, v in rtt.items()))
    return lines


def _streaming_lines(results: Results) -> list[str]:
    streaming = results.get("streaming")
    if not streaming:
        return []
    lines = ["", "Streamed calls (sequential; first chunk = the first chunk carrying text):", "",
             "| path | first chunk p50 / p95 / p99 ms | last chunk p50 / p95 / p99 ms | "
             "CPU ms/call | errors |", "| --- | --- | --- | --- | --- |"]
    for name, entry in streaming.items():
        first, last = entry["first_chunk"], entry["last_chunk"]
        lines.append(f"| {name} | {first['p50_ms']:.2f} / {first['p95_ms']:.2f} / "
                     f"{first['p99_ms']:.2f} | {last['p50_ms']:.2f} / {last['p95_ms']:.2f} / "
                     f"{last['p99_ms']:.2f} | {first.get('cpu_ms_per_call', float('nan')):.2f} | "
                     f"{first['errors']} |")
    added = []
    for name in streaming:
        if name == "litellm_stream":
            continue
        figures = [(chunk, stat, _stream_added(name, chunk, stat)(results))
                   for chunk in ("first_chunk", "last_chunk") for stat in ("p50_ms", "p99_ms")]
        if all(v is not None for _, _, v in figures):
            added.append(f"- {name} minus litellm_stream: " + ", ".join(
                f"{chunk.replace('_', ' ')} {stat[:3]} {v:+.2f} ms" for chunk, stat, v in figures))
    return lines + (["", *added] if added else [])


def write_results(results: Results, directory: FsPath) -> tuple[FsPath, FsPath]:
    """Write ``latest.json`` and ``latest.md`` into ``directory``; return their paths."""
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "latest.json"
    md_path = directory / "latest.md"
    json_path.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
    md_path.write_text(to_markdown(results))
    return json_path, md_path
