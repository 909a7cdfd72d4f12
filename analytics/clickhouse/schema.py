"""The OpenTelemetry Collector ClickHouse exporter's ``otel_traces`` table, as its DDL has it.

Taken from the exporter's ``internal/sql_templates/traces_table.sql``
(opentelemetry-collector-contrib, ``exporter/clickhouseexporter``): maps are
``Map(LowCardinality(String), String)`` (every attribute value is text), events and
links are ``Nested`` arrays, ``Duration`` is ``UInt64`` nanoseconds, and the sort key
``(ServiceName, SpanName, toDateTime(Timestamp))`` is why every query here filters on
``SpanName`` first. ``amm export`` creates this table when it is missing; a table the
Collector made (``create_schema: true``) is used as it is.
"""

from __future__ import annotations

__all__ = ["DEFAULT_TABLE", "ROLLUP_SUFFIX", "backfill_script", "init_script", "rollup_ddl",
           "rollup_select", "rollup_table", "traces_ddl"]

DEFAULT_TABLE = "otel_traces"
"""The exporter's default ``traces_table_name``."""

_DDL = """CREATE TABLE IF NOT EXISTS {table} (
    Timestamp DateTime64(9) CODEC(Delta, ZSTD(1)),
    TraceId String CODEC(ZSTD(1)),
    SpanId String CODEC(ZSTD(1)),
    ParentSpanId String CODEC(ZSTD(1)),
    TraceState String CODEC(ZSTD(1)),
    SpanName LowCardinality(String) CODEC(ZSTD(1)),
    SpanKind LowCardinality(String) CODEC(ZSTD(1)),
    ServiceName LowCardinality(String) CODEC(ZSTD(1)),
    ResourceAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    ScopeName String CODEC(ZSTD(1)),
    ScopeVersion String CODEC(ZSTD(1)),
    SpanAttributes Map(LowCardinality(String), String) CODEC(ZSTD(1)),
    Duration UInt64 CODEC(ZSTD(1)),
    StatusCode LowCardinality(String) CODEC(ZSTD(1)),
    StatusMessage String CODEC(ZSTD(1)),
    Events Nested (
        Timestamp DateTime64(9),
        Name LowCardinality(String),
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    Links Nested (
        TraceId String,
        SpanId String,
        TraceState String,
        Attributes Map(LowCardinality(String), String)
    ) CODEC(ZSTD(1)),
    INDEX idx_trace_id TraceId TYPE bloom_filter(0.001) GRANULARITY 1,
    INDEX idx_res_attr_key mapKeys(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_res_attr_value mapValues(ResourceAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_key mapKeys(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_span_attr_value mapValues(SpanAttributes) TYPE bloom_filter(0.01) GRANULARITY 1,
    INDEX idx_duration Duration TYPE minmax GRANULARITY 1
) ENGINE = MergeTree
PARTITION BY toDate(Timestamp)
ORDER BY (ServiceName, SpanName, toDateTime(Timestamp))
{ttl}
SETTINGS index_granularity = 8192, ttl_only_drop_parts = 1"""


def traces_ddl(table: str = DEFAULT_TABLE, ttl_days: int | None = None) -> str:
    """``CREATE TABLE IF NOT EXISTS`` of the exporter's traces table (``db.table`` allowed)."""
    ttl = f"TTL toDateTime(Timestamp) + toIntervalDay({int(ttl_days)})" if ttl_days else ""
    return _DDL.format(table=table, ttl=ttl)


# --- The request rollup: a materialized view beside the exporter's table --------------
#
# The exporter ships one itself (otel_traces_trace_id_ts and its _mv), so a view beside
# the unchanged otel_traces is how a ClickHouse team adds what its queries need. This one
# keeps one row per request (per day it has spans in) with the few typed facts the
# report's A/B, per-model and per-day sections read, so they never scan the attribute
# maps. A request's spans can arrive in different insert blocks (the Collector batches
# by time), so each column is an aggregate state (SimpleAggregateFunction or -State):
# the view writes a partial row per block and request, background merges (or a query's
# GROUP BY Request) combine them.

ROLLUP_SUFFIX = "_amm_requests"
"""The rollup table is named after the traces table: ``otel_traces_amm_requests``."""

_ROLLUP_DDL = """CREATE TABLE IF NOT EXISTS {rollup} (
    Day Date CODEC(Delta, ZSTD(1)),
    Request UInt64 CODEC(ZSTD(1)),
    Roots SimpleAggregateFunction(sum, UInt64) CODEC(ZSTD(1)),
    Time SimpleAggregateFunction(min, Nullable(DateTime64(9))) CODEC(ZSTD(1)),
    AgentType SimpleAggregateFunction(max, String) CODEC(ZSTD(1)),
    Failed SimpleAggregateFunction(max, UInt8) CODEC(ZSTD(1)),
    CacheHit SimpleAggregateFunction(max, UInt8) CODEC(ZSTD(1)),
    Duration SimpleAggregateFunction(max, UInt64) CODEC(ZSTD(1)),
    Cost AggregateFunction(sumKahan, Float64) CODEC(ZSTD(1)),
    Scored SimpleAggregateFunction(max, UInt128) CODEC(ZSTD(1)),
    Selection AggregateFunction(argMin, String, DateTime64(9)) CODEC(ZSTD(1)),
    InExperiment SimpleAggregateFunction(max, UInt8) CODEC(ZSTD(1)),
    FinalModel SimpleAggregateFunction(max, UInt128) CODEC(ZSTD(1)),
    Attempts SimpleAggregateFunction(groupArrayArray, Array(Tuple(
        model String, duration UInt64, failed UInt8, score Nullable(Float64), cost Float64)))
        CODEC(ZSTD(1)),
    FailoversFrom SimpleAggregateFunction(groupArrayArray, Array(String)) CODEC(ZSTD(1))
) ENGINE = AggregatingMergeTree
PARTITION BY Day
ORDER BY Request
{ttl}"""

_ROLLUP_MV = """CREATE MATERIALIZED VIEW IF NOT EXISTS {view} TO {rollup}
AS {select}"""


def rollup_table(table: str, suffix: str = ROLLUP_SUFFIX) -> str:
    """The rollup table beside ``table`` (``db.otel_traces`` ->
    ``db.otel_traces_amm_requests``; backquotes kept); its view adds ``_mv``."""
    if table.endswith("`"):
        return f"{table[:-1]}{suffix}`"
    return f"{table}{suffix}"


def rollup_select(table: str, where: str = "1") -> str:
    """The rollup's rows for the spans of ``table`` matching ``where``: the view's
    SELECT, and the backfill's (``INSERT INTO rollup`` + this, a day at a time)."""
    from analytics.clickhouse.rollup import rollup_select_sql

    return rollup_select_sql(table, where)


def rollup_ddl(table: str = DEFAULT_TABLE, ttl_days: int | None = None) -> list[str]:
    """``CREATE ... IF NOT EXISTS`` of the rollup table and its materialized view (in that
    order) beside the traces table ``table``; run them after :func:`traces_ddl`."""
    rollup = rollup_table(table)
    # Two days longer than the spans' (whose day parts go whole, lazily): the source reads
    # the rollup's rows of the days otel_traces still holds.
    ttl = f"TTL Day + toIntervalDay({int(ttl_days) + 2})" if ttl_days else ""
    return [_ROLLUP_DDL.format(rollup=rollup, ttl=ttl),
            _ROLLUP_MV.format(view=rollup_table(table, ROLLUP_SUFFIX + "_mv"), rollup=rollup,
                              select=rollup_select(table))]


_BACKFILL_DAY = ("Timestamp >= toDateTime64({day:Date}, 9, 'UTC') "
                 "AND Timestamp < toDateTime64({day:Date} + 1, 9, 'UTC')")


def init_script(database: str = "otel", ttl_days: int | None = 30) -> str:
    """The SQL a ClickHouse runs once, before the Collector writes to it: the exporter's
    ``otel_traces`` (the same ``CREATE ... IF NOT EXISTS`` as its ``create_schema``), then
    the rollup and its view (``deploy/collector/initdb/amm_rollup.sql`` is this text)."""
    table = f"{database}.{DEFAULT_TABLE}"
    statements = [f"CREATE DATABASE IF NOT EXISTS {database}", traces_ddl(table, ttl_days),
                  *rollup_ddl(table, ttl_days)]
    return ("-- Written by analytics.clickhouse.schema.init_script(); "
            "tests/test_clickhouse_rollup.py pins it.\n"
            + ";\n\n".join(statements) + ";\n")


def backfill_script(database: str = "otel") -> str:
    """One day of existing spans into the rollup, ``INSERT ... SELECT`` with the view's
    SELECT (``clickhouse-client --param_day=2026-11-01 --queries-file ...``; once per day
    that holds spans from before the view existed)."""
    table = f"{database}.{DEFAULT_TABLE}"
    return ("-- Written by analytics.clickhouse.schema.backfill_script(); "
            "tests/test_clickhouse_rollup.py pins it.\n"
            f"INSERT INTO {rollup_table(table)}\n{rollup_select(table, _BACKFILL_DAY)};\n")
