"""``otel_traces`` in ClickHouse as a :class:`~analytics.source.SpanSource`, with push-down.

Rows (``spans``) are projected with ``SpanAttributes['key']`` and returned in the SQLite
source's shapes (ISO text times, events as JSON), so every pandas analysis runs
unchanged. The report's sections do not pull rows: :meth:`ClickHouseSource.experiment_sums`
and :meth:`~ClickHouseSource.model_sums` compute counts, sums and quantiles in SQL
(see :mod:`analytics.pushdown` for the contract, and the SQLite twin of each query).

How a request is found without a join: amm's recorder makes ``amm.select`` and every
``chat`` span children of the ``invoke_agent`` span, so grouping the three kinds of
span by ``(TraceId, owner)`` (owner: the span itself for an ``invoke_agent`` span, its
parent otherwise) gives one group per request, aggregated in one pass over the parts
of the table the sort key ``(ServiceName, SpanName, ...)`` selects. The group key is a
64-bit hash of the pair (collisions at 10M requests: about 3 in a million runs).
Sums are Kahan-compensated (``sumKahan``) so they agree with SQLite's exact sums.

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

from analytics.clickhouse.runner import ChdbRunner, HttpRunner, Runner, open_runner
from analytics.source import LEDGER_COLUMNS, SPAN_COLUMNS
from telemetry import conventions as cv

__all__ = ["CHUNK_REQUESTS", "ClickHouseSource"]

_CHILD_SLACK = timedelta(minutes=15)  # how long after its request a child span may start
CHUNK_REQUESTS = 1_000_000
"""Requests per group-by of the push-down (whole days are kept together)."""
_ROOT = f"SpanName LIKE '{cv.OP_INVOKE_AGENT} %'"
_CHAT = f"SpanName LIKE '{cv.OP_CHAT} %'"
_SELECT = f"SpanName = '{cv.SPAN_SELECT}'"


def _a(key: str) -> str:
    """An attribute, NULL when absent (the map gives '' for a missing key)."""
    return f"nullIf(SpanAttributes['{key}'], '')"


def _truthy(expr: str) -> str:
    return f"(lower(ifNull({expr}, '')) IN ('true', '1', 'yes'))"


def _time(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"time bound must be timezone-aware, got naive {t.isoformat()}")
    return f"toDateTime64('{t.astimezone(UTC):%Y-%m-%d %H:%M:%S.%f}', 9, 'UTC')"


# The last 'overall' evaluation score on a span's events (NULL if none).
_SCORE = (
    f"toFloat64OrNull(if(arrayLastIndex((n, a) -> n = '{cv.GEN_AI_EVALUATION_RESULT}' AND a['{cv.GEN_AI_EVALUATION_NAME}'] = 'overall', "
    "Events.Name, Events.Attributes) = 0, '', Events.Attributes[arrayLastIndex((n, a) -> "
    f"n = '{cv.GEN_AI_EVALUATION_RESULT}' AND a['{cv.GEN_AI_EVALUATION_NAME}'] = 'overall', Events.Name, Events.Attributes)]['{cv.GEN_AI_EVALUATION_SCORE_VALUE}']))"
)
_MODEL = f"coalesce({_a(cv.GEN_AI_REQUEST_MODEL)}, substring(SpanName, {len(cv.OP_CHAT) + 2}))"
_FAILED = f"(StatusCode = 'Error' OR {_a(cv.ERROR_TYPE)} IS NOT NULL)"


class ClickHouseSource:
    """Spans of the Collector's ``otel_traces`` table (a server or embedded chdb).

    >>> ClickHouseSource.open("chdb:///var/lib/amm-traces").experiment_sums()
    """

    __slots__ = ("runner", "table")
    cost_basis = "spans"
    """Cost is summed from the chat spans' ``amm.cost_usd`` (no ledger table here)."""

    def __init__(self, runner: Runner, table: str = "otel.otel_traces") -> None:
        self.runner = runner
        self.table = table

    @classmethod
    def open(cls, url: str) -> ClickHouseSource:
        """The source of a ``clickhouse://`` or ``chdb://`` URL."""
        runner = open_runner(url)
        return cls(runner, f"`{runner.url.database}`.`{runner.url.table}`")

    def __repr__(self) -> str:
        return f"ClickHouseSource({self.runner!r}, {self.table})"

    def _where(self, since: datetime | None, until: datetime | None) -> str:
        parts = []
        if since is not None:
            parts.append(f"Timestamp >= {_time(since)}")
        if until is not None:
            parts.append(f"Timestamp < {_time(until)}")
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
            + [f"{_a(k)} AS `{k}`" for k in attributes])
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
            f"toString(toDate(Timestamp)) AS day, {_MODEL} AS model_id, "
            f"ifNull({_a(cv.AMM_AGENT_TYPE)}, '') AS agent_type, "
            f"ifNull({_a(cv.AMM_TASK_ID)}, '') AS task_id, "
            f"toInt64OrZero(SpanAttributes['{cv.GEN_AI_USAGE_INPUT_TOKENS}']) AS input_tokens, "
            f"toInt64OrZero(SpanAttributes['{cv.GEN_AI_USAGE_OUTPUT_TOKENS}']) AS output_tokens, "
            f"toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}']) AS cost_usd, "
            f"'span' AS source FROM {self.table} WHERE {_CHAT} "
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
        lower = "" if since is None else f" AND Timestamp >= {_time(since)}"
        days = self.runner.frame(f"SELECT toString(toDate(Timestamp)) AS day, count() AS n "
                                 f"FROM {self.table} WHERE {_ROOT}{lower} GROUP BY day "
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

    def _requests(self, since: datetime | None, until: datetime | None = None) -> str:
        """One row per request: the facts the A/B looks and the totals are built from.

        With ``until``, requests that start in ``[since, until)``: their child spans are
        read up to ``_CHILD_SLACK`` later (the queries below run one chunk of days at a
        time: :meth:`_chunks`)."""
        slack = "" if since is None else f" AND Timestamp >= {_time(since)}"
        window = ""
        if until is not None:
            slack += f" AND Timestamp < {_time(until + _CHILD_SLACK)}"
            window = f" AND time < {_time(until)}"
        return f"""
SELECT time, agent_type, failed, cache_hit, latency_ms, cost, quality,
       nullIf(experiment, '') AS experiment, nullIf(arm, '') AS arm,
       if(honoured_rec != '', {_truthy('honoured_rec')},
          arm != '' AND arm = chosen AND arm = final_model) AS honoured
FROM (
  SELECT cityHash64(TraceId, if(is_root, SpanId, ParentSpanId)) AS req,
    countIf(is_root) AS roots,
    minIf(Timestamp, is_root) AS time,
    anyIf(coalesce({_a(cv.AMM_AGENT_TYPE)}, {_a(cv.GEN_AI_AGENT_NAME)},
                   substring(SpanName, {len(cv.OP_INVOKE_AGENT) + 2})), is_root) AS agent_type,
    maxIf({_FAILED}, is_root) AS failed,
    maxIf({_truthy(_a(cv.AMM_CACHE_HIT))}, is_root) AS cache_hit,
    anyIf(Duration, is_root) / 1e6 AS latency_ms,
    sumKahanIf(toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}']), is_chat) AS cost,
    argMax(score, Timestamp) AS quality,
    argMinIf(SpanAttributes['{cv.AMM_EXPERIMENT_NAME}'], Timestamp, is_select) AS experiment,
    argMinIf(SpanAttributes['{cv.AMM_EXPERIMENT_ARM}'], Timestamp, is_select) AS arm,
    argMinIf(SpanAttributes['amm.selection.arm_honoured'], Timestamp, is_select) AS honoured_rec,
    argMinIf(SpanAttributes['{cv.AMM_SELECTION_CHOSEN}'], Timestamp, is_select) AS chosen,
    argMaxIf(coalesce({_a(cv.GEN_AI_RESPONSE_MODEL)}, {_MODEL}), Timestamp, is_chat)
      AS final_model
  FROM (
    SELECT *, {_ROOT} AS is_root, {_SELECT} AS is_select, {_CHAT} AND NOT is_root AS is_chat,
           if(length(Events.Name) = 0, NULL, {_SCORE}) AS score
    FROM {self.table}
    WHERE ({_ROOT} OR {_SELECT} OR {_CHAT}){slack}
  )
  GROUP BY req
  HAVING roots > 0{window}
)"""

    def experiment_sums(self, since: datetime | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(looks, agents)`` of :func:`analytics.ab.analyse_looks`, computed in SQL."""
        metrics = {
            "quality": "if(failed AND quality IS NULL, 0.0, quality)",
            "success_rate": "toFloat64(NOT failed)",
            "latency_ms": "latency_ms",
            "cost_per_request": "cost",
        }
        sums = ", ".join(
            f"countIf(({e}) IS NOT NULL) AS {m}_n, sumKahan(ifNull({e}, 0.0)) AS {m}_s, "
            f"sumKahan(ifNull({e}, 0.0) * ifNull({e}, 0.0)) AS {m}_q"
            for m, e in metrics.items())
        looks, agents = [], []
        for lo, hi in self._chunks(since):  # a chunk of days per group-by (bounded memory)
            facts = self._requests(lo, hi)
            looks.append(self.runner.frame(f"""
WITH r AS ({facts})
SELECT experiment, arm, toString(toDate(time)) AS day,
       concat(replaceOne(toString(max(time), 'UTC'), ' ', 'T'), 'Z') AS last, {sums}
FROM r WHERE experiment IS NOT NULL AND arm IS NOT NULL AND honoured AND NOT cache_hit
GROUP BY experiment, arm, day ORDER BY experiment, arm, day"""))
            agents.append(self.runner.frame(f"""
WITH r AS ({facts})
SELECT experiment, agent_type, count() AS requests,
       countIf(arm IS NOT NULL AND honoured AND NOT cache_hit) AS randomised
FROM r WHERE experiment IS NOT NULL GROUP BY experiment, agent_type"""))
        return _looks(_concat(looks)), _agents(_concat(agents))

    def model_sums(self) -> pd.DataFrame:
        """Per model over attempts of requests: counts, p50/p95 latency of successes
        (linear interpolation, as pandas), quality and cost sums, failovers away."""
        owned = (f"cityHash64(TraceId, ParentSpanId) IN (SELECT cityHash64(TraceId, SpanId) "
                 f"FROM {self.table} WHERE {_ROOT})")
        table = self.runner.frame(f"""
SELECT model, count() AS attempts, countIf(failed) AS errors,
       quantileExactInclusiveIf(0.5)(Duration, NOT failed) / 1e6 AS p50_latency_ms,
       quantileExactInclusiveIf(0.95)(Duration, NOT failed) / 1e6 AS p95_latency_ms,
       count(score) AS quality_n, sumKahan(ifNull(score, 0.0)) AS quality_s,
       sumKahan(toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}'])) AS cost_usd,
       sum(failovers) AS failovers_n
FROM (
  SELECT Duration, SpanAttributes, {_MODEL} AS model, {_FAILED} AS failed,
         if(length(Events.Name) = 0, NULL, {_SCORE}) AS score,
         countEqual(Events.Name, '{cv.AMM_FAILOVER}') AS failovers
  FROM {self.table} WHERE {_CHAT} AND NOT ({_ROOT}) AND {owned}
) GROUP BY model""")
        away = self.runner.frame(f"""
SELECT a['{cv.AMM_FAILOVER_FROM}'] AS model, count() AS failovers_away
FROM {self.table} ARRAY JOIN Events.Name AS n, Events.Attributes AS a
WHERE n = '{cv.AMM_FAILOVER}' AND (({_CHAT}) OR ({_ROOT}) OR ({_SELECT}))
GROUP BY model""")
        return _model_frame(table, away)

    def totals(self) -> pd.DataFrame:
        """Per day: requests, answered, cache hits, quality n/sum, first/last request, and
        the cost of the day as this source knows it (:attr:`cost_basis`)."""
        df = _concat([self.runner.frame(f"""
WITH r AS ({self._requests(lo, hi)})
SELECT toString(toDate(time)) AS day, count() AS requests,
       countIf(cache_hit OR NOT failed) AS answered, countIf(cache_hit) AS cache_hits,
       count(quality) AS quality_n, sumKahan(ifNull(quality, 0.0)) AS quality_s,
       concat(replaceOne(toString(min(time), 'UTC'), ' ', 'T'), 'Z') AS first,
       concat(replaceOne(toString(max(time), 'UTC'), ' ', 'T'), 'Z') AS last
FROM r GROUP BY day ORDER BY day""") for lo, hi in self._chunks(None)])
        cost = self.runner.frame(f"""
SELECT toString(toDate(Timestamp)) AS day,
       sumKahan(toFloat64OrZero(SpanAttributes['{cv.AMM_COST_USD}'])) AS cost_usd
FROM {self.table} WHERE {_CHAT} GROUP BY day""")
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


def _agents(df: pd.DataFrame) -> pd.DataFrame:
    """Per-day agent counts summed (integers: exact)."""
    if df.empty:
        return pd.DataFrame({"experiment": pd.Series(dtype=object),
                             "agent_type": pd.Series(dtype=object),
                             "requests": pd.Series(dtype="int64"),
                             "randomised": pd.Series(dtype="int64")})
    return (df.groupby(["experiment", "agent_type"], sort=True, dropna=False)[
        ["requests", "randomised"]].sum().reset_index())


def _looks(df: pd.DataFrame) -> pd.DataFrame:
    from analytics.ab import LOOK_COLUMNS

    if df.empty:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in LOOK_COLUMNS})
    df = df.copy()
    df["last"] = pd.to_datetime(df["last"], utc=True, format="ISO8601")
    for c in LOOK_COLUMNS[4:]:
        df[c] = df[c].astype("float64")
    return df[list(LOOK_COLUMNS)]


def _model_frame(table: pd.DataFrame, away: pd.DataFrame) -> pd.DataFrame:
    from analytics.pushdown import MODEL_SUM_COLUMNS

    if table.empty:
        return pd.DataFrame(columns=list(MODEL_SUM_COLUMNS))
    counts = away.set_index("model")["failovers_away"] if not away.empty else pd.Series(
        dtype="int64")
    table = table.assign(failovers_away=table["model"].map(counts).fillna(0).astype("int64"))
    for c in ("p50_latency_ms", "p95_latency_ms"):
        table[c] = table[c].astype("float64").where(table["attempts"] > table["errors"], np.nan)
    return table[list(MODEL_SUM_COLUMNS)]


def _totals_frame(df: pd.DataFrame, cost: pd.DataFrame) -> pd.DataFrame:
    from analytics.pushdown import TOTAL_COLUMNS

    days = sorted(set(df.get("day", [])) | set(cost.get("day", [])))
    out = df.set_index("day").reindex(days) if not df.empty else pd.DataFrame(index=days)
    out["cost_usd"] = (cost.set_index("day")["cost_usd"].reindex(days).fillna(0.0)
                       if not cost.empty else 0.0)
    return out.reset_index(names="day").reindex(columns=list(TOTAL_COLUMNS))


_ = (ChdbRunner, HttpRunner)  # the two runners this source is opened with
