"""The local store's schema: plain SQLite, no OpenTelemetry import.

Request-level records are spans in the shape of the OpenTelemetry Collector's
ClickHouse exporter table ``otel_traces``, with the map and nested columns stored as
JSON text, so :mod:`analytics` reads this file and a ClickHouse fed by a collector
with the same mapping. Components keep their own tables in the same file
(``amm_cost_ledger``, ``amm_cache``, ``amm_performance``); each creates its own.

Column meanings (as in ClickHouse):
    Timestamp       span start, ISO-8601 UTC with nanoseconds as text ('2026-11-25T23:17:20.123456789Z')
    TraceId, SpanId, ParentSpanId   lowercase hex ('' for a root's parent)
    SpanName, SpanKind ('Client', 'Internal', ...), ServiceName
    Duration        nanoseconds (integer)
    StatusCode      'Unset' | 'Ok' | 'Error'; StatusMessage
    SpanAttributes, ResourceAttributes    JSON objects of attribute -> value
    Events          JSON list of {"Timestamp": ..., "Name": ..., "Attributes": {...}}
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

__all__ = ["BUDGET_DDL", "BUDGET_TABLE", "LEDGER_DDL", "LEDGER_TABLE", "OTEL_TRACES_DDL",
           "connect", "ensure_schema"]

OTEL_TRACES_DDL = """
CREATE TABLE IF NOT EXISTS otel_traces (
    Timestamp          TEXT    NOT NULL,
    TraceId            TEXT    NOT NULL,
    SpanId             TEXT    NOT NULL,
    ParentSpanId       TEXT    NOT NULL DEFAULT '',
    TraceState         TEXT    NOT NULL DEFAULT '',
    SpanName           TEXT    NOT NULL,
    SpanKind           TEXT    NOT NULL DEFAULT 'Internal',
    ServiceName        TEXT    NOT NULL DEFAULT '',
    ResourceAttributes TEXT    NOT NULL DEFAULT '{}',
    ScopeName          TEXT    NOT NULL DEFAULT '',
    ScopeVersion       TEXT    NOT NULL DEFAULT '',
    SpanAttributes     TEXT    NOT NULL DEFAULT '{}',
    Duration           INTEGER NOT NULL DEFAULT 0,
    StatusCode         TEXT    NOT NULL DEFAULT 'Unset',
    StatusMessage      TEXT    NOT NULL DEFAULT '',
    Events             TEXT    NOT NULL DEFAULT '[]',
    Links              TEXT    NOT NULL DEFAULT '[]',
    PRIMARY KEY (TraceId, SpanId)
);
CREATE INDEX IF NOT EXISTS otel_traces_time ON otel_traces (Timestamp);
CREATE INDEX IF NOT EXISTS otel_traces_name ON otel_traces (SpanName, Timestamp);
"""


LEDGER_TABLE = "amm_cost_ledger"
"""The cost ledger: one row per billed provider call (exact, independent of sampling)."""

LEDGER_DDL = f"""
CREATE TABLE IF NOT EXISTS {LEDGER_TABLE} (
    id            TEXT    PRIMARY KEY,   -- client-made, so a replayed batch is ignored
    ts            TEXT    NOT NULL,      -- ISO-8601 UTC
    day           TEXT    NOT NULL,      -- UTC day, YYYY-MM-DD (the budget's day)
    model_id      TEXT    NOT NULL,
    agent_type    TEXT    NOT NULL,
    task_id       TEXT    NOT NULL,
    input_tokens  INTEGER NOT NULL,
    output_tokens INTEGER NOT NULL,
    cost_usd      REAL    NOT NULL,
    source        TEXT    NOT NULL       -- 'attempt' (a provider call) or 'record_cost'
);
CREATE INDEX IF NOT EXISTS {LEDGER_TABLE}_day ON {LEDGER_TABLE} (day);
CREATE INDEX IF NOT EXISTS {LEDGER_TABLE}_ts ON {LEDGER_TABLE} (ts);
"""


BUDGET_TABLE = "amm_budget"
"""The daily budget in force, one row per UTC day (the newest is the current one)."""

BUDGET_DDL = f"""
CREATE TABLE IF NOT EXISTS {BUDGET_TABLE} (
    day              TEXT PRIMARY KEY,   -- UTC day, YYYY-MM-DD
    daily_budget_usd REAL NOT NULL
);
"""


def connect(path: str | Path, *, readonly: bool = False, timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open the store. Writers get WAL mode, so readers in other processes (the
    dashboard) never block them; ``readonly`` opens with ``mode=ro``."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s,
                               check_same_thread=False)
    else:
        path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the ``otel_traces`` table and its indexes if they are missing."""
    conn.executescript(OTEL_TRACES_DDL)
    conn.commit()
