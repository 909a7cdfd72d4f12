"""The local store's schema: plain SQLite, no OpenTelemetry import.

Request-level records are spans in the shape of the OpenTelemetry Collector's
ClickHouse exporter table ``otel_traces``, with the map and nested columns stored as
JSON text, so :mod:`analytics` reads this file and a ClickHouse fed by a collector
with the same mapping. Components keep their own tables in the same file
(``amm_cost_ledger``, ``amm_budget``, ``amm_budget_alerts``, ``amm_performance``,
``amm_cache``), all defined here: :data:`STORE_DDL` is the whole of ``amm.db`` and
:func:`ensure_store_schema` creates it.

Every connection goes through :func:`connect`, which makes the file private: a data
directory it creates is 0700, ``amm.db`` and its ``-wal``/``-shm`` files are 0600
(SQLite gives those the main file's mode), and an existing file of ours with group
or other bits is tightened. A stricter umask is respected (bits are only removed).

Column meanings (as in ClickHouse):
    Timestamp       span start, ISO-8601 UTC with nanoseconds as text
                    ('2026-11-25T23:17:20.123456789Z')
    TraceId, SpanId, ParentSpanId   lowercase hex ('' for a root's parent)
    SpanName, SpanKind ('Client', 'Internal', ...), ServiceName
    Duration        nanoseconds (integer)
    StatusCode      'Unset' | 'Ok' | 'Error'; StatusMessage
    SpanAttributes, ResourceAttributes    JSON objects of attribute -> value
    Events          JSON list of {"Timestamp": ..., "Name": ..., "Attributes": {...}}
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
from pathlib import Path

__all__ = ["ALERTS_DDL", "ALERTS_TABLE", "BUDGET_DDL", "BUDGET_TABLE", "CACHE_DDL", "CACHE_TABLE",
           "LEDGER_DDL", "LEDGER_TABLE", "OTEL_TRACES_DDL", "PERFORMANCE_DDL",
           "PERFORMANCE_TABLE", "STORE_DDL", "connect", "ensure_schema", "ensure_store_schema",
           "make_private_dir"]

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
    source        TEXT    NOT NULL       -- 'attempt' (a provider call), 'attempt:estimated'
                                         -- (its usage was not reported: amm's estimate),
                                         -- or 'record_cost'
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


ALERTS_TABLE = "amm_budget_alerts"
"""The budget alerts fired, one row per (day, threshold)."""

ALERTS_DDL = f"""
CREATE TABLE IF NOT EXISTS {ALERTS_TABLE} (
    day       TEXT NOT NULL,
    threshold REAL NOT NULL,
    fired_at  TEXT NOT NULL,
    PRIMARY KEY (day, threshold)
);
"""

PERFORMANCE_TABLE = "amm_performance"
"""One row per attempt (latency_ms set) or per quality score (quality_score set)."""

PERFORMANCE_DDL = f"""
CREATE TABLE IF NOT EXISTS {PERFORMANCE_TABLE} (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    ts            REAL    NOT NULL,  -- epoch seconds
    model_id      TEXT    NOT NULL,
    agent_type    TEXT    NOT NULL DEFAULT '',
    task_id       TEXT    NOT NULL DEFAULT '',
    latency_ms    REAL,              -- NULL: a quality-only row
    success       INTEGER,
    error_type    TEXT,
    cost_usd      REAL    NOT NULL DEFAULT 0,
    input_tokens  INTEGER NOT NULL DEFAULT 0,
    output_tokens INTEGER NOT NULL DEFAULT 0,
    quality_score REAL               -- NULL: not evaluated
);
CREATE INDEX IF NOT EXISTS {PERFORMANCE_TABLE}_model_ts ON {PERFORMANCE_TABLE} (model_id, ts);
CREATE INDEX IF NOT EXISTS {PERFORMANCE_TABLE}_ts ON {PERFORMANCE_TABLE} (ts);
"""

CACHE_TABLE = "amm_cache"
"""The response cache's second level (JSON payloads, never pickle)."""

CACHE_DDL = f"""
CREATE TABLE IF NOT EXISTS {CACHE_TABLE} (
    key         TEXT PRIMARY KEY,
    payload     TEXT NOT NULL,
    size_bytes  INTEGER NOT NULL,
    cached_at   REAL NOT NULL,
    expires_at  REAL NOT NULL,
    last_access REAL NOT NULL,
    hit_count   INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS {CACHE_TABLE}_expires ON {CACHE_TABLE} (expires_at);
CREATE INDEX IF NOT EXISTS {CACHE_TABLE}_access ON {CACHE_TABLE} (last_access);
"""

STORE_DDL = OTEL_TRACES_DDL + LEDGER_DDL + BUDGET_DDL + ALERTS_DDL + PERFORMANCE_DDL + CACHE_DDL
"""Every table of ``amm.db``."""


def make_private_dir(path: str | Path) -> Path:
    """Create ``path`` (and missing parents) as 0700 directories (less under a stricter
    umask). A directory that exists already is left as it is: it may be the user's."""
    path = Path(path)
    missing = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for p in reversed(missing):
        with contextlib.suppress(FileExistsError):  # made meanwhile by another process
            p.mkdir(mode=0o700)
    return path


def _private_file(path: Path) -> None:
    """Create ``path`` 0600 when missing; take group/other bits off our files."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    os.close(fd)
    for p in (path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        try:
            mode = stat.S_IMODE(p.stat().st_mode)
            if mode & 0o077:
                os.chmod(p, mode & 0o700)
        except (FileNotFoundError, PermissionError):  # absent, or another user's file
            pass


def connect(path: str | Path, *, readonly: bool = False,
            timeout_s: float = 5.0) -> sqlite3.Connection:
    """Open the store. Writers get WAL mode with ``synchronous=NORMAL`` (a commit
    survives a killed process; only power loss can take the last commits), so readers
    in other processes (the dashboard) never block them; ``readonly`` opens with
    ``mode=ro``. A writer's directory and files are made private (see above).
    Raises ``OSError`` or ``sqlite3.Error`` when the file cannot be opened."""
    path = Path(path)
    if readonly:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=timeout_s,
                               check_same_thread=False)
    else:
        make_private_dir(path.parent)
        _private_file(path)
        conn = sqlite3.connect(path, timeout=timeout_s, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            conn.close()
            raise
    conn.execute(f"PRAGMA busy_timeout={int(timeout_s * 1000)}")
    return conn


def ensure_schema(conn: sqlite3.Connection) -> None:
    """Create the ``otel_traces`` table and its indexes if they are missing."""
    conn.executescript(OTEL_TRACES_DDL)
    conn.commit()


def ensure_store_schema(conn: sqlite3.Connection) -> None:
    """Create every table of ``amm.db`` (:data:`STORE_DDL`) that is missing."""
    conn.executescript(STORE_DDL)
    conn.commit()
