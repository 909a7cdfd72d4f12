"""Running one batch of queued writes inside the writer's transaction.

Consecutive rows of one ``INSERT ... VALUES (?, ...)`` are written as multi-row
``VALUES`` statements (other statements share an ``executemany``); a :data:`Work` item is
called with the connection. Why multi-row: the sqlite3 module lets go of the GIL around
every statement step, and a writer thread that must win the GIL back from a busy event
loop waits up to the switch interval (5 ms) each time. ``executemany`` steps once per
row, so under load a batch of 32 took 36 ms (measured: a CPU-bound main thread, 20
columns); as one statement it takes 6 ms, and idle both take 0.12 ms. Rows are applied in
order within a statement, as ``executemany`` applies them, so ``OR IGNORE``/``OR
REPLACE`` resolve alike; a failing statement writes none of its rows, and the batch's
transaction is rolled back either way. :func:`run_isolating` is the slow path after a batch
hit a bad item (a bug, not the environment): each item under a savepoint, the bad
one logged and left out, so one bad record never blocks the rest forever.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
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
            _insert_many(conn, sql, [p for _, p in batch[i:j]])
        i = j


_MAX_ROWS = 256  # rows per multi-row statement (its text stays ~10 KB)
_VALUES = re.compile(r"^(\s*INSERT\b.*\bVALUES\s*)(\((?:\s*\?\s*,)*\s*\?\s*\))\s*$",
                     re.IGNORECASE | re.DOTALL)


@functools.lru_cache(maxsize=256)
def _values_form(sql: str) -> tuple[str, str, int] | None:
    """``sql``'s head, its one ``(?, ...)`` tuple and how many placeholders it has; None
    when it is not a plain INSERT of one placeholder tuple (then ``executemany``)."""
    match = _VALUES.match(sql)
    if match is None:
        return None
    return match.group(1), match.group(2), match.group(2).count("?")


@functools.lru_cache(maxsize=256)
def _multi_row(head: str, row: str, rows: int) -> str:
    return head + ",".join([row] * rows)


def _insert_many(conn: sqlite3.Connection, sql: str, rows: list[tuple[Any, ...]]) -> None:
    """Write ``rows`` with ``sql`` as few multi-row statements (sizes are powers of two,
    so few statement texts are prepared); anything else through ``executemany``."""
    form = _values_form(sql)
    if form is None or any(len(r) != form[2] for r in rows):
        conn.executemany(sql, rows)  # a mismatch raises there, as it always did
        return
    head, row, width = form
    limit = min(conn.getlimit(sqlite3.SQLITE_LIMIT_VARIABLE_NUMBER), 32766)
    most = max(1, min(_MAX_ROWS, limit // width))
    i, n = 0, len(rows)
    while i < n:
        k = min(most, n - i)
        k = 1 << (k.bit_length() - 1)
        if k == 1:
            conn.execute(sql, rows[i])
        else:
            conn.execute(_multi_row(head, row, k),
                         tuple(itertools.chain.from_iterable(rows[i:i + k])))
        i += k


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
