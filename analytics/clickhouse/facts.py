"""One row per request, in ClickHouse SQL: what the A/B looks and the day totals sum.

How a request is found without a join: amm's recorder makes ``amm.select`` and every
``chat`` span children of the ``invoke_agent`` span, so grouping the three kinds of
span by ``(TraceId, owner)`` (owner: the span itself for an ``invoke_agent`` span, its
parent otherwise) gives one group per request. The group key is a 64-bit hash of the
pair (collisions at 10M requests: about 3 in a million runs).

Why the query has this shape (measured on 29M spans, see ``docs/fleet_analytics.md``):

- each kind of span is read by its own branch of a ``UNION ALL`` that reads only its
  own attributes (``SpanAttributes['k']`` scans the map: a lookup per row per key), and
  each attribute is read once per span, not once per aggregate that uses it;
- the group-by is the expensive step (about a microsecond per input row with these
  aggregates), so with ``experiments_only`` only the spans of requests whose
  ``amm.select`` names an experiment reach it (one ``IN`` set, built once per query);
- the values that come from one span (the first ``amm.select``'s four attributes) are
  one ``argMin`` of a tuple, so they stay from the same span;
- a request's cost is ``sumKahan`` of its chat spans' costs: the correctly rounded sum
  (SQLite's ``fsum``) for one or two attempts, and within an ulp of it beyond.

The caller runs the query a chunk of days at a time (bounded memory) and groups the
result by what it reports; sums are exact (:mod:`analytics.clickhouse.exact`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from telemetry import conventions as cv

__all__ = ["AGENT", "CHAT", "CHILD_SLACK", "FAILED", "MODEL", "PACKED_SCORE", "ROOT", "SCORE",
           "SELECT", "SELECTION", "UNPACKED_SCORE", "attr", "requests_sql", "time_sql",
           "truthy"]

CHILD_SLACK = timedelta(minutes=15)
"""How long after its request a child span may start (chunks read this much further)."""
ROOT = f"SpanName LIKE '{cv.OP_INVOKE_AGENT} %'"
CHAT = f"SpanName LIKE '{cv.OP_CHAT} %'"
SELECT = f"SpanName = '{cv.SPAN_SELECT}'"


def attr(key: str) -> str:
    """An attribute, NULL when absent (the map gives '' for a missing key)."""
    return f"nullIf(SpanAttributes['{key}'], '')"


def truthy(expr: str) -> str:
    """SQL: ``expr`` (text or NULL) says yes."""
    return f"(lower(ifNull({expr}, '')) IN ('true', '1', 'yes'))"


def time_sql(t: datetime) -> str:
    """A timezone-aware time as a ``DateTime64(9)`` literal."""
    if t.tzinfo is None:
        raise ValueError(f"time bound must be timezone-aware, got naive {t.isoformat()}")
    return f"toDateTime64('{t.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC')"


# The last 'overall' evaluation score on a span's events (NULL if none): index 0 (no such
# event) gives the empty map, whose missing value '' parses to NULL.
_OVERALL = (f"arrayLastIndex((n, a) -> n = '{cv.GEN_AI_EVALUATION_RESULT}' AND "
            f"a['{cv.GEN_AI_EVALUATION_NAME}'] = 'overall', Events.Name, Events.Attributes)")
SCORE = (f"if(length(Events.Name) = 0, NULL, toFloat64OrNull(Events.Attributes[{_OVERALL}]"
         f"['{cv.GEN_AI_EVALUATION_SCORE_VALUE}']))")
MODEL = f"coalesce({attr(cv.GEN_AI_REQUEST_MODEL)}, substring(SpanName, {len(cv.OP_CHAT) + 2}))"
FAILED = f"(StatusCode = 'Error' OR {attr(cv.ERROR_TYPE)} IS NOT NULL)"
AGENT = (f"coalesce({attr(cv.AMM_AGENT_TYPE)}, {attr(cv.GEN_AI_AGENT_NAME)}, "
         f"substring(SpanName, {len(cv.OP_INVOKE_AGENT) + 2}))")
# The first amm.select's four attributes travel as one NUL-separated string: one String
# state per request (a tuple would take the group-by's slow generic path).
SELECTION = ("concat(" + ", '\\0', ".join(
    f"SpanAttributes['{k}']" for k in (cv.AMM_EXPERIMENT_NAME, cv.AMM_EXPERIMENT_ARM,
                                       cv.AMM_SELECTION_ARM_HONOURED, cv.AMM_SELECTION_CHOSEN))
              + ")")
_NO_SELECTION = "''"
# The last score by time, as the max of (time in ns << 64 | the score's bits): a
# fixed-size state instead of argMax over a Nullable (0: no score).
PACKED_SCORE = ("bitShiftLeft(toUInt128(toUInt64(toUnixTimestamp64Nano(Timestamp))), 64) "
                "+ reinterpretAsUInt64(assumeNotNull(score))")
UNPACKED_SCORE = ("if(scored = 0, NULL, "
                  "reinterpretAsFloat64(toUInt64(bitAnd(scored, 18446744073709551615))))")


def requests_sql(table: str, lo: datetime, hi: datetime, *, experiments_only: bool) -> str:
    """Requests that start in ``[lo, hi)``: ``time, agent_type, failed, cache_hit,
    latency_ms, cost, quality, experiment, arm, honoured``; child spans are read up to
    :data:`CHILD_SLACK` after ``hi``. ``experiments_only``: only requests whose
    ``amm.select`` names an experiment (what the A/B section needs)."""
    roots = f"Timestamp >= {time_sql(lo)} AND Timestamp < {time_sql(hi)}"
    kids = f"Timestamp >= {time_sql(lo)} AND Timestamp < {time_sql(hi + CHILD_SLACK)}"
    only = (f"\n  WHERE req IN (SELECT cityHash64(TraceId, ParentSpanId) FROM {table} "
            f"WHERE {SELECT} AND {kids} AND SpanAttributes['{cv.AMM_EXPERIMENT_NAME}'] != '')"
            if experiments_only else "")
    # kind 0: invoke_agent (s: agent type, f: latency), 1: amm.select, 2: chat (s: model,
    # f: cost); b1/b2: failed/cache hit of the root.
    return f"""
SELECT time, agent_type, failed, cache_hit, latency_ms, cost, {UNPACKED_SCORE} AS quality,
       nullIf(sel[1], '') AS experiment, nullIf(sel[2], '') AS arm,
       if(sel[3] != '', {truthy('sel[3]')},
          sel[2] != '' AND sel[2] = sel[4] AND cityHash64(sel[2]) = final_model) AS honoured
FROM (
  SELECT req, countIf(kind = 0) AS roots, minIf(Timestamp, kind = 0) AS time,
    anyIf(s, kind = 0) AS agent_type, maxIf(b1, kind = 0) AS failed,
    maxIf(b2, kind = 0) AS cache_hit, anyIf(f, kind = 0) AS latency_ms,
    sumKahanIf(f, kind = 2) AS cost,
    maxIf({PACKED_SCORE}, score IS NOT NULL) AS scored,
    splitByChar('\\0', argMinIf(t4, Timestamp, kind = 1)) AS sel,
    argMaxIf(cityHash64(s), Timestamp, kind = 2) AS final_model
  FROM (
    SELECT cityHash64(TraceId, SpanId) AS req, 0 AS kind, Timestamp, {AGENT} AS s,
      Duration / 1e6 AS f, {FAILED} AS b1, {truthy(attr(cv.AMM_CACHE_HIT))} AS b2,
      {_NO_SELECTION} AS t4, {SCORE} AS score
    FROM {table} WHERE {ROOT} AND {roots}
    UNION ALL
    SELECT cityHash64(TraceId, ParentSpanId) AS req, 1 AS kind, Timestamp, '' AS s, 0 AS f,
      false AS b1, false AS b2, {SELECTION} AS t4, {SCORE} AS score
    FROM {table} WHERE {SELECT} AND {kids}
    UNION ALL
    SELECT cityHash64(TraceId, ParentSpanId) AS req, 2 AS kind, Timestamp,
      coalesce({attr(cv.GEN_AI_RESPONSE_MODEL)}, {MODEL}) AS s,
      toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}']) AS f, false AS b1, false AS b2,
      {_NO_SELECTION} AS t4, {SCORE} AS score
    FROM {table} WHERE {CHAT} AND NOT {ROOT} AND {kids}
  ){only}
  GROUP BY req HAVING roots > 0
)"""
