"""The loader: spans of a store mapped to requests, attempts, failovers and the ledger."""

from __future__ import annotations

import json
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import pandas as pd
import pytest

from analytics.load import (
    ATTEMPT_COLUMNS,
    FAILOVER_COLUMNS,
    REQUEST_COLUMNS,
    StoreNotFoundError,
    load_attempts,
    load_ledger,
    load_requests,
    load_store,
)
from analytics.source import SpanSource, SQLiteSource
from analytics.synthetic import write_synthetic_store
from telemetry.store_schema import connect, ensure_schema


def _count(path, sql):
    with sqlite3.connect(path) as conn:
        return conn.execute(sql).fetchone()[0]


def test_one_request_row_per_invoke_agent_span(synthetic_truth, synthetic_data):
    spans = _count(synthetic_truth.path,
                   "SELECT COUNT(*) FROM otel_traces WHERE SpanName LIKE 'invoke_agent %'")
    assert len(synthetic_data.requests) == spans == synthetic_truth.requests


def test_one_attempt_row_per_chat_span(synthetic_truth, synthetic_data):
    chats = _count(synthetic_truth.path,
                   "SELECT COUNT(*) FROM otel_traces WHERE SpanName LIKE 'chat %'")
    assert len(synthetic_data.attempts) == chats
    assert synthetic_data.requests["attempts"].sum() == chats


def test_columns_have_the_documented_dtypes(synthetic_data):
    for frame, columns in ((synthetic_data.requests, REQUEST_COLUMNS),
                           (synthetic_data.attempts, ATTEMPT_COLUMNS),
                           (synthetic_data.failovers, FAILOVER_COLUMNS)):
        assert list(frame.columns) == list(columns)
        assert {c: str(frame[c].dtype) for c in columns} == columns
    assert str(synthetic_data.requests["time"].dt.tz) == "UTC"


def test_request_cost_sums_equal_the_ledger(synthetic_data):
    ledger = synthetic_data.ledger
    assert synthetic_data.requests["cost_usd"].sum() == pytest.approx(ledger["cost_usd"].sum(),
                                                                      rel=1e-9)
    by_model = synthetic_data.attempts.groupby("model")["cost_usd"].sum()
    ledger_by_model = ledger.groupby("model_id")["cost_usd"].sum()
    for model, cost in ledger_by_model.items():
        assert by_model[model] == pytest.approx(cost, rel=1e-9)


def test_outcomes_cache_hits_and_failover_paths(synthetic_data):
    r = synthetic_data.requests
    assert set(r["outcome"].unique()) <= {"success", "error", "cache_hit"}
    hits = r[r["cache_hit"]]
    assert (hits["outcome"] == "cache_hit").all() and (hits["attempts"] == 0).all()
    with_failover = r[r["failover_path"].notna()]
    assert len(with_failover) == synthetic_data.failovers["trace_id"].nunique() > 0
    first = with_failover.iloc[0]
    events = synthetic_data.failovers[synthetic_data.failovers["trace_id"] == first["trace_id"]]
    expected = ">".join([events["from_model"].iloc[0], *events["to_model"]])
    assert first["failover_path"] == expected
    assert first["failover_path"].split(">")[-1] == first["model"] or first["outcome"] == "error"


def _span(conn, trace, span, parent, name, start, dur_ms, attrs, status="Unset", events=()):
    conn.execute(
        "INSERT INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, SpanName, Duration,"
        " StatusCode, SpanAttributes, Events) VALUES (?,?,?,?,?,?,?,?,?)",
        (start.strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z", trace, span, parent, name,
         int(dur_ms * 1e6), status, json.dumps(attrs), json.dumps(list(events))))


def _score(name, value):
    return {"Timestamp": "2026-11-20T10:00:02.000000000Z", "Name": "gen_ai.evaluation.result",
            "Attributes": {"gen_ai.evaluation.name": name, "gen_ai.evaluation.score.value": value}}


@pytest.fixture
def hand_store(tmp_path):
    """One request, written by hand: a failed attempt on a, a failover, success on b."""
    path = tmp_path / "hand.db"
    t = datetime(2026, 11, 20, 10, 0, 0, tzinfo=UTC)
    conn = connect(path)
    ensure_schema(conn)
    failover = {"Timestamp": "2026-11-20T10:00:01.000000000Z", "Name": "amm.failover",
                "Attributes": {"amm.failover.from": "a", "amm.failover.to": "b",
                               "amm.failover.reason": "RateLimitError"}}
    _span(conn, "t1", "root", "", "invoke_agent review", t, 2500,
          {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": "review",
           "amm.task_id": "task-1"}, events=[failover])
    _span(conn, "t1", "sel", "root", "amm.select", t, 1,
          {"amm.selection.chosen": "a", "amm.experiment.name": "exp", "amm.experiment.arm": "a",
           "amm.selection.propensity": 0.5, "amm.selection.arm_honoured": False})
    _span(conn, "t1", "c1", "root", "chat a", t + timedelta(milliseconds=5), 300,
          {"gen_ai.operation.name": "chat", "gen_ai.request.model": "a",
           "gen_ai.provider.name": "openai", "amm.attempt": 1, "error.type": "RateLimitError",
           "amm.cost_usd": 0.0}, status="Error")
    _span(conn, "t1", "c2", "root", "chat b", t + timedelta(seconds=1), 1400,
          {"gen_ai.operation.name": "chat", "gen_ai.request.model": "b",
           "gen_ai.response.model": "b-2026", "gen_ai.provider.name": "anthropic",
           "amm.attempt": 1, "gen_ai.usage.input_tokens": 100,
           "gen_ai.usage.output_tokens": 50, "amm.cost_usd": 0.002},
          events=[_score("overall", 0.8), _score("completeness", 0.7),
                  _score("relevance", 0.9), _score("coherence", 0.6)])
    conn.commit()
    conn.close()
    return path


def test_a_hand_written_request_maps_to_every_column(hand_store):
    r = load_requests(hand_store).iloc[0]
    assert (r["agent_type"], r["task_id"], r["model"], r["provider"]) == (
        "review", "task-1", "b-2026", "anthropic")
    assert (r["experiment"], r["arm"], bool(r["arm_honoured"])) == ("exp", "a", False)
    assert r["outcome"] == "success" and pd.isna(r["error_type"]) and not r["cache_hit"]
    assert r["latency_ms"] == pytest.approx(2500)
    assert (r["input_tokens"], r["output_tokens"], r["attempts"]) == (100, 50, 2)
    assert r["cost_usd"] == pytest.approx(0.002)
    assert (r["quality"], r["completeness"], r["relevance"], r["coherence"]) == (
        0.8, 0.7, 0.9, 0.6)
    assert r["failover_path"] == "a>b"
    assert r["time"] == pd.Timestamp("2026-11-20T10:00:00.000000123Z")
    attempts = load_attempts(hand_store)
    assert list(attempts["success"]) == [False, True]
    assert list(attempts["error_type"].fillna("")) == ["RateLimitError", ""]


def test_time_bounds_select_requests_by_start(synthetic_truth):
    since = synthetic_truth.start + timedelta(days=2)
    until = synthetic_truth.start + timedelta(days=3)
    r = load_requests(synthetic_truth.path, since=since, until=until)
    assert len(r) > 0 and r["time"].min() >= since and r["time"].max() < until
    with pytest.raises(ValueError, match="timezone-aware"):
        load_requests(synthetic_truth.path, since=datetime(2026, 11, 20))


def test_missing_store_is_a_clear_error(tmp_path):
    with pytest.raises(StoreNotFoundError, match="no amm store at"):
        load_requests(tmp_path / "nope.db")


def test_store_without_spans_gives_empty_typed_frames(tmp_path):
    path = tmp_path / "empty.db"
    sqlite3.connect(path).close()
    data = load_store(path)
    assert data.requests.empty and list(data.requests.columns) == list(REQUEST_COLUMNS)
    assert data.ledger.empty and data.daily_budget is None


def test_ledger_accepts_iso_timestamps_with_offsets(synthetic_truth):
    ledger = load_ledger(synthetic_truth.path)
    assert str(ledger["time"].dt.tz) == "UTC"
    assert (ledger["time"].dt.strftime("%Y-%m-%d") == ledger["day"]).all()


def test_sqlite_source_is_a_span_source_and_read_only(synthetic_truth):
    source = SQLiteSource(synthetic_truth.path)
    assert isinstance(source, SpanSource)
    conn = source._connect()
    with pytest.raises(sqlite3.OperationalError, match="readonly"):
        conn.execute("DELETE FROM otel_traces")
    conn.close()


@pytest.mark.slow
def test_a_store_of_100k_spans_loads_in_one_pass(tmp_path):
    truth = write_synthetic_store(tmp_path / "big.db", seed=2, days=14, requests_per_day=1800)
    spans = _count(truth.path, "SELECT COUNT(*) FROM otel_traces")
    started = time.perf_counter()
    data = load_store(truth.path)
    elapsed = time.perf_counter() - started
    print(f"\nloaded {spans:,} spans into {len(data.requests):,} requests in {elapsed:.2f} s")
    assert spans > 90_000
    assert len(data.requests) == truth.requests


def test_analytics_imports_neither_amm_nor_opentelemetry():
    import subprocess
    import sys

    code = ("import sys, analytics.load, analytics.ab, analytics.degradation, analytics.cost, "
            "analytics.report, analytics.synthetic; "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'amm', 'opentelemetry'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"
