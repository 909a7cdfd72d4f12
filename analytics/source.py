"""Where stored spans come from: the :class:`SpanSource` protocol and its SQLite form.

A source only projects rows (``otel_traces`` columns plus the span attributes asked
for, one column each) and reads the cost ledger; it knows nothing of requests or
models. Which attribute means what lives in :mod:`analytics.load`, so a ClickHouse
``otel_traces`` source (``SpanAttributes['gen_ai.request.model']``) is one more
small class and no analysis changes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import pandas as pd

from telemetry.store_schema import BUDGET_TABLE, connect

__all__ = [
    "BUDGET_TABLE",
    "LEDGER_COLUMNS",
    "LEDGER_TABLE",
    "SPAN_COLUMNS",
    "SQLiteSource",
    "SpanSource",
    "StoreNotFoundError",
    "as_source",
]

SPAN_COLUMNS = ("Timestamp", "TraceId", "SpanId", "ParentSpanId", "SpanName", "Duration",
                "StatusCode", "Events")
"""The ``otel_traces`` columns every source returns, besides the asked attributes."""
LEDGER_TABLE = "amm_cost_ledger"
LEDGER_COLUMNS = ("id", "ts", "day", "model_id", "agent_type", "task_id", "input_tokens",
                  "output_tokens", "cost_usd", "source")
# Optional table ``(day TEXT, daily_budget_usd REAL)``; the newest row is the budget.


class StoreNotFoundError(FileNotFoundError):
    """The store file does not exist (nothing has been recorded there yet)."""


@runtime_checkable
class SpanSource(Protocol):
    """Rows of an ``otel_traces`` table and of the cost ledger."""

    def spans(self, attributes: Sequence[str], since: datetime | None = None,
              until: datetime | None = None) -> pd.DataFrame:
        """:data:`SPAN_COLUMNS` plus one column per attribute key (missing: null),
        for spans starting in ``[since, until)``."""
        ...

    def ledger(self) -> pd.DataFrame:
        """Every cost-ledger row, columns :data:`LEDGER_COLUMNS` as stored."""
        ...

    def daily_budget(self) -> float | None:
        """The daily budget recorded in the store, or None when it holds none."""
        ...


def _iso(t: datetime) -> str:
    if t.tzinfo is None:
        raise ValueError(f"time bound must be timezone-aware, got naive {t.isoformat()}")
    # Same text shape as the stored Timestamp, so text comparison is time comparison.
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "000Z"


class SQLiteSource:
    """The local SQLite store, opened read-only for each read (never blocks the writer).

    >>> SQLiteSource("data/amm.db").spans(["gen_ai.request.model"])
    """

    __slots__ = ("path",)
    cost_basis = "ledger"
    """Cost comes from this store's exact cost ledger (see :mod:`analytics.pushdown`)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    def __repr__(self) -> str:
        return f"SQLiteSource({str(self.path)!r})"

    def _connect(self) -> sqlite3.Connection:
        if not self.path.is_file():
            raise StoreNotFoundError(f"no amm store at {self.path} (run `amm demo` to create one)")
        return connect(self.path, readonly=True)

    def _has_table(self, conn: sqlite3.Connection, name: str) -> bool:
        row = conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                           (name,)).fetchone()
        return row is not None

    def spans(self, attributes: Sequence[str], since: datetime | None = None,
              until: datetime | None = None) -> pd.DataFrame:
        """One query; attributes are extracted by SQLite's JSON functions (in C)."""
        # JSON path keys are quoted: attribute names contain dots.
        extracts = [
            f"json_extract(SpanAttributes, '$.\"{key}\"') AS \"{key}\"" for key in attributes
        ]
        where, params = [], []
        if since is not None:
            where.append("Timestamp >= ?")
            params.append(_iso(since))
        if until is not None:
            where.append("Timestamp < ?")
            params.append(_iso(until))
        sql = f"SELECT {', '.join([*SPAN_COLUMNS, *extracts])} FROM otel_traces"
        if where:
            sql += " WHERE " + " AND ".join(where)
        with closing(self._connect()) as conn:
            if not self._has_table(conn, "otel_traces"):
                return pd.DataFrame(columns=[*SPAN_COLUMNS, *attributes])
            rows = conn.execute(sql, params).fetchall()
        return _frame(rows, [*SPAN_COLUMNS, *attributes])

    def ledger(self) -> pd.DataFrame:
        with closing(self._connect()) as conn:
            if not self._has_table(conn, LEDGER_TABLE):
                return pd.DataFrame(columns=list(LEDGER_COLUMNS))
            present = {r[1] for r in conn.execute(f"PRAGMA table_info({LEDGER_TABLE})")}
            cols = [c if c in present else f"NULL AS {c}" for c in LEDGER_COLUMNS]
            rows = conn.execute(f"SELECT {', '.join(cols)} FROM {LEDGER_TABLE}").fetchall()
        return _frame(rows, list(LEDGER_COLUMNS))

    def daily_budget(self) -> float | None:
        with closing(self._connect()) as conn:
            if not self._has_table(conn, BUDGET_TABLE):
                return None
            row = conn.execute(
                f"SELECT daily_budget_usd FROM {BUDGET_TABLE} ORDER BY day DESC LIMIT 1"
            ).fetchone()
        return float(row[0]) if row and row[0] is not None else None


    # --- Push-down (analytics.pushdown.Pushdown): the same SQL definitions as ClickHouse.

    def experiment_sums(self, since: datetime | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(looks, agents)`` of :func:`analytics.ab.analyse_looks`, computed in SQL."""
        from analytics import source_sums

        with closing(source_sums.register(self._connect())) as conn:
            return source_sums.experiment_sums(conn, since)

    def model_sums(self) -> pd.DataFrame:
        """Per-model counts, quantiles and sums (:data:`analytics.pushdown.MODEL_SUM_COLUMNS`)."""
        from analytics import source_sums

        with closing(source_sums.register(self._connect())) as conn:
            return source_sums.model_sums(conn)

    def totals(self) -> pd.DataFrame:
        """Per-day totals, cost from the ledger (:data:`analytics.pushdown.TOTAL_COLUMNS`)."""
        from analytics import source_sums

        with closing(source_sums.register(self._connect())) as conn:
            return source_sums.totals(conn, self._has_table(conn, LEDGER_TABLE))


def _frame(rows: list[tuple[object, ...]], columns: list[str]) -> pd.DataFrame:
    """Rows as object columns: skips pandas' per-column string inference (the
    loader types the few columns it keeps, once)."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in columns})
    data = {c: np.array(col, dtype=object) for c, col in zip(columns, zip(*rows, strict=True),
                                                               strict=True)}
    return pd.DataFrame(data, dtype=object, copy=False)


def as_source(source_or_path: SpanSource | str | Path) -> SpanSource:
    """A :class:`SpanSource` as is; a path as a :class:`SQLiteSource`."""
    if isinstance(source_or_path, str | Path):
        return SQLiteSource(source_or_path)
    if isinstance(source_or_path, SpanSource):
        return source_or_path
    raise TypeError(f"expected a SpanSource or a store path, got {type(source_or_path).__name__}")
