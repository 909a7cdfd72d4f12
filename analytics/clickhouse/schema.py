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

__all__ = ["DEFAULT_TABLE", "traces_ddl"]

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
