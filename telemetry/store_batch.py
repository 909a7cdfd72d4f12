"""Running one batch of queued writes inside the writer's transaction.

Consecutive rows of one statement share an ``executemany``; a :data:`Work` item is
called with the connection. :func:`run_isolating` is the slow path after a batch
hit a bad item (a bug, not the environment): each item under a savepoint, the bad
one logged and left out, so one bad record never blocks the rest forever.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Callable
from typing import Any

__all__ = ["BAD_ITEM", "Item", "Work", "run_batch", "run_isolating"]

_log = logging.getLogger("amm.store")

Work = Callable[[sqlite3.Connection], object]
"""A queued write that needs more than one statement (it runs inside the batch's
transaction and may run again after a failed batch: make it idempotent)."""

Item = tuple[str | Work, tuple[Any, ...]]
"""One queued write: a statement and its parameters, or a :data:`Work` and ``()``."""

BAD_ITEM = (sqlite3.IntegrityError, sqlite3.InterfaceError, sqlite3.ProgrammingError,
            sqlite3.DataError)
"""Errors that blame an item rather than the database (disk, lock, permissions)."""


def run_batch(conn: sqlite3.Connection, batch: list[Item]) -> None:
    """Run the batch in order; consecutive rows of one statement share executemany."""
    i, n = 0, len(batch)
    while i < n:
        sql, params = batch[i]
        if not isinstance(sql, str):
            sql(conn)
            i += 1
            continue
        j = i + 1
        while j < n and batch[j][0] is sql:
            j += 1
        if j - i == 1:
            conn.execute(sql, params)
        else:
            conn.executemany(sql, [p for _, p in batch[i:j]])
        i = j


def run_isolating(conn: sqlite3.Connection, batch: list[Item]) -> None:
    """Run each item under a savepoint; an item the database rejects is logged and
    left out (environmental errors still abort the batch)."""
    for item in batch:
        conn.execute("SAVEPOINT item")
        try:
            run_batch(conn, [item])
        except BAD_ITEM as exc:
            conn.execute("ROLLBACK TO item")
            _log.error("amm store: a record was rejected and left out: %s (%s)", exc,
                       item[0] if isinstance(item[0], str) else item[0].__qualname__)
        conn.execute("RELEASE item")
