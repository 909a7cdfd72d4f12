"""The push-down queries of the SQLite store: the same definitions as ClickHouse's.

:mod:`analytics.clickhouse.source` documents what a request is in SQL; here each part
(first ``amm.select``, chat sums, last ``overall`` score) is a window or group-by over
the same three kinds of span, joined on ``(TraceId, owner)``. Sums are exact
(``math.fsum`` as an SQLite aggregate), quantiles interpolate as ClickHouse's
``quantileExactInclusive`` does, so both sources give the same numbers.
"""

from __future__ import annotations

import math
import sqlite3
from datetime import datetime

import pandas as pd

from telemetry import conventions as cv

__all__ = ["experiment_sums", "model_sums", "register", "totals"]

_ROOT = f"SpanName LIKE '{cv.OP_INVOKE_AGENT} %'"
_CHAT = f"SpanName LIKE '{cv.OP_CHAT} %'"
_SELECT = f"SpanName = '{cv.SPAN_SELECT}'"


def _a(key: str) -> str:
    return f"json_extract(SpanAttributes, '$.\"{key}\"')"


def _truthy(expr: str) -> str:
    return (f"(CASE WHEN typeof({expr}) IN ('integer', 'real') THEN {expr} != 0 "
            f"ELSE lower(coalesce({expr}, '')) IN ('true', '1', 'yes') END)")


_SCORE = f"""(SELECT json_extract(e.value, '$.Attributes."{cv.GEN_AI_EVALUATION_SCORE_VALUE}"')
  FROM json_each(Events) e
  WHERE json_extract(e.value, '$.Name') = '{cv.GEN_AI_EVALUATION_RESULT}'
    AND json_extract(e.value, '$.Attributes."{cv.GEN_AI_EVALUATION_NAME}"') = 'overall'
  ORDER BY e.key DESC LIMIT 1)"""
_MODEL = f"coalesce({_a(cv.GEN_AI_REQUEST_MODEL)}, substr(SpanName, {len(cv.OP_CHAT) + 2}))"
_FAILED = f"(StatusCode = 'Error' OR {_a(cv.ERROR_TYPE)} IS NOT NULL)"


class _FSum:
    """Exactly rounded sum (math.fsum): the order rows arrive in cannot change it."""

    def __init__(self) -> None:
        self.values: list[float] = []

    def step(self, value: float | None) -> None:
        if value is not None:
            self.values.append(value)

    def finalize(self) -> float:
        return math.fsum(self.values)


def register(conn: sqlite3.Connection) -> sqlite3.Connection:
    """Add ``fsum`` to a connection."""
    conn.create_aggregate("fsum", 1, _FSum)  # type: ignore[arg-type]
    return conn


def _iso(t: datetime) -> str:
    from analytics.source import _iso as iso

    return iso(t)


def _requests(since: datetime | None) -> tuple[str, list[str]]:
    where = f"({_ROOT} OR {_SELECT} OR {_CHAT})"
    params = []
    if since is not None:
        where += " AND Timestamp >= ?"
        params.append(_iso(since))
    sql = f"""
s AS (
  SELECT TraceId, SpanId, Timestamp, Duration, StatusCode, SpanName, SpanAttributes,
         {_ROOT} AS is_root, {_SELECT} AS is_select, ({_CHAT} AND NOT {_ROOT}) AS is_chat,
         CASE WHEN {_ROOT} THEN SpanId ELSE ParentSpanId END AS owner,
         CASE WHEN Events != '[]' AND Events != '' THEN {_SCORE} END AS score
  FROM otel_traces WHERE {where}
),
roots AS (
  SELECT TraceId, owner, min(Timestamp) AS time,
    coalesce({_a(cv.AMM_AGENT_TYPE)}, {_a(cv.GEN_AI_AGENT_NAME)},
             substr(SpanName, {len(cv.OP_INVOKE_AGENT) + 2})) AS agent_type,
    max({_FAILED}) AS failed, max({_truthy(_a(cv.AMM_CACHE_HIT))}) AS cache_hit,
    Duration / 1e6 AS latency_ms
  FROM s WHERE is_root GROUP BY TraceId, owner
),
sel AS (
  SELECT TraceId, owner, {_a(cv.AMM_EXPERIMENT_NAME)} AS experiment,
         {_a(cv.AMM_EXPERIMENT_ARM)} AS arm, {_a('amm.selection.arm_honoured')} AS honoured_rec,
         {_a(cv.AMM_SELECTION_CHOSEN)} AS chosen,
         row_number() OVER (PARTITION BY TraceId, owner ORDER BY Timestamp) AS k
  FROM s WHERE is_select
),
chats AS (
  SELECT TraceId, owner, fsum(coalesce(CAST({_a(cv.AMM_COST_USD)} AS REAL), 0.0)) AS cost
  FROM s WHERE is_chat GROUP BY TraceId, owner
),
final AS (
  SELECT TraceId, owner, coalesce({_a(cv.GEN_AI_RESPONSE_MODEL)}, {_MODEL}) AS model,
         row_number() OVER (PARTITION BY TraceId, owner ORDER BY Timestamp DESC) AS k
  FROM s WHERE is_chat
),
scored AS (
  SELECT TraceId, owner, CAST(score AS REAL) AS quality,
         row_number() OVER (PARTITION BY TraceId, owner ORDER BY Timestamp DESC) AS k
  FROM s WHERE score IS NOT NULL
),
r AS (
  SELECT r.time, r.agent_type, r.failed, r.cache_hit, r.latency_ms,
         coalesce(c.cost, 0.0) AS cost, q.quality, sel.experiment, sel.arm,
         CASE WHEN sel.honoured_rec IS NOT NULL THEN {_truthy('sel.honoured_rec')}
              ELSE coalesce(sel.arm = sel.chosen AND sel.arm = f.model, 0) END AS honoured
  FROM roots r
  LEFT JOIN sel ON sel.TraceId = r.TraceId AND sel.owner = r.owner AND sel.k = 1
  LEFT JOIN chats c ON c.TraceId = r.TraceId AND c.owner = r.owner
  LEFT JOIN final f ON f.TraceId = r.TraceId AND f.owner = r.owner AND f.k = 1
  LEFT JOIN scored q ON q.TraceId = r.TraceId AND q.owner = r.owner AND q.k = 1
)"""
    return sql, params


_METRICS = {
    "quality": "CASE WHEN failed AND quality IS NULL THEN 0.0 ELSE quality END",
    "success_rate": "CAST(NOT failed AS REAL)",
    "latency_ms": "latency_ms",
    "cost_per_request": "cost",
}


def experiment_sums(conn: sqlite3.Connection, since: datetime | None
                    ) -> tuple[pd.DataFrame, pd.DataFrame]:
    from analytics.ab import LOOK_COLUMNS

    facts, params = _requests(since)
    sums = ", ".join(f"count({e}) AS {m}_n, fsum({e}) AS {m}_s, fsum(({e}) * ({e})) AS {m}_q"
                     for m, e in _METRICS.items())
    looks = pd.read_sql_query(f"""WITH {facts}
SELECT experiment, arm, substr(time, 1, 10) AS day, max(time) AS last, {sums}
FROM r WHERE experiment IS NOT NULL AND arm IS NOT NULL AND honoured AND NOT cache_hit
GROUP BY experiment, arm, day ORDER BY experiment, arm, day""", conn, params=params)
    agents = pd.read_sql_query(f"""WITH {facts}
SELECT experiment, agent_type, count(*) AS requests,
       sum(arm IS NOT NULL AND honoured AND NOT cache_hit) AS randomised
FROM r WHERE experiment IS NOT NULL GROUP BY experiment, agent_type""", conn, params=params)
    looks["last"] = pd.to_datetime(looks["last"], utc=True, format="ISO8601")
    for c in LOOK_COLUMNS[4:]:
        looks[c] = looks[c].astype("float64")
    return looks[list(LOOK_COLUMNS)], agents


def _quantile(p: float) -> str:
    # analytics.stats.latency_quantiles in SQL, as ClickHouse's quantileExactInclusive
    # computes it: h = p (n - 1) + 1, x[n] + (h - n)(x[n+1] - x[n]).
    h = f"({p} * (cnt - 1) + 1)"
    return (f"(max(CASE WHEN i = CAST({h} AS INTEGER) THEN d END) + ({h} - CAST({h} AS INTEGER))"
            f" * coalesce(max(CASE WHEN i = CAST({h} AS INTEGER) + 1 THEN d END)"
            f" - max(CASE WHEN i = CAST({h} AS INTEGER) THEN d END), 0))")


def model_sums(conn: sqlite3.Connection) -> pd.DataFrame:
    from analytics.pushdown import MODEL_SUM_COLUMNS

    attempts = f"""
a AS (
  SELECT c.Duration AS d, {_MODEL.replace('SpanAttributes', 'c.SpanAttributes').replace(
      'SpanName', 'c.SpanName')} AS model,
         {_FAILED.replace('StatusCode', 'c.StatusCode').replace('SpanAttributes',
                                                                 'c.SpanAttributes')} AS failed,
         CASE WHEN c.Events != '[]' AND c.Events != '' THEN
           (SELECT json_extract(e.value, '$.Attributes."{cv.GEN_AI_EVALUATION_SCORE_VALUE}"')
            FROM json_each(c.Events) e
            WHERE json_extract(e.value, '$.Name') = '{cv.GEN_AI_EVALUATION_RESULT}'
              AND json_extract(e.value, '$.Attributes."{cv.GEN_AI_EVALUATION_NAME}"') = 'overall'
            ORDER BY e.key DESC LIMIT 1) END AS score,
         CAST({_a(cv.AMM_COST_USD).replace('SpanAttributes', 'c.SpanAttributes')} AS REAL) AS cost
  FROM otel_traces c JOIN otel_traces p
    ON p.TraceId = c.TraceId AND p.SpanId = c.ParentSpanId AND p.{_ROOT}
  WHERE c.{_CHAT} AND NOT c.{_ROOT}
)"""
    table = pd.read_sql_query(f"""WITH {attempts},
ranked AS (SELECT model, d, row_number() OVER (PARTITION BY model ORDER BY d) AS i,
                  count(*) OVER (PARTITION BY model) AS cnt FROM a),
q AS (SELECT model, {_quantile(0.5)} / 1e6 AS p50_latency_ms,
             {_quantile(0.95)} / 1e6 AS p95_latency_ms FROM ranked GROUP BY model, cnt)
SELECT a.model, count(*) AS attempts, sum(failed) AS errors,
       (SELECT p50_latency_ms FROM q WHERE q.model = a.model) AS p50_latency_ms,
       (SELECT p95_latency_ms FROM q WHERE q.model = a.model) AS p95_latency_ms,
       count(score) AS quality_n, fsum(CAST(score AS REAL)) AS quality_s,
       fsum(coalesce(cost, 0.0)) AS cost_usd
FROM a GROUP BY a.model""", conn)
    away = pd.read_sql_query(f"""
SELECT json_extract(e.value, '$.Attributes."{cv.AMM_FAILOVER_FROM}"') AS model,
       count(*) AS failovers_away
FROM otel_traces t, json_each(t.Events) e
WHERE ({_ROOT} OR {_SELECT} OR {_CHAT}) AND t.Events LIKE '%{cv.AMM_FAILOVER}%'
  AND json_extract(e.value, '$.Name') = '{cv.AMM_FAILOVER}'
GROUP BY model""", conn)
    counts = away.set_index("model")["failovers_away"]
    table["failovers_away"] = table["model"].map(counts).fillna(0).astype("int64")
    return table[list(MODEL_SUM_COLUMNS)]


def totals(conn: sqlite3.Connection, ledger: bool) -> pd.DataFrame:
    from analytics.pushdown import TOTAL_COLUMNS

    facts, params = _requests(None)
    df = pd.read_sql_query(f"""WITH {facts}
SELECT substr(time, 1, 10) AS day, count(*) AS requests,
       sum(cache_hit OR NOT failed) AS answered, sum(cache_hit) AS cache_hits,
       count(quality) AS quality_n, fsum(quality) AS quality_s,
       min(time) AS first, max(time) AS last
FROM r GROUP BY day ORDER BY day""", conn, params=params)
    cost = (pd.read_sql_query("SELECT day, fsum(cost_usd) AS cost_usd FROM amm_cost_ledger "
                              "GROUP BY day", conn) if ledger
            else pd.DataFrame(columns=["day", "cost_usd"]))
    days = sorted(set(df["day"]) | set(cost["day"]))
    out = df.set_index("day").reindex(days)
    out["cost_usd"] = cost.set_index("day")["cost_usd"].reindex(days).fillna(0.0)
    return out.reset_index(names="day").reindex(columns=list(TOTAL_COLUMNS))
