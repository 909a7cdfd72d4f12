"""Span store: an SDK ``SpanExporter`` that writes finished spans into SQLite ``otel_traces``.

Rows have the shape of the OpenTelemetry Collector's ClickHouse exporter table
(see :mod:`telemetry.store_schema`). It runs behind a batch span processor, so
writes happen off the request path, one transaction per batch; ``INSERT OR
IGNORE`` on (TraceId, SpanId) makes a replayed batch a no-op. The file is in WAL
mode, so the dashboard reads while agents write. A crash loses at most the batch
not yet exported; everything committed before it stays.

>>> exporter = SpanStoreExporter("data/amm.db")
>>> provider.add_span_processor(BatchSpanProcessor(exporter))
"""

from __future__ import annotations

import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from telemetry.store_schema import connect, ensure_schema

__all__ = ["SpanStoreExporter", "iso_ns", "span_row"]

_log = logging.getLogger("amm.telemetry")

_INSERT = (
    "INSERT OR IGNORE INTO otel_traces (Timestamp, TraceId, SpanId, ParentSpanId, TraceState, "
    "SpanName, SpanKind, ServiceName, ResourceAttributes, ScopeName, ScopeVersion, "
    "SpanAttributes, Duration, StatusCode, StatusMessage, Events, Links) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
_KINDS = {SpanKind.INTERNAL: "Internal", SpanKind.CLIENT: "Client", SpanKind.SERVER: "Server",
          SpanKind.PRODUCER: "Producer", SpanKind.CONSUMER: "Consumer"}
_STATUS = {StatusCode.UNSET: "Unset", StatusCode.OK: "Ok", StatusCode.ERROR: "Error"}


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    # Spans of one batch share a handful of seconds: format each second once.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ns(epoch_ns: int) -> str:
    """Epoch nanoseconds as ISO-8601 UTC with nanoseconds: ``2026-11-25T23:17:20.123456789Z``."""
    seconds, nanos = divmod(int(epoch_ns), 1_000_000_000)
    return f"{_iso_second(seconds)}.{nanos:09d}Z"


def _plain(attrs: Mapping[str, Any] | None) -> dict[str, Any]:
    """Attributes as JSON-ready values (OpenTelemetry keeps sequences as tuples)."""
    if not attrs:
        return {}
    return {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}


_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json_map(attrs: Mapping[str, Any] | None) -> str:
    return _dumps(_plain(attrs)) if attrs else "{}"


_resource_json: dict[int, tuple[Any, str, str]] = {}


def _resource_columns(resource: Any) -> tuple[str, str]:
    """(service name, attributes as JSON) of a resource; every span of a provider shares
    one resource object, so it is encoded once (keyed by identity, kept alive by the entry)."""
    hit = _resource_json.get(id(resource))
    if hit is not None and hit[0] is resource:
        return hit[1], hit[2]
    attrs = dict(resource.attributes) if resource is not None else {}
    columns = (str(attrs.get("service.name", "")), _json_map(attrs))
    if len(_resource_json) > 64:
        _resource_json.clear()
    _resource_json[id(resource)] = (resource, *columns)
    return columns


def span_row(span: ReadableSpan) -> tuple[Any, ...]:
    """One finished span as an ``otel_traces`` row (the column order of the INSERT)."""
    ctx = span.context
    parent = span.parent
    start = span.start_time or 0
    end = span.end_time or start
    service, resource_json = _resource_columns(span.resource)
    scope = span.instrumentation_scope
    events = [{"Timestamp": iso_ns(e.timestamp), "Name": e.name,
               "Attributes": _plain(e.attributes)} for e in span.events]
    links = [{"TraceId": f"{link.context.trace_id:032x}", "SpanId": f"{link.context.span_id:016x}",
              "Attributes": _plain(link.attributes)} for link in span.links]
    return (
        iso_ns(start),
        f"{ctx.trace_id:032x}" if ctx else "",
        f"{ctx.span_id:016x}" if ctx else "",
        f"{parent.span_id:016x}" if parent else "",
        ctx.trace_state.to_header() if ctx and ctx.trace_state else "",
        span.name,
        _KINDS.get(span.kind, "Internal"),
        service,
        resource_json,
        scope.name if scope else "",
        (scope.version or "") if scope else "",
        _json_map(span.attributes),
        max(0, end - start),
        _STATUS.get(span.status.status_code, "Unset"),
        span.status.description or "",
        _dumps(events) if events else "[]",
        _dumps(links) if links else "[]",
    )


class SpanStoreExporter(SpanExporter):
    """Writes each exported batch of spans into ``otel_traces`` in one transaction."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._closed = False
        self.exported = 0  # spans handed to SQLite (duplicates included)
        try:  # create the table now, so readers (the dashboard) can open the file at once
            self._connection()
        except (sqlite3.Error, OSError):
            _log.exception("span store %s cannot be opened yet; will retry on export", self.path)

    def __repr__(self) -> str:
        return f"SpanStoreExporter({str(self.path)!r}, exported={self.exported})"

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            conn = connect(self.path)
            ensure_schema(conn)
            self._conn = conn
        return self._conn

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Insert ``spans`` (one transaction); a row already stored is left as it is."""
        if self._closed:
            return SpanExportResult.FAILURE
        try:
            rows = [span_row(span) for span in spans]
            with self._lock:
                conn = self._connection()
                with conn:  # one transaction: the whole batch or nothing
                    conn.executemany(_INSERT, rows)
                self.exported += len(rows)
        except (sqlite3.Error, OSError, ValueError, TypeError):
            _log.exception("span store %s: batch of %d spans not written", self.path, len(spans))
            return SpanExportResult.FAILURE
        return SpanExportResult.SUCCESS

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Every export is committed before it returns: nothing to flush."""
        return True

    def shutdown(self) -> None:
        """Close the connection; later exports fail. Idempotent."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                self._conn.close()
                self._conn = None
