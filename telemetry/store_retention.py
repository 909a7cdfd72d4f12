"""Retention of the store: spans and performance rows older than ``days`` go.

The cost ledger (and the budget tables) are kept forever: they are the accounts.
Each :meth:`Retention.run_chunk` deletes at most ``chunk`` rows of one table in one
short transaction, so a writer waits at most one chunk behind it.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime

from telemetry.store_schema import PERFORMANCE_TABLE

__all__ = ["Retention"]


def _iso(epoch_s: float) -> str:
    # The text shape of otel_traces.Timestamp, so text order is time order.
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class Retention:
    """How long spans and performance rows are kept (``days``; 0 or less keeps all).

    >>> Retention(30).run_chunk(conn)   # rows deleted by one small transaction
    0
    """

    __slots__ = ("_clock", "chunk", "days", "first_run_s", "interval_s")

    def __init__(self, days: float = 30.0, *, chunk: int = 500, interval_s: float = 3600.0,
                 first_run_s: float = 60.0, clock: Callable[[], float] = time.time) -> None:
        self.days = days
        self.chunk = chunk
        self.interval_s = interval_s
        self.first_run_s = first_run_s  # after the writer starts: start-up stays quick
        self._clock = clock

    def __repr__(self) -> str:
        return f"Retention(days={self.days}, chunk={self.chunk})"

    def run_chunk(self, conn: sqlite3.Connection) -> int:
        """Delete up to ``chunk`` expired rows (spans first); how many went."""
        if self.days <= 0:
            return 0
        cutoff = self._clock() - self.days * 86400.0
        for sql, arg in (
            ("DELETE FROM otel_traces WHERE rowid IN (SELECT rowid FROM otel_traces "
             "WHERE Timestamp < ? LIMIT ?)", _iso(cutoff)),
            (f"DELETE FROM {PERFORMANCE_TABLE} WHERE id IN (SELECT id FROM "
             f"{PERFORMANCE_TABLE} WHERE ts < ? LIMIT ?)", cutoff),
        ):
            conn.execute("BEGIN IMMEDIATE")
            try:
                deleted = conn.execute(sql, (arg, self.chunk)).rowcount
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            if deleted:
                return deleted
        return 0
