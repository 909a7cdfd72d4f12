"""Aggregates computed where the spans live: the contract both sources meet, and opening one.

The report's sections need counts, sums and quantiles, not rows. A source that can
compute them (:class:`Pushdown`) returns small frames:

- ``experiment_sums(since)``: ``(looks, agents)`` for :func:`analytics.ab.analyse_looks`
  (per experiment, arm and day: n, sum and sum of squares of each A/B metric);
- ``model_sums()``: :data:`MODEL_SUM_COLUMNS`, one row per model over the attempts of
  requests (p50/p95 latency of every attempt: :func:`analytics.stats.latency_quantiles`);
- ``totals()``: :data:`TOTAL_COLUMNS`, one row per day, with the day's cost from the
  source's ``cost_basis`` (``"ledger"``: the local store's exact ledger; ``"spans"``:
  the ``amm.cost_usd`` of the chat spans that reached ClickHouse).

The SQLite store and ClickHouse compute the same definitions with exactly rounded sums
(``math.fsum`` in SQLite; in ClickHouse, mantissas summed per binary exponent and
combined once in Python:
:mod:`analytics.clickhouse.exact`), so a store copied into ClickHouse reports the same
numbers, to the last bit, whatever order the rows are summed in. ClickHouse computes them
from the request rollup beside ``otel_traces`` when it is there and complete (a
materialized view: :mod:`analytics.clickhouse.rollup`), else from the raw spans; the
source's ``path`` says which.

    source = open_source("chdb:///var/lib/amm-traces")   # or clickhouse://, or a path
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Protocol, runtime_checkable

import pandas as pd

from analytics.source import SpanSource, SQLiteSource

__all__ = ["MODEL_SUM_COLUMNS", "TOTAL_COLUMNS", "Pushdown", "model_table_from_sums",
           "open_source"]

MODEL_SUM_COLUMNS = ("model", "attempts", "errors", "p50_latency_ms", "p95_latency_ms",
                     "quality_n", "quality_s", "cost_usd", "failovers_away")
"""Columns of :meth:`Pushdown.model_sums`."""
TOTAL_COLUMNS = ("day", "requests", "answered", "cache_hits", "quality_n", "quality_s",
                 "first", "last", "cost_usd")
"""Columns of :meth:`Pushdown.totals` (``first``/``last``: ISO times of requests)."""


@runtime_checkable
class Pushdown(Protocol):
    """A source that computes the report's aggregates itself (see the module docstring)."""

    cost_basis: str

    def experiment_sums(self, since: datetime | None = None
                        ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """``(looks, agents)`` of :func:`analytics.ab.analyse_looks`."""
        ...

    def model_sums(self) -> pd.DataFrame:
        """:data:`MODEL_SUM_COLUMNS`, one row per model."""
        ...

    def totals(self) -> pd.DataFrame:
        """:data:`TOTAL_COLUMNS`, one row per day."""
        ...


def model_table_from_sums(sums: pd.DataFrame) -> pd.DataFrame:
    """:func:`analytics.report.model_table`'s columns from :meth:`Pushdown.model_sums`."""
    t = sums.copy()
    t["error_rate"] = t["errors"] / t["attempts"]
    t["quality"] = (t["quality_s"] / t["quality_n"]).where(t["quality_n"] > 0)
    t["attempts"] = t["attempts"].astype("int64")
    t["failovers_away"] = t["failovers_away"].astype("int64")
    cols = ["model", "attempts", "error_rate", "p50_latency_ms", "p95_latency_ms", "quality",
            "cost_usd", "failovers_away"]
    return t[cols].sort_values(["attempts", "model"], ascending=[False, True],
                               ignore_index=True)


def open_source(spec: str | Path) -> SpanSource:
    """A source from ``--source``: ``clickhouse://user@host:8123/db``, ``chdb:///dir``, or
    a SQLite store path (``sqlite:///path`` also accepted)."""
    text = str(spec)
    if text.startswith(("clickhouse://", "clickhouses://", "chdb://")):
        from analytics.clickhouse import ClickHouseSource

        return ClickHouseSource.open(text)
    if text.startswith("sqlite://"):
        text = text.removeprefix("sqlite://")
    if "://" in text:
        raise ValueError(f"{spec}: unknown source; expected a store path, sqlite:///path, "
                         "clickhouse://host:8123/db or chdb:///path")
    return SQLiteSource(text)
