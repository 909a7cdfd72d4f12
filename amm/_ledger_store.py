"""The cost ledger's durable half: a WAL SQLite file written in batches by one thread.

:class:`LedgerStore` takes rows (``add``) into an in-memory batch and a small writer
thread writes them every ``flush_interval_s``, or sooner when ``batch_size`` wait.
Each row's id is made by the caller and written with ``INSERT OR IGNORE``: a retried
batch never writes a row twice, and a failed write puts the batch back, in order,
for the next try. ``flush`` writes everything now; ``close`` stops the thread and
flushes; a row added after ``close`` is written at once. It works with or without
an event loop.
"""

from __future__ import annotations

import atexit
import logging
import sqlite3
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from amm.errors import ConfigurationError
from telemetry.store_schema import BUDGET_DDL, BUDGET_TABLE, LEDGER_DDL, LEDGER_TABLE

__all__ = ["ALERTS_TABLE", "LEDGER_TABLE", "AlertRow", "LedgerRow", "LedgerStore"]

logger = logging.getLogger(__name__)

ALERTS_TABLE = "amm_budget_alerts"
"""The budget alerts fired, one row per (day, threshold)."""

_SCHEMA = LEDGER_DDL + BUDGET_DDL + f"""
CREATE TABLE IF NOT EXISTS {ALERTS_TABLE} (
    day TEXT NOT NULL,
    threshold REAL NOT NULL,
    fired_at TEXT NOT NULL,
    PRIMARY KEY (day, threshold)
);
"""

LedgerRow = tuple[str, str, str, str, str, str, int, int, float, str]
"""(id, ts, day, model_id, agent_type, task_id, input_tokens, output_tokens, cost_usd, source)"""
AlertRow = tuple[str, float, str]
"""(day, threshold, fired_at)"""


class LedgerStore:
    """Batched, exactly-once writes of ledger rows to ``path``."""

    def __init__(self, path: Path, *, flush_interval_s: float, batch_size: int,
                 busy_timeout_s: float) -> None:
        self.path = path
        self._flush_interval_s = flush_interval_s
        self._batch_size = batch_size
        self._busy_timeout_s = busy_timeout_s
        # _db_lock serialises database use and is taken before _lock, never after;
        # _lock guards the pending lists for a few operations at a time.
        self._db_lock = threading.Lock()
        self._lock = threading.Lock()
        self._rows: list[LedgerRow] = []
        self._alerts: list[AlertRow] = []
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._writer: threading.Thread | None = None
        with self._db_lock:
            self._db()
        self._atexit = _close_at_exit(self)

    def add(self, row: LedgerRow, alerts: list[AlertRow] | None = None) -> None:
        """Queue a row (and alerts fired with it) for the writer."""
        with self._lock:
            self._rows.append(row)
            if alerts:
                self._alerts.extend(alerts)
            backlog = len(self._rows)
        if self._closed:  # late: nobody will flush it for us
            try:
                self.flush()
            finally:
                with self._db_lock:
                    self._close_conn()
            return
        if self._writer is None:
            self._start_writer()
        if backlog >= self._batch_size:
            self._wake.set()

    def pending(self) -> int:
        """Rows not written yet."""
        with self._lock:
            return len(self._rows)

    def flush(self) -> int:
        """Write every pending row now; returns how many. ``sqlite3.Error`` when the
        database refuses (the rows stay pending)."""
        with self._db_lock:
            return self._write_locked()

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, after writing what is pending (so they are counted)."""
        with self._db_lock:
            self._write_locked()
            rows = self._db().execute(sql, params).fetchall()
            if self._closed:
                self._close_conn()
            return rows

    def close(self) -> None:
        """Stop the writer and write everything. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        self._wake.set()
        if self._writer is not None:
            self._writer.join()
        atexit.unregister(self._atexit)
        try:
            self.flush()
        finally:
            with self._db_lock:
                self._close_conn()

    # -- internals -----------------------------------------------------------------

    def _start_writer(self) -> None:
        with self._lock:
            if self._writer is None and not self._closed:
                self._writer = threading.Thread(target=self._run, name="amm-cost-writer",
                                                daemon=True)
                self._writer.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self._flush_interval_s)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # the batch is kept: retry at the next interval
                logger.warning("cost ledger write to %s failed; will retry", self.path,
                               exc_info=True)

    def _write_locked(self) -> int:
        with self._lock:
            rows, self._rows = self._rows, []
            alerts, self._alerts = self._alerts, []
        if not rows and not alerts:
            return 0
        conn = self._db()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany(
                f"INSERT OR IGNORE INTO {LEDGER_TABLE} VALUES (?,?,?,?,?,?,?,?,?,?)", rows)
            conn.executemany(f"INSERT OR IGNORE INTO {ALERTS_TABLE} VALUES (?,?,?)", alerts)
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            with self._lock:  # back in front, in order, for the next try
                self._rows[:0] = rows
                self._alerts[:0] = alerts
            raise
        return len(rows)

    def set_budget(self, day: str, daily_budget_usd: float) -> None:
        """Record the budget in force on ``day``, so readers of the store (the
        dashboard, ``amm report``) judge spend against the budget that applied."""
        with self._db_lock:
            self._db().execute(
                f"INSERT OR REPLACE INTO {BUDGET_TABLE} (day, daily_budget_usd) VALUES (?, ?)",
                (day, daily_budget_usd))

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False,
                                       isolation_level=None, timeout=self._busy_timeout_s)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as exc:
                raise ConfigurationError(
                    f"cost ledger {self.path}: cannot open: {exc}", path=str(self.path),
                    field="db_path") from exc
            self._conn = conn
        return self._conn

    def _close_conn(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def _close_at_exit(store: LedgerStore) -> Callable[[], None]:
    """Flush at interpreter exit without keeping the store alive."""
    ref = weakref.ref(store)

    def close() -> None:
        s = ref()
        if s is not None:
            try:
                s.close()
            except Exception:
                logger.error("cost ledger: final flush to %s failed", s.path, exc_info=True)

    atexit.register(close)
    return close
