"""Fleet analytics at scale: the report's A/B and per-model sections on 10 million chat spans.

    python -m benchmarks.clickhouse_scale                 # 10M chat spans in chdb, 1M in SQLite
    python -m benchmarks.clickhouse_scale --chat-spans 1000000 --sqlite-chat-spans 100000

Run by hand (minutes, several GB of disk), not by ``make test``. The spans are made in
SQL (``INSERT ... SELECT ... FROM numbers(...)``, one insert per day) into the Collector
exporter's exact table (:func:`analytics.clickhouse.traces_ddl`) in embedded ClickHouse
(chdb), shaped as amm's recorder writes them: per request an ``invoke_agent`` root, an
``amm.select`` child (experiment and arm for the implementation agent) and one ``chat``
child per provider attempt (cost, tokens, four ``gen_ai.evaluation.result`` events on
the answering one, ``error.type`` on a failed one; the root carries the
``amm.failover`` event). 5% of requests are cache hits (no chat span), one in twelve
fails over (two chat spans), 1% fail outright.

The request rollup's materialized view (:func:`analytics.clickhouse.rollup_ddl`) is
created beside the table first, as a team would add it to its Collector's ClickHouse, so
it fills as the spans are inserted; the insert and merge times are printed (``--no-rollup``
generates without it, for the comparison).

Each section is timed in a fresh child process (the engine runs in-process, so the
child's peak RSS is the engine's too): A/B is ``experiment_sums`` + ``analyse_looks``,
per-model is ``model_sums`` + ``model_table_from_sums``, on ClickHouse through the
rollup and (unless ``--no-raw``) on the raw spans. The SQLite figures use the same
spans (copied out of chdb) in a local store at a tenth of the size.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

__all__ = ["generate_chdb", "main", "measure", "write_sqlite"]

DAYS = 30
START_NS = 1_793_491_200 * 10**9  # 2026-11-01T00:00:00Z
MODELS = ("model-a", "model-b", "model-c", "model-d", "model-e", "model-f")
AGENTS = ("planning", "implementation", "review", "research")
EXPERIMENT = "impl-a-vs-b"
CHATS_PER_REQUEST = 0.95 + 1 / 12  # cache hits have none; failovers have two


def _gen_sql(table: str, first: int, count: int, step_ns: int,
             start_ns: int = START_NS) -> list[str]:
    """The inserts of requests ``first .. first + count - 1`` (roots, selects, chats), the
    first at ``start_ns`` (a table with a TTL drops what is older: give a recent one)."""
    models = "[" + ", ".join(f"'{m}'" for m in MODELS) + "]"
    agents = "[" + ", ".join(f"'{a}'" for a in AGENTS) + "]"
    req = f"""
SELECT number AS i,
  fromUnixTimestamp64Nano(toInt64({start_ns} + i * {step_ns}), 'UTC') AS t,
  lower(hex(cityHash64(i, 'trace'))) || lower(hex(cityHash64(i, 'trace2'))) AS trace,
  lower(hex(cityHash64(i, 'root'))) AS root,
  {agents}[i % 4 + 1] AS agent,
  agent = 'implementation' AS in_exp,
  i % 20 = 0 AS cache_hit,
  i % 12 = 1 AS failover,
  i % 100 = 7 AS failed,
  (cityHash64(i, 'u') % 1000000) / 1e6 AS u,
  if(in_exp, ['model-a', 'model-b'][cityHash64(i, 'arm') % 2 + 1],
     {models}[cityHash64(i, 'm') % 6 + 1]) AS chosen,
  {models}[(cityHash64(i, 'm') + 1) % 6 + 1] AS backup,
  if(failover, backup, chosen) AS final_model,
  toUInt64((150 + 900 * u * u + 40 * indexOf({models}, final_model)) * 1e6) AS latency_ns
FROM numbers({first}, {count})"""
    cols = ("Timestamp, TraceId, SpanId, ParentSpanId, TraceState, SpanName, SpanKind, "
            "ServiceName, ResourceAttributes, ScopeName, ScopeVersion, SpanAttributes, "
            "Duration, StatusCode, StatusMessage, `Events.Timestamp`, `Events.Name`, "
            "`Events.Attributes`, `Links.TraceId`, `Links.SpanId`, `Links.TraceState`, "
            "`Links.Attributes`")
    common = ("'', {name}, {kind}, 'amm-fleet', map('service.name', 'amm-fleet'), 'amm', "
              "'1.0'")
    empty_links = "[], [], [], []"
    root = f"""INSERT INTO {table} ({cols})
SELECT t, trace, root, '', {common.format(name="'invoke_agent ' || agent", kind="'Internal'")},
  mapConcat(map('gen_ai.operation.name', 'invoke_agent', 'gen_ai.agent.name', agent,
                'amm.agent_type', agent, 'amm.task_id', toString(i),
                'amm.cache.hit', if(cache_hit, 'true', 'false')),
            if(failed AND NOT cache_hit, map('error.type', 'AllModelsFailedError'), map())),
  latency_ns + 2000000, if(failed AND NOT cache_hit, 'Error', 'Unset'), '',
  if(failover AND NOT failed, [t + toIntervalMillisecond(1)], []),
  if(failover AND NOT failed, ['amm.failover'], []),
  if(failover AND NOT failed, [map('amm.failover.from', chosen, 'amm.failover.to', backup,
                                   'amm.failover.reason', 'ProviderError')], []),
  {empty_links}
FROM ({req})"""
    select = f"""INSERT INTO {table} ({cols})
SELECT t + toIntervalMicrosecond(50), trace, lower(hex(cityHash64(i, 'select'))), root,
  {common.format(name="'amm.select'", kind="'Internal'")},
  mapConcat(map('amm.selection.chosen', chosen, 'amm.selection.reason', 'best score',
                'amm.selection.propensity', if(in_exp, '0.5', '1')),
            if(in_exp, map('amm.experiment.name', '{EXPERIMENT}', 'amm.experiment.arm', chosen,
                           'amm.selection.arm_honoured', if(failover, 'false', 'true')),
               map())),
  40000, 'Unset', '', [], [], [], {empty_links}
FROM ({req}) WHERE NOT cache_hit"""
    chat = f"""INSERT INTO {table} ({cols})
SELECT t + toIntervalMicrosecond(100 + attempt * 1000), trace,
  lower(hex(cityHash64(i, 'chat', attempt))), root,
  {common.format(name="'chat ' || model", kind="'Client'")},
  mapConcat(map('gen_ai.operation.name', 'chat', 'gen_ai.provider.name', 'openai',
                'gen_ai.request.model', model, 'amm.attempt', toString(attempt),
                'gen_ai.usage.input_tokens', toString(in_tok),
                'gen_ai.usage.output_tokens', toString(out_tok),
                'amm.cost_usd', toString(round((in_tok * 3 + out_tok * 15) * 1e-6
                                                * (1 + indexOf({models}, model)), 8))),
            if(ok, map('gen_ai.response.model', model), map('error.type', 'ProviderError'))),
  if(ok, latency_ns, toUInt64(30000000)), if(ok, 'Unset', 'Error'), '',
  if(ok, arrayResize([t + toIntervalMillisecond(2)], 4, t + toIntervalMillisecond(2)), []),
  if(ok, arrayResize(['gen_ai.evaluation.result'], 4, 'gen_ai.evaluation.result'), []),
  if(ok, arrayMap(k -> map('gen_ai.evaluation.name', k, 'gen_ai.evaluation.score.value',
                            toString(round(least(1.0, score + 0.01 * length(k)), 4))),
                  ['overall', 'completeness', 'relevance', 'coherence']), []),
  {empty_links}
FROM (
  SELECT *, arrayJoin(if(failover, [1, 2], [1])) AS attempt,
    if(attempt = 1, chosen, backup) AS model,
    NOT failed AND NOT (failover AND attempt = 1) AS ok,
    toUInt32(200 + cityHash64(i, 'in') % 800) AS in_tok,
    toUInt32(50 + cityHash64(i, 'out') % 400) AS out_tok,
    0.62 + 0.05 * indexOf({models}, model) + 0.2 * u AS score
  FROM ({req}) WHERE NOT cache_hit
)"""
    return [root, select, chat]


def generate_chdb(directory: Path, chat_spans: int, days: int = DAYS, *,
                  rollup: bool = True) -> dict[str, float]:
    """Fill ``chdb://directory`` with about ``chat_spans`` chat spans (``rollup``: with the
    request rollup's materialized view beside the table, filled as the spans are
    inserted); returns counts and the wall and CPU seconds of the inserts and merges."""
    from analytics.clickhouse import open_runner, rollup_ddl, rollup_table, traces_ddl

    run = open_runner(f"chdb://{directory}")
    table = "otel.otel_traces"
    run.command(traces_ddl(table))
    for sql in rollup_ddl(table) if rollup else []:
        run.command(sql)
    requests = math.ceil(chat_spans / CHATS_PER_REQUEST)
    step_ns = days * 86_400 * 10**9 // requests
    per_day = math.ceil(requests / days)
    started, cpu = time.perf_counter(), time.process_time()
    for first in range(0, requests, per_day):
        for sql in _gen_sql(table, first, min(per_day, requests - first), step_ns):
            run.command(sql)
    inserted, insert_cpu = time.perf_counter(), time.process_time()
    # The inserts leave 3-6 parts a day (some of one row); a server merges them in the
    # background, so measure the merged state (one part a day), not the fresh one. The
    # rollup's parts are merged likewise (one row per request, bar those on two days).
    for name in [table, rollup_table(table)] if rollup else [table]:
        run.command(f"OPTIMIZE TABLE {name} FINAL")
    counts = run.frame(f"SELECT countIf(SpanName LIKE 'chat %') AS chats, count() AS spans "
                       f"FROM {table}")
    return {"requests": requests, "chat_spans": int(counts["chats"][0]),
            "spans": int(counts["spans"][0]), "insert_s": inserted - started,
            "insert_cpu_s": insert_cpu - cpu, "merge_s": time.perf_counter() - inserted,
            "merge_cpu_s": time.process_time() - insert_cpu}


def write_sqlite(directory: Path, store: Path, limit_requests: int) -> dict[str, float]:
    """Copy the first ``limit_requests`` requests' spans from chdb into a SQLite store."""
    from analytics.clickhouse import open_runner
    from telemetry.store_schema import connect, ensure_store_schema

    run = open_runner(f"chdb://{directory}")
    started = time.perf_counter()
    task_cut = limit_requests  # requests are numbered by amm.task_id on the root
    traces = (f"TraceId IN (SELECT TraceId FROM otel.otel_traces WHERE SpanName LIKE "
              f"'invoke_agent %' AND toUInt64(SpanAttributes['amm.task_id']) < {task_cut})")
    conn = connect(store)
    ensure_store_schema(conn)
    offset, batch, written = 0, 200_000, 0
    while True:
        df = run.frame(f"""
SELECT concat(replaceOne(toString(Timestamp, 'UTC'), ' ', 'T'), 'Z') AS ts, TraceId, SpanId,
  ParentSpanId, SpanName, SpanKind, ServiceName, toJSONString(ResourceAttributes) AS res,
  ScopeName, ScopeVersion, toJSONString(SpanAttributes) AS attrs, Duration, StatusCode,
  toJSONString(arrayMap((t, n, a) -> CAST((concat(replaceOne(toString(t, 'UTC'), ' ', 'T'),
    'Z'), n, a), 'Tuple(Timestamp String, Name String, Attributes Map(String, String))'),
    Events.Timestamp, Events.Name, Events.Attributes)) AS events
FROM otel.otel_traces WHERE {traces}
ORDER BY Timestamp, SpanId LIMIT {batch} OFFSET {offset}""")
        if df.empty:
            break
        rows = [(r.ts, r.TraceId, r.SpanId, r.ParentSpanId, "", r.SpanName, r.SpanKind,
                 r.ServiceName, r.res, r.ScopeName, r.ScopeVersion, _typed(r.attrs),
                 int(r.Duration), r.StatusCode, "", r.events, "[]")
                for r in df.itertuples(index=False)]
        conn.executemany(
            "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, "
            "SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, "
            "SpanAttributes, Duration, StatusCode, StatusMessage, Events, Links) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)", rows)
        conn.commit()
        written += len(rows)
        offset += batch
    # The exact ledger the SQLite store keeps: one row per priced chat span.
    conn.execute("""
INSERT INTO amm_cost_ledger (ts, day, model_id, agent_type, task_id, input_tokens,
                             output_tokens, cost_usd, source)
SELECT 0, substr(Timestamp, 1, 10), json_extract(SpanAttributes, '$."gen_ai.request.model"'),
       '', '', json_extract(SpanAttributes, '$."gen_ai.usage.input_tokens"'),
       json_extract(SpanAttributes, '$."gen_ai.usage.output_tokens"'),
       json_extract(SpanAttributes, '$."amm.cost_usd"'), 'attempt'
FROM otel_traces WHERE SpanName LIKE 'chat %'""")
    conn.commit()
    chats = conn.execute("SELECT count(*) FROM otel_traces WHERE SpanName LIKE 'chat %'"
                         ).fetchone()[0]
    conn.close()
    return {"chat_spans": chats, "spans": written, "generate_s": time.perf_counter() - started}


def _typed(attrs: str) -> str:
    # SQLite keeps attribute values typed (amm's store writes numbers as numbers).
    out: dict[str, object] = {}
    for k, v in json.loads(attrs).items():
        if k in ("amm.cost_usd", "amm.selection.propensity"):
            out[k] = float(v)
        elif k in ("gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "amm.attempt"):
            out[k] = int(v)
        elif v in ("true", "false"):
            out[k] = v == "true"
        else:
            out[k] = v
    return json.dumps(out, separators=(",", ":"))


def _peak_rss_mb() -> float:
    # VmHWM, not ru_maxrss: the latter keeps the parent's peak across fork and exec.
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(spec: str, section: str, raw: bool = False) -> dict[str, object]:
    """Time one section on ``spec`` in this process; peak RSS of the whole process.
    ``raw``: a ClickHouse source reads the raw spans even if a rollup is there."""
    from analytics.pushdown import model_table_from_sums, open_source

    if section == "ab":  # scipy and the A/B modules: 62 MB the per-model section never uses
        from analytics.ab import analyse_looks
    source: Any = open_source(spec) if not spec.startswith("chdb://") else None
    path = "SQLite store"
    if source is None:
        from analytics.clickhouse import ClickHouseSource

        source = ClickHouseSource.open(spec, rollup=False if raw else None)
        path = str(source.path)  # found before the clock starts (a count query)
    rss_before = _peak_rss_mb()
    started, cpu_started = time.perf_counter(), time.process_time()
    if section == "ab":
        looks, agents = source.experiment_sums()
        reports = analyse_looks(looks, agents)
        check = float(sum(arm.n for rep in reports for arm in rep.arms))
    else:
        table = model_table_from_sums(source.model_sums())
        check = float(table["attempts"].sum())
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu_started
    # CPU seconds of every thread (the engine's too): what the section costs on a shared
    # machine, where the wall time also counts other processes' turns.
    return {"seconds": seconds, "cpu_seconds": cpu, "peak_rss_mb": _peak_rss_mb(),
            "rss_before_mb": rss_before, "check": check, "path": path}


def _child(spec: str, section: str, raw: bool = False) -> dict[str, Any]:
    out = subprocess.run([sys.executable, "-m", "benchmarks.clickhouse_scale", "--measure",
                          spec, "--section", section, *(["--raw"] if raw else [])],
                         check=True, capture_output=True, text=True)
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    """Generate (unless ``--reuse``), measure each section in a child, print the table."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.clickhouse_scale")
    p.add_argument("--chat-spans", type=int, default=10_000_000)
    p.add_argument("--sqlite-chat-spans", type=int, default=1_000_000)
    p.add_argument("--dir", help="where the chdb data and the SQLite store go (kept)")
    p.add_argument("--reuse", action="store_true", help="measure what --dir already holds")
    p.add_argument("--no-rollup", action="store_true",
                   help="generate without the request rollup's materialized view")
    p.add_argument("--no-raw", action="store_true",
                   help="measure ClickHouse through the rollup only (not the raw spans too)")
    p.add_argument("--no-sqlite", action="store_true", help="neither make nor measure SQLite")
    p.add_argument("--measure", help=argparse.SUPPRESS)
    p.add_argument("--section", help=argparse.SUPPRESS)
    p.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.measure:
        print(json.dumps(measure(args.measure, args.section, args.raw)))
        return 0
    base = Path(args.dir or tempfile.mkdtemp(prefix="amm-ch-scale-"))
    chdb_dir, store = base / "chdb", base / "sqlite" / "amm.db"
    store.parent.mkdir(parents=True, exist_ok=True)
    if not args.reuse:
        made = generate_chdb(chdb_dir, args.chat_spans, rollup=not args.no_rollup)
        print(f"chdb: {made['chat_spans']:,} chat spans ({made['spans']:,} spans, "
              f"{made['requests']:,} requests) inserted "
              f"{'with' if not args.no_rollup else 'without'} the rollup's view in "
              f"{made['insert_s']:.0f} s ({made['insert_cpu_s']:.0f} CPU s), merged in "
              f"{made['merge_s']:.0f} s ({made['merge_cpu_s']:.0f} CPU s)", flush=True)
        if not args.no_sqlite:
            limit = math.ceil(args.sqlite_chat_spans / CHATS_PER_REQUEST)
            copied = write_sqlite(chdb_dir, store, limit)
            print(f"sqlite: {copied['chat_spans']:,} chat spans ({copied['spans']:,} spans) "
                  f"copied in {copied['generate_s']:.0f} s", flush=True)
        from analytics.clickhouse.runner import _SESSIONS

        for session in _SESSIONS.values():  # release the directory for the children
            session.close()
        _SESSIONS.clear()
    runs = [("ClickHouse (chdb)", f"chdb://{chdb_dir}", False)]
    if not args.no_raw:
        runs.append(("ClickHouse, raw", f"chdb://{chdb_dir}", True))
    if not args.no_sqlite:
        runs.append(("SQLite", str(store), False))
    for label, spec, raw in runs:
        for section, name in (("ab", "A/B (experiment_sums + analyse_looks)"),
                              ("models", "per model (model_sums + table)")):
            load = _load()
            r = _child(spec, section, raw)
            print(f"{label:<18} {name:<40} {r['seconds']:>7.2f} s  (CPU {r['cpu_seconds']:.1f} s)"
                  f"  peak RSS {r['peak_rss_mb']:>6.0f} MB (after open {r['rss_before_mb']:.0f} "
                  f"MB)  [{r['check']:,.0f}]  load {load}  {r['path']}", flush=True)
    print(f"data kept in {base}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
