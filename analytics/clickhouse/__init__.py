"""Fleet analytics over the OpenTelemetry Collector's ClickHouse table ``otel_traces``.

Needs the ``amm-sdk[clickhouse]`` extra (clickhouse-connect for a server, chdb for the
embedded engine). :class:`ClickHouseSource` reads, :func:`export_store` copies a local
store into the exporter's schema (:func:`traces_ddl`) and adds the request rollup's
materialized view beside it (:func:`rollup_ddl`, :func:`ensure_rollup`).
"""

from analytics.clickhouse.export import export_store
from analytics.clickhouse.rollup import backfill, ensure_rollup
from analytics.clickhouse.runner import ClickHouseError, MissingExtraError, open_runner, parse_url
from analytics.clickhouse.schema import DEFAULT_TABLE, rollup_ddl, rollup_table, traces_ddl
from analytics.clickhouse.source import ClickHouseSource

__all__ = ["DEFAULT_TABLE", "ClickHouseError", "ClickHouseSource", "MissingExtraError",
           "backfill", "ensure_rollup", "export_store", "open_runner", "parse_url",
           "rollup_ddl", "rollup_table", "traces_ddl"]
