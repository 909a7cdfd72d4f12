"""``otel_traces`` in ClickHouse as a :class:`~analytics.source.SpanSource`, with push-down.

Rows (``spans``) are projected with ``SpanAttributes['key']`` and returned in the SQLite
source's shapes (ISO text times, events as JSON), so every pandas analysis runs
unchanged. The report's sections do not pull rows: :meth:`ClickHouseSource.experiment_sums`
and :meth:`~ClickHouseSource.model_sums` compute counts, sums and quantiles in SQL
(see :mod:`analytics.pushdown` for the contract, and the SQLite twin of each query).
What a request is in SQL is :mod:`analytics.clickhouse.facts`; sums are exact
(:mod:`analytics.clickhouse.exact`), so they agree with SQLite's ``fsum`` to the bit
whatever order the threads merge in.

Two paths (:attr:`ClickHouseSource.path`, printed in the report's first line): when the
request rollup's materialized view sits beside the table and holds every request
(:mod:`analytics.clickhouse.rollup`), the push-down reads its small typed columns (10M
chat spans: A/B 3.1-3.5 CPU s, per model 1.7-1.8, against 17-24 and 8.5-12 on the raw
spans; ``docs/fleet_analytics.md``);
otherwise it reads ``otel_traces`` itself, a few days at a time, and the report says why.

Cost at fleet scale: ClickHouse holds no cost ledger; :meth:`ledger` is derived from
the exact ``amm.cost_usd`` each ``chat`` span carries, so its numbers are as complete
as the traces that reached ClickHouse (sampling, a Collector that dropped spans). The
per-host SQLite ledger stays the authoritative account; ``cost_basis`` says which
one a source reads.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd

from analytics.clickhouse.exact import exact_sum, to_float, to_int
from analytics.clickhouse.facts import (
    CHAT,
    FAILED,
    MODEL,
    ROOT,
    SCORE,
    SELECT,
    attr,
    requests_sql,
    time_sql,
)
from analytics.clickhouse.rollup import QueryPath, find_rollup
from analytics.clickhouse.rollup import attempts_sql as rollup_attempts_sql
from analytics.clickhouse.rollup import requests_sql as rollup_requests_sql
from analytics.clickhouse.runner import ChdbRunner, HttpRunner, Runner, open_runner
from analytics.source import LEDGER_COLUMNS, SPAN_COLUMNS
from telemetry import conventions as cv

__all__ = ["CHUNK_REQUESTS", "ClickHouseSource"]

CHUNK_REQUESTS = 700_000
"""Requests per query of the push-down (whole days are kept together). Each query has a
fixed cost of about half a day's work at 320,000 requests a day (0.25 against 0.4 CPU
seconds), and the group-by holds about 1.5 KB per experiment request: at 10M chat spans,
two-day chunks take 16.5 CPU seconds and peak at 0.90 GB for the A/B section (one-day:
21.9 s, 0.78 GB; three-day: 15.8 s, 0.98 GB)."""
# model_sums on two threads at most: each thread holds part of the quantiles' durations and
# the merge copies them, so threads cost memory. On one thread the query is CPU-bound (10M
# chat spans: 9.3-10.4 CPU s, so >= 10 s wall); two (with the exact sums cheaper and the
# benchmark's child lighter) peak at 0.89-0.95 GB and halve the wall time on two cores.
_MODEL_THREADS = {"max_threads": 2}
_ISO = "concat(replaceOne(toString({}, 'UTC'), ' ', 'T'), 'Z')"
# The A/B metrics of a request row of analytics.clickhouse.facts.requests_sql.
_METRICS = {
    "quality": "if(failed AND quality IS NULL, 0.0, quality)",
    "success_rate": "toFloat64(NOT failed)",
    "latency_ms": "latency_ms",
    "cost_per_request": "cost",
}


class ClickHouseSource:
    """Spans of the Collector's ``otel_traces`` table (a server or embedded chdb).

    >>> ClickHouseSource.open("chdb:///var/lib/amm-traces").experiment_sums()
    """

    __slots__ = ("_path", "runner", "table")
    cost_basis = "spans"
    """Cost is summed from the chat spans' ``amm.cost_usd`` (no ledger table here)."""

    def __init__(self, runner: Runner, table: str = "otel.otel_traces", *,
                 rollup: bool | None = None) -> None:
        """``rollup``: None finds out whether a complete request rollup is there (see
        :attr:`path`), False always reads ``table`` itself."""
        self.runner = runner
        self.table = table
        self._path: QueryPath | None = None if rollup is None else (
            find_rollup(runner, table) if rollup else QueryPath(None, "raw asked for"))

    @classmethod
    def open(cls, url: str, *, rollup: bool | None = None) -> ClickHouseSource:
        """The source of a ``clickhouse://`` or ``chdb://`` URL."""
        runner = open_runner(url)
        return cls(runner, f"`{runner.url.database}`.`{runner.url.table}`", rollup=rollup)

    @property
    def path(self) -> QueryPath:
        """Where the push-down reads: the request rollup beside ``table`` when it holds
        every request, else ``table`` itself (found once, on first use)."""
        if self._path is None:
            self._path = find_rollup(self.runner, self.table)
        return self._path

    def __repr__(self) -> str:
        return f"ClickHouseSource({self.runner!r}, {self.table}; {self.path})"

    def _where(self, since: datetime | None, until: datetime | None) -> str:
        parts = []
        if since is not None:
            parts.append(f"Timestamp >= {time_sql(since)}")
        if until is not None:
            parts.append(f"Timestamp < {time_sql(until)}")
        return " AND ".join(parts) or "1"

    # --- SpanSource: rows ------------------------------------------------------------

    def spans(self, attributes: Sequence[str], since: datetime | None = None,
              until: datetime | None = None) -> pd.DataFrame:
        """Rows in the SQLite source's shapes (ISO text Timestamp, Events as JSON)."""
        cols = ", ".join(
            # Not aliased `Timestamp`: ClickHouse would then compare the text in WHERE.
            ["concat(replaceOne(toString(Timestamp, 'UTC'), ' ', 'T'), 'Z') AS ts_iso",
             "TraceId", "SpanId", "ParentSpanId", "SpanName", "Duration", "StatusCode",
             "Events.Timestamp AS ev_t", "Events.Name AS ev_n", "Events.Attributes AS ev_a"]
            + [f"{attr(k)} AS `{k}`" for k in attributes])
        df = self.runner.frame(f"SELECT {cols} FROM {self.table} "
                               f"WHERE {self._where(since, until)}")
        if df.empty:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in [*SPAN_COLUMNS, *attributes]})
        df["Timestamp"] = df["ts_iso"]
        df["Events"] = [_events_json(t, n, a) for t, n, a in
                        zip(df["ev_t"], df["ev_n"], df["ev_a"], strict=True)]
        out = df[[*SPAN_COLUMNS, *attributes]].astype(object)
        return out.where(out.notna(), None)

    def ledger(self) -> pd.DataFrame:
        """Ledger rows derived from chat spans (one per provider attempt with a cost)."""
        df = self.runner.frame(
            f"SELECT SpanId AS id, toUnixTimestamp64Nano(Timestamp) / 1e9 AS ts, "
            f"toString(toDate(Timestamp)) AS day, {MODEL} AS model_id, "
            f"ifNull({attr(cv.AMM_AGENT_TYPE)}, '') AS agent_type, "
            f"ifNull({attr(cv.AMM_TASK_ID)}, '') AS task_id, "
            f"toInt64OrZero(SpanAttributes['{cv.GEN_AI_USAGE_INPUT_TOKENS}']) AS input_tokens, "
            f"toInt64OrZero(SpanAttributes['{cv.GEN_AI_USAGE_OUTPUT_TOKENS}']) AS output_tokens, "
            f"toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}']) AS cost_usd, "
            f"'span' AS source FROM {self.table} WHERE {CHAT} "
            f"AND SpanAttributes['{cv.AMM_COST_USD}'] != '' ORDER BY Timestamp")
        if df.empty:
            return pd.DataFrame(columns=list(LEDGER_COLUMNS))
        return df[list(LEDGER_COLUMNS)]

    def daily_budget(self) -> float | None:
        """Spans carry no budget: the report uses the explicit or default one."""
        return None

    # --- Push-down -----------------------------------------------------------------

    def _chunks(self, since: datetime | None) -> list[tuple[datetime, datetime]]:
        """Runs of whole days (``since`` cuts the first) holding at most
        :data:`CHUNK_REQUESTS` requests each, or one day when a day holds more: each
        request group-by then holds one chunk, not the whole table (bounded memory)."""
        lower = "" if since is None else f" AND Timestamp >= {time_sql(since)}"
        days = self.runner.frame(f"SELECT toString(toDate(Timestamp)) AS day, count() AS n "
                                 f"FROM {self.table} WHERE {ROOT}{lower} GROUP BY day "
                                 f"ORDER BY day")
        out: list[tuple[datetime, datetime]] = []
        held = 0
        for day, n in zip(days.get("day", []), days.get("n", []), strict=True):
            start = datetime.fromisoformat(str(day)).replace(tzinfo=UTC)
            lo, hi = (max(start, since) if since is not None else start), start + timedelta(1)
            if out and held + int(n) <= CHUNK_REQUESTS and out[-1][1] == start:
                out[-1], held = (out[-1][0], hi), held + int(n)
            else:
                out.append((lo, hi))
                held = int(n)
        return out

    def experiment_sums(self, since: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(looks, agents)`` of :func:`analytics.ab.analyse_looks`, computed in SQL: one
        query per chunk of days gives both, per experiment, agent type, arm, day and
        whether the request was randomised (Python adds up O(arms x days) rows)."""
        sums = ", ".join(
            f"countIf(({e}) IS NOT NULL) AS {m}_n, {exact_sum(e)} AS {m}_s, "
            f"{exact_sum(f'ifNull({e}, 0.0) * ifNull({e}, 0.0)')} AS {m}_q"
            for m, e in _METRICS.items())
        looks = f"""
SELECT experiment, agent_type, arm, toString(toDate(time)) AS day,
       arm IS NOT NULL AND honoured AND NOT cache_hit AS randomised, count() AS requests,
       {_ISO.format('max(time)')} AS last, {sums}
FROM r WHERE experiment IS NOT NULL
GROUP BY experiment, agent_type, arm, day, randomised"""
        path = self.path
        if path.rollup is not None:  # one query: the rollup needs no GROUP BY per request
            return _looks_and_agents(self.runner.frame(
                f"WITH r AS ({rollup_requests_sql(path, since, experiments_only=True)})"
                f"{looks}"))
        parts = [self.runner.frame(
            f"WITH r AS ({requests_sql(self.table, lo, hi, experiments_only=True)}){looks}")
            for lo, hi in self._chunks(since)]
        return _looks_and_agents(_concat(parts))

    def model_sums(self) -> pd.DataFrame:
        """Per model over attempts of requests: counts, p50/p95 latency of every attempt
        (:func:`analytics.stats.latency_quantiles`), quality and cost sums, failovers away."""
        if self.path.rollup is not None:
            return self._rollup_model_sums(self.path)
        owned = (f"cityHash64(TraceId, ParentSpanId) IN (SELECT cityHash64(TraceId, SpanId) "
                 f"FROM {self.table} WHERE {ROOT})")
        table = self.runner.frame(f"""
{_model_aggregates('Duration')}
FROM (
  SELECT Duration, {MODEL} AS model, {FAILED} AS failed, {SCORE} AS score,
         toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}']) AS cost
  FROM {self.table} WHERE {CHAT} AND NOT ({ROOT}) AND {owned}
) GROUP BY model""", settings=_MODEL_THREADS)
        away = self.runner.frame(f"""
SELECT a['{cv.AMM_FAILOVER_FROM}'] AS model, count() AS failovers_away
FROM (SELECT arrayJoin(arrayFilter((a, n) -> n = '{cv.AMM_FAILOVER}', Events.Attributes,
                                   Events.Name)) AS a
      FROM {self.table} WHERE has(Events.Name, '{cv.AMM_FAILOVER}')
        AND (({CHAT}) OR ({ROOT}) OR ({SELECT})))
GROUP BY model""")  # only spans with a failover event expand their events (1.4 -> 0.5 s)
        return _model_frame(table, away)

    def _rollup_model_sums(self, path: QueryPath) -> pd.DataFrame:
        table = self.runner.frame(f"""
{_model_aggregates('duration')}
FROM ({rollup_attempts_sql(path)}) GROUP BY model""", settings=_MODEL_THREADS)
        away = self.runner.frame(f"SELECT f AS model, count() AS failovers_away FROM "
                                 f"{path.rollup} ARRAY JOIN FailoversFrom AS f "
                                 f"WHERE {path.days()} GROUP BY model")
        return _model_frame(table, away)

    def totals(self) -> pd.DataFrame:
        """Per day: requests, answered, cache hits, quality n/sum, first/last request, and
        the cost of the day as this source knows it (:attr:`cost_basis`)."""
        per_day = f"""
SELECT toString(toDate(time)) AS day, count() AS requests,
       countIf(cache_hit OR NOT failed) AS answered, countIf(cache_hit) AS cache_hits,
       count(quality) AS quality_n, {exact_sum('quality')} AS quality_s,
       {_ISO.format('min(time)')} AS first, {_ISO.format('max(time)')} AS last
FROM r GROUP BY day ORDER BY day"""
        path = self.path
        if path.rollup is not None:
            df = self.runner.frame(f"WITH r AS ({rollup_requests_sql(path)}){per_day}")
            cost = self.runner.frame(f"SELECT toString(Day) AS day, {exact_sum('a.cost')} AS "
                                     f"cost_usd FROM {path.rollup} ARRAY JOIN Attempts AS a "
                                     f"WHERE {path.days()} GROUP BY day")
            return _totals_frame(df, cost)
        df = _concat([self.runner.frame(
            f"WITH r AS ({requests_sql(self.table, lo, hi, experiments_only=False)}){per_day}")
            for lo, hi in self._chunks(None)])
        cost = self.runner.frame(f"""
SELECT toString(toDate(Timestamp)) AS day,
       {exact_sum(f"toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}'])")} AS cost_usd
FROM {self.table} WHERE {CHAT} GROUP BY day""")
        return _totals_frame(df, cost)


def _events_json(times: object, names: object, attrs: object) -> str:
    if names is None or len(names) == 0:  # type: ignore[arg-type]
        return "[]"
    out = []
    for t, n, a in zip(times, names, attrs, strict=True):  # type: ignore[call-overload]
        stamp = pd.Timestamp(t)
        stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
        out.append({"Timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%S.%f")
                    + f"{stamp.nanosecond:03d}Z", "Name": n, "Attributes": dict(a)})
    return json.dumps(out)


def _concat(frames: list[pd.DataFrame]) -> pd.DataFrame:
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _looks_and_agents(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The chunks' rows (per experiment, agent type, arm, day, randomised) as ``looks``
    (randomised rows per experiment, arm and day; fixed-point sums added as integers,
    then rounded once) and ``agents`` (requests and randomised per agent type)."""
    from analytics.ab import LOOK_COLUMNS

    if df.empty:
        return (pd.DataFrame({c: pd.Series(dtype=float) for c in LOOK_COLUMNS}),
                pd.DataFrame({"experiment": pd.Series(dtype=object),
                              "agent_type": pd.Series(dtype=object),
                              "requests": pd.Series(dtype="int64"),
                              "randomised": pd.Series(dtype="int64")}))
    fair = df["randomised"].astype(bool)
    agents = (df.assign(randomised=df["requests"].where(fair, 0))
              .groupby(["experiment", "agent_type"], sort=True, dropna=False)[
                  ["requests", "randomised"]].sum().reset_index())
    rows = []
    for (name, arm, day), g in df[fair].groupby(["experiment", "arm", "day"], sort=True):
        row: dict[str, object] = {"experiment": name, "arm": arm, "day": day,
                                  "last": max(g["last"])}
        for c in LOOK_COLUMNS[4:]:
            row[c] = (float(g[c].sum()) if c.endswith("_n")
                      else to_float(sum(to_int(v) for v in g[c])))
        rows.append(row)
    looks = pd.DataFrame(rows, columns=list(LOOK_COLUMNS))
    looks["last"] = pd.to_datetime(looks["last"], utc=True, format="ISO8601")
    for c in LOOK_COLUMNS[4:]:
        looks[c] = looks[c].astype("float64")
    return looks, agents


def _model_frame(table: pd.DataFrame, away: pd.DataFrame) -> pd.DataFrame:
    from analytics.pushdown import MODEL_SUM_COLUMNS

    if table.empty:
        return pd.DataFrame(columns=list(MODEL_SUM_COLUMNS))
    counts = away.set_index("model")["failovers_away"] if not away.empty else pd.Series(
        dtype="int64")
    table = table.assign(failovers_away=table["model"].map(counts).fillna(0).astype("int64"),
                         quality_s=table["quality_s"].map(to_float),
                         cost_usd=table["cost_usd"].map(to_float))
    for c in ("p50_latency_ms", "p95_latency_ms"):
        table[c] = table[c].astype("float64").where(table["attempts"] > table["errors"], np.nan)
    return table[list(MODEL_SUM_COLUMNS)]


def _totals_frame(df: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    from analytics.pushdown import TOTAL_COLUMNS

    days = sorted(set(df.get("day", [])) | set(cost.get("day", [])))
    out = df.set_index("day").reindex(days) if not df.empty else pd.DataFrame(index=days)
    if not df.empty:
        out["quality_s"] = out["quality_s"].map(to_float, na_action="ignore")
    out["cost_usd"] = (cost.set_index("day")["cost_usd"].map(to_float).reindex(days).fillna(0.0)
                       if not cost.empty else 0.0)
    return out.reset_index(names="day").reindex(columns=list(TOTAL_COLUMNS))


_ = (ChdbRunner, HttpRunner)  # the two runners this source is opened with


def _model_aggregates(duration: str) -> str:
    """The per-model SELECT list of both paths (raw spans and the rollup): one
    definition, so the two give the same numbers."""
    return f"""SELECT model, count() AS attempts, countIf(failed) AS errors,
       quantilesExactInclusive(0.5, 0.95)({duration}) AS q,
       q[1] / 1e6 AS p50_latency_ms, q[2] / 1e6 AS p95_latency_ms,
       count(score) AS quality_n, {exact_sum('score')} AS quality_s,
       {exact_sum('cost')} AS cost_usd"""
