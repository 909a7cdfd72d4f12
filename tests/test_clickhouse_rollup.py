"""The request rollup's DDL as shipped in deploy/, and its backfill: a ClickHouse that
ran the init script and a rollup rebuilt from existing spans give the same report."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("chdb")

from analytics.clickhouse import ClickHouseSource, open_runner
from analytics.clickhouse.schema import backfill_script, init_script
from analytics.report import report_json
from benchmarks.clickhouse_scale import _gen_sql

DEPLOY = Path(__file__).resolve().parents[1] / "deploy" / "collector"
TABLE = "otel.otel_traces"


def test_the_deploy_scripts_are_the_schema_modules():
    assert (DEPLOY / "initdb" / "amm_rollup.sql").read_text() == init_script()
    assert (DEPLOY / "amm_rollup_backfill.sql").read_text() == backfill_script()


def test_the_rollup_ddl_has_every_column_the_queries_read():
    from analytics.clickhouse.rollup import ROLLUP_COLUMNS
    from analytics.clickhouse.schema import rollup_ddl

    table_ddl = rollup_ddl(TABLE)[0]
    assert all(f"\n    {c} " in table_ddl for c in ROLLUP_COLUMNS)


def test_compose_runs_the_init_script_in_clickhouse():
    compose = (DEPLOY / "compose.yaml").read_text()
    assert "./initdb:/docker-entrypoint-initdb.d:ro" in compose


def _run_script(run, text: str) -> None:
    for statement in text.split(";\n"):
        body = "\n".join(line for line in statement.splitlines() if not line.startswith("--"))
        if body.strip():
            run.command(body)


@pytest.mark.slow
def test_init_script_then_spans_then_a_backfill_give_the_same_report(tmp_path):
    url = f"chdb://{tmp_path / 'ch'}"
    run = open_runner(url)
    _run_script(run, init_script())
    step_ns = 3 * 86_400 * 10**9 // 3_000  # 3,000 requests over the last three days
    # Recent days: the deploy DDL's TTL (30 days) would drop older spans.
    start_ns = (int(time.time()) // 86_400 - 3) * 86_400 * 10**9
    for first in range(0, 3_000, 1_000):
        for sql in _gen_sql(TABLE, first, 1_000, step_ns, start_ns):
            run.command(sql)
    filled = ClickHouseSource.open(url)
    assert filled.path.rollup is not None
    before = report_json(filled)
    assert before["requests"] == 3_000 and before["experiments"]

    run.command("ALTER TABLE otel.otel_traces_amm_requests DROP COLUMN FailoversFrom")
    older = ClickHouseSource.open(url).path
    assert older.rollup is None and "has no FailoversFrom; recreate it" in older.reason
    run.command("DROP VIEW otel.otel_traces_amm_requests_mv")
    run.command("DROP TABLE otel.otel_traces_amm_requests")
    _run_script(run, init_script())
    assert ClickHouseSource.open(url).path.rollup is None  # empty: holds 0 of 3,000
    days = run.frame(f"SELECT DISTINCT toString(toDate(Timestamp)) AS d FROM {TABLE}")["d"]
    for day in days:
        _run_script(run, backfill_script().replace("{day:Date}", f"toDate('{day}')"))
    rebuilt = ClickHouseSource.open(url)
    assert rebuilt.path.rollup is not None
    assert report_json(rebuilt) == before
    assert report_json(ClickHouseSource.open(url, rollup=False)) == before
