"""The cost ledger's durable half: its rows go through the store's shared writer.

:class:`LedgerStore` submits each row (``add``) to the
:class:`~telemetry.store_writer.StoreWriter` of the file, which commits batches on its
thread, or at once for a caller waiting on :meth:`wait_async` / :meth:`wait` (group
commit: the durability barrier of a returned response). Each row's id is made by
the caller and written with ``INSERT OR IGNORE``: a retried batch never writes a
row twice, and a failed batch stays queued, in order, for the next try. ``close``
releases the writer (the last user writes everything); a row added after ``close``
is written at once.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import Any

from amm._store import open_store
from telemetry.store_schema import ALERTS_TABLE, BUDGET_TABLE, LEDGER_TABLE
from telemetry.store_writer import StoreWriter

__all__ = ["ALERTS_TABLE", "LEDGER_TABLE", "AlertRow", "LedgerRow", "LedgerStore"]

logger = logging.getLogger(__name__)

LedgerRow = tuple[str, str, str, str, str, str, int, int, float, str]
"""(id, ts, day, model_id, agent_type, task_id, input_tokens, output_tokens, cost_usd, source)"""
AlertRow = tuple[str, float, str]
"""(day, threshold, fired_at)"""

_INSERT_ROW = (f"INSERT OR IGNORE INTO {LEDGER_TABLE} (id, ts, day, model_id, agent_type, "
               f"task_id, input_tokens, output_tokens, cost_usd, source) "
               f"VALUES (?,?,?,?,?,?,?,?,?,?)")
_INSERT_ALERT = f"INSERT OR IGNORE INTO {ALERTS_TABLE} (day, threshold, fired_at) VALUES (?,?,?)"
_SET_BUDGET = f"INSERT OR REPLACE INTO {BUDGET_TABLE} (day, daily_budget_usd) VALUES (?, ?)"


class LedgerStore:
    """Exactly-once writes of ledger rows to ``path`` through its shared writer."""

    def __init__(self, path: Path, *, flush_interval_s: float, batch_size: int,
                 busy_timeout_s: float, store: StoreWriter | None = None) -> None:
        self.path = path
        self._owned = store is None
        self._writer = store if store is not None else open_store(
            path, flush_interval_s=flush_interval_s, batch_size=batch_size,
            busy_timeout_s=busy_timeout_s)
        self._tickets: collections.deque[int] = collections.deque()  # of rows not committed
        self._last = 0  # ticket of the newest row
        self._closed = False

    @property
    def writer(self) -> StoreWriter:
        """The shared writer the rows go through."""
        return self._writer

    def add(self, row: LedgerRow, alerts: list[AlertRow] | None = None) -> int:
        """Queue a row (and alerts fired with it); its ticket."""
        if self._closed:  # late: nobody will flush it for us
            return self._write_late(row, alerts)
        writer = self._writer
        if alerts:
            writer.submit_many(_INSERT_ALERT, alerts)
        ticket = writer.submit(_INSERT_ROW, row)
        self._last = ticket
        self._tickets.append(ticket)
        return ticket

    def _write_late(self, row: LedgerRow, alerts: list[AlertRow] | None) -> int:
        writer = open_store(self.path)
        try:
            if alerts:
                writer.submit_many(_INSERT_ALERT, alerts)
            ticket = writer.submit(_INSERT_ROW, row)
            writer.flush()
            return ticket
        finally:
            writer.release()

    @property
    def last_ticket(self) -> int:
        """The ticket of the newest row."""
        return self._last

    def pending(self) -> int:
        """Rows not committed yet."""
        tickets, writer = self._tickets, self._writer
        while tickets and writer.is_committed(tickets[0]):
            tickets.popleft()
        return len(tickets)

    def flush(self) -> int:
        """Commit every pending row now; how many. ``sqlite3.Error`` when the
        database refuses (the rows stay pending)."""
        before = self.pending()
        self._writer.flush()
        return before - self.pending()

    async def wait_async(self, ticket: int | None = None) -> bool:
        """Wait until the row of ``ticket`` (default: the newest) is committed; False
        when the store could not write it (it stays queued and is retried)."""
        return await self._writer.wait_async(self._last if ticket is None else ticket)

    def wait(self, ticket: int | None = None, timeout_s: float | None = None) -> bool:
        """:meth:`wait_async` for code without an event loop."""
        return self._writer.wait(self._last if ticket is None else ticket, timeout_s)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, after committing what is pending (so they are counted)."""
        if self._closed:
            writer = open_store(self.path)
            try:
                writer.flush()
                return writer.read(lambda c: c.execute(sql, params).fetchall())
            finally:
                writer.release()
        self._writer.flush()
        return self._writer.read(lambda c: c.execute(sql, params).fetchall())

    def set_budget(self, day: str, daily_budget_usd: float) -> None:
        """Record the budget in force on ``day``, so readers of the store (the
        dashboard, ``amm report``) judge spend against the budget that applied."""
        self._writer.submit(_SET_BUDGET, (day, daily_budget_usd))

    def close(self) -> bool:
        """Release the writer (the last user writes everything). Idempotent; never
        raises; False when rows could not be written (logged)."""
        if self._closed:
            return True
        self._closed = True
        if not self._owned:
            return self._writer.flush_quietly()
        return self._writer.release()

