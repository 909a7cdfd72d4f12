"""Copy a local store's spans into ClickHouse, in the Collector exporter's shape (``amm export``).

Each SQLite row becomes the row the Collector would have written for the same span:
attribute values as text the way the exporter renders them (booleans ``true``/``false``,
integers and floats in plain decimal, lists and maps as JSON), events as the
``Events.*`` nested arrays. Rows go in batches (``JSONEachRow``); spans already in the
table (same TraceId and SpanId) are skipped, so a repeated export adds only what is new.
The request rollup's materialized view (:func:`analytics.clickhouse.schema.rollup_ddl`)
is created beside the table too, so the copied spans fill it as they are inserted.

    copied = export_store("data/amm.db", "chdb:///var/lib/amm-traces")
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path
from typing import Any

import numpy as np

from analytics.clickhouse.rollup import ensure_rollup
from analytics.clickhouse.runner import Runner, open_runner
from analytics.clickhouse.schema import traces_ddl
from telemetry.store_schema import connect

__all__ = ["attribute_text", "export_store", "span_rows"]

_COLUMNS = ("Timestamp", "TraceId", "SpanId", "ParentSpanId", "TraceState", "SpanName",
            "SpanKind", "ServiceName", "ResourceAttributes", "ScopeName", "ScopeVersion",
            "SpanAttributes", "Duration", "StatusCode", "StatusMessage", "Events", "Links")


def attribute_text(value: Any) -> str:
    """An attribute value as the exporter stores it (pcommon ``Value.AsString``)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        # Go's strconv 'f' with -1 precision: plain decimal, shortest round-trip digits.
        return np.format_float_positional(value, unique=True, trim="-")
    if isinstance(value, str):
        return value
    return json.dumps(value, separators=(",", ":"))


def _map(text: str | None) -> dict[str, str]:
    if not text:
        return {}
    return {k: attribute_text(v) for k, v in json.loads(text).items()}


def _time(iso: str) -> str:
    # 2026-12-01T17:55:20.154521589Z -> 2026-12-01 17:55:20.154521589 (UTC, 9 digits)
    return iso.replace("T", " ").rstrip("Z")


def span_rows(row: sqlite3.Row | tuple[Any, ...]) -> dict[str, Any]:
    """One store row as one ``JSONEachRow`` object of the exporter's table."""
    r = dict(zip(_COLUMNS, row, strict=True))
    events = json.loads(r["Events"] or "[]")
    links = json.loads(r["Links"] or "[]")
    return {
        "Timestamp": _time(r["Timestamp"]), "TraceId": r["TraceId"], "SpanId": r["SpanId"],
        "ParentSpanId": r["ParentSpanId"] or "", "TraceState": r["TraceState"] or "",
        "SpanName": r["SpanName"], "SpanKind": r["SpanKind"] or "",
        "ServiceName": r["ServiceName"] or "",
        "ResourceAttributes": _map(r["ResourceAttributes"]),
        "ScopeName": r["ScopeName"] or "", "ScopeVersion": r["ScopeVersion"] or "",
        "SpanAttributes": _map(r["SpanAttributes"]), "Duration": int(r["Duration"] or 0),
        "StatusCode": r["StatusCode"] or "Unset", "StatusMessage": r["StatusMessage"] or "",
        "Events.Timestamp": [_time(e.get("Timestamp") or r["Timestamp"]) for e in events],
        "Events.Name": [e.get("Name", "") for e in events],
        "Events.Attributes": [{k: attribute_text(v) for k, v in (e.get("Attributes") or {}).items()}
                              for e in events],
        "Links.TraceId": [lk.get("TraceId", "") for lk in links],
        "Links.SpanId": [lk.get("SpanId", "") for lk in links],
        "Links.TraceState": [lk.get("TraceState", "") for lk in links],
        "Links.Attributes": [{k: attribute_text(v) for k, v in (lk.get("Attributes") or {}).items()}
                             for lk in links],
    }


def _batches(store: Path, size: int) -> Iterator[list[tuple[Any, ...]]]:
    with closing(connect(store, readonly=True)) as conn:
        cursor = conn.execute(f"SELECT {', '.join(_COLUMNS)} FROM otel_traces ORDER BY Timestamp")
        while rows := cursor.fetchmany(size):
            yield rows


def export_store(store: str | Path, url: str, *, batch: int = 20_000,
                 runner: Runner | None = None) -> int:
    """Copy the spans of ``store`` to the table of ``url``; returns how many were new."""
    store = Path(store)
    if not store.is_file():
        raise FileNotFoundError(f"no amm store at {store}")
    run = runner or open_runner(url)
    table = _table(run)
    run.command(traces_ddl(table))
    ensure_rollup(run, table)  # the request rollup the push-down reads (filled at insert)
    known = run.frame(f"SELECT TraceId, SpanId FROM {table}")
    seen = set(zip(known.get("TraceId", []), known.get("SpanId", []), strict=True))
    copied = 0
    for rows in _batches(store, batch):
        fresh = [r for r in rows if (r[1], r[2]) not in seen]
        if not fresh:
            continue
        body = "\n".join(json.dumps(span_rows(r), separators=(",", ":")) for r in fresh)
        run.command(f"INSERT INTO {table} FORMAT JSONEachRow", body)
        copied += len(fresh)
    return copied


def _table(run: Runner) -> str:
    url = getattr(run, "url", None)
    if url is None:
        return "otel.otel_traces"
    return f"`{url.database}`.`{url.table}`"
