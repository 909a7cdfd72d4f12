"""The demo's store copied into embedded ClickHouse (the Collector exporter's exact DDL)
reports the same numbers as the SQLite store, and the pushed-down SQL agrees with the
row-based pandas analyses."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("chdb")

from analytics.ab import arm_looks
from analytics.clickhouse import ClickHouseSource, export_store
from analytics.load import load_requests, load_store
from analytics.pushdown import model_table_from_sums, open_source
from analytics.report import model_table, report_json

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    data = tmp_path_factory.mktemp("demo")
    subprocess.run([sys.executable, "-m", "amm", "demo", "--requests", "200", "--data-dir",
                    str(data)], check=True, capture_output=True, timeout=240)
    return data / "amm.db"


@pytest.fixture(scope="module")
def chdb_url(demo_store: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    url = f"chdb://{tmp_path_factory.mktemp('chdb')}"
    assert export_store(demo_store, url) > 0
    return url


def test_export_twice_adds_nothing_the_second_time(demo_store, chdb_url):
    assert export_store(demo_store, chdb_url) == 0


def test_report_json_is_the_same_number_for_number(demo_store, chdb_url):
    sqlite_doc = report_json(demo_store)
    clickhouse_doc = report_json(open_source(chdb_url))
    assert sqlite_doc.pop("cost_basis") == "ledger"
    assert clickhouse_doc.pop("cost_basis") == "spans"
    assert json.dumps(clickhouse_doc, sort_keys=True) == json.dumps(sqlite_doc, sort_keys=True)
    assert sqlite_doc["requests"] > 0 and sqlite_doc["experiments"]


def test_the_exported_table_is_read_through_its_request_rollup(chdb_url):
    source = ClickHouseSource.open(chdb_url)
    assert source.path.rollup == "`otel`.`otel_traces_amm_requests`"
    assert "aggregates from the request rollup `otel`.`otel_traces_amm_requests`" in repr(source)


def test_raw_spans_report_the_same_numbers_as_the_store(demo_store, chdb_url):
    raw = ClickHouseSource.open(chdb_url, rollup=False)
    assert raw.path.rollup is None
    doc = report_json(raw)
    doc.pop("cost_basis")
    sqlite_doc = report_json(demo_store)
    sqlite_doc.pop("cost_basis")
    assert json.dumps(doc, sort_keys=True) == json.dumps(sqlite_doc, sort_keys=True)
    a = raw.model_sums().sort_values("model", ignore_index=True)
    b = ClickHouseSource.open(chdb_url).model_sums().sort_values("model", ignore_index=True)
    assert a.equals(b)


def test_looks_since_a_time_are_the_same_on_every_path(demo_store, chdb_url):
    times = load_requests(demo_store)["time"].sort_values()
    since = times.iloc[len(times) // 2].floor("us").to_pydatetime()
    expected, expected_agents = open_source(demo_store).experiment_sums(since)
    assert 0 < expected["quality_n"].sum() < arm_looks(load_requests(demo_store))[
        "quality_n"].sum()
    for rollup in (None, False):
        looks, agents = ClickHouseSource.open(chdb_url, rollup=rollup).experiment_sums(since)
        assert looks.equals(expected), rollup
        assert list(agents["requests"]) == list(expected_agents["requests"])


def test_a_rollup_in_unmerged_pieces_reports_the_same_numbers(demo_store, tmp_path):
    # Batches of 7 spans: most requests' spans land in several insert blocks, so the view
    # writes several partial rows per request and the queries must merge them.
    url = f"chdb://{tmp_path / 'pieces'}"
    assert export_store(demo_store, url, batch=7) > 0
    source = ClickHouseSource.open(url)
    assert source.path.rollup is not None
    parts = source.runner.frame("SELECT count() AS rows, countIf(Roots = 0) AS partial "
                                "FROM otel.otel_traces_amm_requests")
    assert int(parts["partial"][0]) > 0
    doc, sqlite_doc = report_json(source), report_json(demo_store)
    doc.pop("cost_basis"), sqlite_doc.pop("cost_basis")
    assert json.dumps(doc, sort_keys=True) == json.dumps(sqlite_doc, sort_keys=True)


def test_an_incomplete_rollup_is_not_read_until_backfilled(demo_store, chdb_url, tmp_path):
    from analytics.clickhouse.rollup import backfill

    url = f"chdb://{tmp_path / 'late'}"
    export_store(demo_store, url)
    source = ClickHouseSource.open(url)
    source.runner.command("TRUNCATE TABLE otel.otel_traces_amm_requests")
    late = ClickHouseSource.open(url)
    assert late.path.rollup is None
    assert "holds 0 of" in late.path.reason and "backfill" in late.path.reason
    backfill(late.runner, "otel.otel_traces", "otel.otel_traces_amm_requests")
    again = ClickHouseSource.open(url)
    assert again.path.rollup is not None
    assert report_json(again) == report_json(ClickHouseSource.open(chdb_url))


def test_cli_export_then_report_json_matches_the_store(demo_store, tmp_path):
    # Own directory: an embedded engine's directory is locked by the process using it.
    url = f"chdb://{tmp_path / 'cli'}"
    out = subprocess.run([sys.executable, "-m", "amm", "export", "--store", str(demo_store),
                          "--to", url], check=True, capture_output=True, text=True, timeout=120)
    assert "new spans" in out.stdout

    def run(*args: str) -> dict:
        out = subprocess.run([sys.executable, "-m", "amm", "report", "--format", "json", *args],
                             check=True, capture_output=True, text=True, timeout=120)
        return json.loads(out.stdout)

    a, b = run("--store", str(demo_store)), run("--source", url)
    a.pop("cost_basis"), b.pop("cost_basis")
    assert a == b


def test_pushed_down_looks_equal_the_pandas_looks(demo_store, chdb_url):
    pandas_looks = arm_looks(load_requests(demo_store)).reset_index(drop=True)
    for source in (open_source(demo_store), ClickHouseSource.open(chdb_url)):
        looks, _agents = source.experiment_sums()
        assert list(looks["arm"]) == list(pandas_looks["arm"])
        for col in looks.columns[4:]:
            assert looks[col].to_numpy() == pytest.approx(pandas_looks[col].to_numpy(), rel=1e-12)


def test_pushed_down_model_table_equals_the_pandas_one(demo_store, chdb_url):
    expected = model_table(load_store(demo_store)).set_index("model").sort_index()
    for source in (open_source(demo_store), ClickHouseSource.open(chdb_url)):
        got = model_table_from_sums(source.model_sums()).set_index("model").sort_index()
        assert list(got.index) == list(expected.index)
        for col in expected.columns:
            assert got[col].to_numpy(float) == pytest.approx(
                expected[col].to_numpy(float), rel=1e-9, nan_ok=True), col


def test_rows_from_clickhouse_load_like_the_store(demo_store, chdb_url):
    a = load_requests(demo_store).sort_values("span_id", ignore_index=True)
    b = load_requests(ClickHouseSource.open(chdb_url)).sort_values("span_id", ignore_index=True)
    assert len(a) == len(b)
    assert list(a["model"]) == list(b["model"])
    assert b["cost_usd"].to_numpy() == pytest.approx(a["cost_usd"].to_numpy())


def test_missing_extra_is_named(monkeypatch):
    from amm import cli

    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"amm-sdk\[clickhouse\]"):
        cli._open_source("chdb:///tmp/x", "amm report")


def test_spans_in_a_time_window_are_the_stores(demo_store, chdb_url):
    from datetime import timedelta

    from analytics.source import SQLiteSource

    times = load_requests(demo_store)["time"].sort_values()
    since = times.iloc[len(times) // 3].floor("us").to_pydatetime()
    until = since + timedelta(seconds=2)
    a = SQLiteSource(demo_store).spans(["gen_ai.request.model"], since, until)
    b = ClickHouseSource.open(chdb_url).spans(["gen_ai.request.model"], since, until)
    assert 0 < len(b) < len(SQLiteSource(demo_store).spans([]))
    assert sorted(b["SpanId"]) == sorted(a["SpanId"])
    assert sorted(b["Timestamp"]) == sorted(a["Timestamp"])
