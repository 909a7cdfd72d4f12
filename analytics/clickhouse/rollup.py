"""The request rollup (``otel_traces_amm_requests``): what its view writes, what reads it.

The materialized view (DDL in :mod:`analytics.clickhouse.schema`) reads each inserted
block of ``otel_traces`` once: every ``invoke_agent``, ``amm.select`` and ``chat`` span
is reduced to typed aggregate states on its request's row (the request key is
:mod:`analytics.clickhouse.facts`' ``(TraceId, owner)`` hash), grouped per block and
day. The report's queries then merge those states (``GROUP BY Request``) and never read
the ``SpanAttributes`` or ``Events`` maps, which are most of the raw queries' cost.

The definitions are the raw queries' (:func:`analytics.clickhouse.facts.requests_sql`):
the root gives time, agent type, failed, cache hit and latency; the first
``amm.select`` (by time) the experiment, arm, recorded honouring and chosen model; the
last chat span (by time) the final model; the last ``overall`` score on any of them the
quality; the chat spans' ``amm.cost_usd`` the cost (``sumKahan``, as raw). Each chat
span that is not a root is also kept as one attempt (model, duration, failed, score,
cost) for the per-model section, and every ``amm.failover`` event's ``from`` model.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd

from analytics.clickhouse.facts import (
    AGENT,
    CHAT,
    FAILED,
    MODEL,
    PACKED_SCORE,
    ROOT,
    SCORE,
    SELECT,
    SELECTION,
    UNPACKED_SCORE,
    attr,
    time_sql,
    truthy,
)
from analytics.clickhouse.runner import Runner
from telemetry import conventions as cv

__all__ = ["ROLLUP_COLUMNS", "QueryPath", "attempts_sql", "backfill", "backfill_sql",
           "ensure_rollup", "find_rollup", "requests_sql", "rollup_select_sql"]

@dataclass(frozen=True, slots=True)
class QueryPath:
    """Where a source's push-down reads: the request rollup (``rollup``, a table name;
    ``first_day``: its rows from that day on, the oldest day ``otel_traces`` still holds)
    or, when there is none or it misses requests, the raw spans (``rollup`` None: why)."""

    rollup: str | None
    reason: str = ""
    first_day: date | None = None

    def __str__(self) -> str:
        if self.rollup is not None:
            return f"aggregates from the request rollup {self.rollup}"
        return f"aggregates from the raw spans ({self.reason})"

    def days(self) -> str:
        """SQL: the rollup rows to read (those of days ``otel_traces`` still holds)."""
        return "1" if self.first_day is None else f"Day >= '{self.first_day}'"


def find_rollup(run: Runner, table: str) -> QueryPath:
    """The rollup beside ``table`` if it and its view exist and it holds every request
    ``table`` holds, else the raw path and why.

    Every request: the rollup's roots from the oldest day ``table`` still holds (its TTL
    keeps two days longer) are counted between two counts of ``table``'s
    ``invoke_agent`` spans, so spans arriving meanwhile (the view writes them in the same
    INSERT) do not count as missing; a view created after spans arrived and never
    backfilled, or dropped, does."""
    from analytics.clickhouse.schema import ROLLUP_SUFFIX, rollup_table

    rollup = rollup_table(table)
    view = rollup_table(table, ROLLUP_SUFFIX + "_mv")
    for name in (rollup, view):
        if not _exists(run, name):
            return QueryPath(None, f"no {name}")
    *db, name = rollup.replace("`", "").split(".")
    where = f"database = '{db[0]}'" if db else "database = currentDatabase()"
    have = set(run.frame(f"SELECT name FROM system.columns WHERE {where} AND table = '{name}'")
               .get("name", []))
    missing = [c for c in ROLLUP_COLUMNS if c not in have]
    if missing:  # a rollup of an older amm: recreate it (and its view), then backfill
        return QueryPath(None, f"{rollup} has no {', '.join(missing)}; recreate it")
    raw = f"SELECT min(toDate(Timestamp, 'UTC')) AS first, count() AS n FROM {table} WHERE {ROOT}"
    before = run.frame(raw)
    if before.empty or int(before["n"][0]) == 0:
        return QueryPath(rollup)
    first = pd.Timestamp(before["first"][0]).date()
    rolled = run.frame(f"SELECT sum(Roots) AS n FROM {rollup} WHERE Day >= '{first}'")
    after = run.frame(raw)
    n, low, high = int(rolled["n"][0]), int(before["n"][0]), int(after["n"][0])
    if not low <= n <= high:
        return QueryPath(None, f"{rollup} holds {n:,} of {high:,} requests; backfill it")
    return QueryPath(rollup, first_day=first)


ROLLUP_COLUMNS = ("Day", "Request", "Roots", "Time", "AgentType", "Failed", "CacheHit",
                  "Duration", "Cost", "Scored", "Selection", "InExperiment", "FinalModel",
                  "Attempts", "FailoversFrom")
"""The rollup's columns the queries read (an older rollup without one is not used)."""


def _exists(run: Runner, table: str) -> bool:
    *db, name = table.replace("`", "").split(".")
    where = f"database = '{db[0]}'" if db else "database = currentDatabase()"
    found = run.frame(f"SELECT count() AS n FROM system.tables WHERE {where} AND name = '{name}'")
    return not found.empty and int(found["n"][0]) > 0


def ensure_rollup(run: Runner, table: str) -> bool:
    """Create the rollup and its view beside ``table`` unless they exist, and backfill the
    rollup when it is new (from the spans ``table`` already holds); True if it was new."""
    from analytics.clickhouse.schema import rollup_ddl, rollup_table

    rollup = rollup_table(table)
    new = not _exists(run, rollup)
    for sql in rollup_ddl(table):
        run.command(sql)
    if new:
        backfill(run, table, rollup)
    return new


_NS = "bitShiftLeft(toUInt128(toUInt64(toUnixTimestamp64Nano(Timestamp))), 64)"


def rollup_select_sql(table: str, where: str = "1") -> str:
    """The view's SELECT over ``table`` (and the backfill's, with a ``where``)."""
    # Per span first (each map key read once, only by the kind of span that has it), then
    # the block's partial states per request; inner names differ from the outer aliases.
    return f"""SELECT day AS Day, request AS Request, countIf(is_root) AS Roots,
  minIfOrNull(ts, is_root) AS Time, maxIf(agent, is_root) AS AgentType,
  maxIf(failed, is_root) AS Failed, maxIf(cache_hit, is_root) AS CacheHit,
  maxIf(duration, is_root) AS Duration, sumKahanStateIf(cost, is_chat) AS Cost,
  maxIf(packed_score, score IS NOT NULL) AS Scored,
  argMinStateIf(selection, ts, is_select) AS Selection,
  maxIf(in_experiment, is_select) AS InExperiment,
  maxIf(final_model, is_chat) AS FinalModel, groupArrayIf(attempt, is_chat) AS Attempts,
  groupArrayArray(failovers) AS FailoversFrom
FROM (
  SELECT toDate(Timestamp, 'UTC') AS day, Timestamp AS ts, Duration AS duration,
    {ROOT} AS is_root, {SELECT} AS is_select, {CHAT} AND NOT is_root AS is_chat,
    cityHash64(TraceId, if(is_root, SpanId, ParentSpanId)) AS request,
    if(is_root, {AGENT}, '') AS agent, if(is_select, false, {FAILED}) AS failed,
    if(is_root, {truthy(attr(cv.AMM_CACHE_HIT))}, false) AS cache_hit,
    {SCORE} AS score, {PACKED_SCORE} AS packed_score,
    if(is_chat, toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}']), 0) AS cost,
    if(is_select, {SELECTION}, '') AS selection,
    is_select AND SpanAttributes['{cv.AMM_EXPERIMENT_NAME}'] != '' AS in_experiment,
    if(is_chat, {_NS} + cityHash64(coalesce({attr(cv.GEN_AI_RESPONSE_MODEL)}, {MODEL})), 0)
      AS final_model,
    CAST((if(is_chat, {MODEL}, ''), Duration, failed, score, cost),
      'Tuple(model String, duration UInt64, failed UInt8, score Nullable(Float64), cost Float64)')
      AS attempt,
    arrayMap(a -> a['{cv.AMM_FAILOVER_FROM}'],
      arrayFilter((a, n) -> n = '{cv.AMM_FAILOVER}', Events.Attributes, Events.Name))
      AS failovers
  FROM {table} WHERE ({ROOT} OR {SELECT} OR {CHAT}) AND ({where})
)
GROUP BY Day, Request"""


# A request's facts from one rollup row (the request is whole in it) or from the merged
# rows of a request that has several.
_ROW = {"roots": "Roots", "time": "Time", "agent_type": "AgentType", "failed": "Failed",
        "cache_hit": "CacheHit", "duration": "Duration", "cost": "finalizeAggregation(Cost)",
        "scored": "Scored", "selection": "finalizeAggregation(Selection)",
        "final_model": "FinalModel"}
_MERGED = {"roots": "sum(Roots)", "time": "min(Time)", "agent_type": "max(AgentType)",
           "failed": "max(Failed)", "cache_hit": "max(CacheHit)", "duration": "max(Duration)",
           "cost": "sumKahanMerge(Cost)", "scored": "max(Scored)",
           "selection": "argMinMerge(Selection)", "final_model": "max(FinalModel)"}


def _partial(rollup: str, where: str) -> str:
    # Requests with a row that holds no root span: their spans came in several insert
    # blocks that background merges have not combined yet, or fall on two days. Once
    # merged, these are a handful, so the other requests need no GROUP BY.
    return f"(SELECT Request FROM {rollup} WHERE Roots = 0 AND {where})"


def requests_sql(path: QueryPath, since: datetime | None = None, *,
                 experiments_only: bool = False) -> str:
    """One row per request (starting at ``since`` or later) from the rollup of ``path``:
    the columns of :func:`analytics.clickhouse.facts.requests_sql` (``experiments_only``:
    only requests with an ``amm.select`` that names an experiment, as there). A request
    whole in one row is read as it is; the few in several rows are merged (``GROUP BY
    Request``)."""
    rollup = path.rollup
    where = path.days() if since is None else f"{path.days()} AND Day >= '{since.date()}'"
    only, having = ("InExperiment = 1 AND ", " AND max(InExperiment) = 1") if (
        experiments_only) else ("", "")
    whole = ", ".join(f"{e} AS {k}" for k, e in _ROW.items())
    merged = ", ".join(f"{e} AS {k}" for k, e in _MERGED.items())
    after = "" if since is None else f" AND time >= {time_sql(since)}"
    return f"""
SELECT assumeNotNull(time) AS time, agent_type, failed = 1 AS failed,
       cache_hit = 1 AS cache_hit, duration / 1e6 AS latency_ms, cost,
       {UNPACKED_SCORE} AS quality, splitByChar('\\0', selection) AS sel,
       nullIf(sel[1], '') AS experiment, nullIf(sel[2], '') AS arm,
       if(sel[3] != '', {truthy('sel[3]')},
          sel[2] != '' AND sel[2] = sel[4]
          AND cityHash64(sel[2]) = toUInt64(bitAnd(final_model, 18446744073709551615)))
         AS honoured
FROM (
  SELECT {whole} FROM {rollup}
  WHERE {only}Roots > 0 AND {where} AND Request NOT IN {_partial(str(rollup), where)}
  UNION ALL
  SELECT {merged} FROM {rollup}
  WHERE {where} AND Request IN {_partial(str(rollup), where)}
  GROUP BY Request HAVING roots > 0{having}
) WHERE 1{after}"""


def attempts_sql(path: QueryPath) -> str:
    """The chat attempts of requests (chat spans whose parent is a root span): ``model,
    duration, failed, score, cost``, one row each."""
    rollup, days = path.rollup, path.days()
    owner = (f"Roots > 0 OR Request IN (SELECT Request FROM {rollup} WHERE Roots > 0 "
             f"AND {days} AND Request IN {_partial(str(rollup), days)})")
    return f"""
SELECT a.model AS model, a.duration AS duration, a.failed = 1 AS failed, a.score AS score,
       a.cost AS cost
FROM {rollup} ARRAY JOIN Attempts AS a WHERE {days} AND ({owner})"""


def backfill_sql(table: str, rollup: str, day: date) -> str:
    """``INSERT ... SELECT`` of one day of ``table``'s existing spans into ``rollup`` (what
    the view would have written had it existed when they arrived). Run once per day that
    holds spans, after creating the view: a day at a time bounds the group-by's memory."""
    lo = datetime.combine(day, datetime.min.time(), UTC)
    where = f"Timestamp >= {time_sql(lo)} AND Timestamp < {time_sql(lo + timedelta(days=1))}"
    return f"INSERT INTO {rollup}\n{rollup_select_sql(table, where)}"


def backfill(run: Runner, table: str, rollup: str) -> int:
    """Fill ``rollup`` from every span already in ``table`` (a day at a time); returns the
    number of days. For a rollup created beside a table that already holds spans, while
    nothing else writes to it (spans inserted meanwhile would be counted twice)."""
    days = run.frame(f"SELECT DISTINCT toDate(Timestamp, 'UTC') AS day FROM {table} "
                     f"WHERE {ROOT} OR {SELECT} OR {CHAT} ORDER BY day")
    for day in days.get("day", []):
        run.command(backfill_sql(table, rollup, pd.Timestamp(day).date()))
    return len(days)
