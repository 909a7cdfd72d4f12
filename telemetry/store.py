"""Span store: an SDK ``SpanExporter`` that writes finished spans into SQLite ``otel_traces``.

Rows have the shape of the OpenTelemetry Collector's ClickHouse exporter table
(see :mod:`telemetry.store_schema`). It runs behind a span processor (amm's
:class:`~telemetry.store_processor.SpanStoreProcessor`, which holds a compact
:func:`store_record` per span rather than the span; any batch processor works too), so
writes happen off the request path; each export is queued on the file's shared
writer (:mod:`telemetry.store_writer`) and waits for its commit; ``INSERT OR
IGNORE`` on (TraceId, SpanId) makes a replayed batch a no-op. The file is in WAL
mode, so the dashboard reads while agents write. A crash loses at most the batch
not yet exported; everything committed before it stays.

>>> exporter = SpanStoreExporter("data/amm.db")
>>> provider.add_span_processor(SpanStoreProcessor(exporter))
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from opentelemetry.trace import SpanKind, StatusCode

from telemetry.store_writer import StoreError, StoreWriter

__all__ = ["SpanStoreExporter", "StoreRecord", "iso_ns", "record_row", "span_row",
           "store_record"]

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
_SLICE = 32  # spans encoded and committed at a time (see SpanStoreExporter.export)


@functools.lru_cache(maxsize=256)
def _iso_second(seconds: int) -> str:
    # Spans of one batch share a handful of seconds: format each second once.
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")


def iso_ns(epoch_ns: int) -> str:
    """Epoch nanoseconds as ISO-8601 UTC with nanoseconds: ``2026-11-25T23:17:20.123456789Z``."""
    seconds, nanos = divmod(int(epoch_ns), 1_000_000_000)
    return f"{_iso_second(seconds)}.{nanos:09d}Z"


# OpenTelemetry keeps sequences as tuples; the encoder writes a tuple as a JSON array,
# as it writes a list, so attribute dicts are encoded as they are (no copy with lists).
_dumps = json.JSONEncoder(ensure_ascii=False, separators=(",", ":")).encode


def _json_map(attrs: dict[str, Any] | None) -> str:
    return _dumps(attrs) if attrs else "{}"


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


StoreRecord = tuple[Any, ...]
"""A finished span as the span store needs it (:func:`store_record`): ids, name, kind,
times, attributes, events, links, status, and its scope and resource by reference."""


def _copy(attrs: Mapping[str, Any] | None) -> dict[str, Any] | None:
    # The SDK's attribute mappings copy to a plain dict in C.
    if not attrs:
        return None
    copy = getattr(attrs, "copy", None)
    plain = copy() if copy is not None else None
    return plain if type(plain) is dict else dict(attrs)


def store_record(span: ReadableSpan) -> StoreRecord:
    """What :func:`record_row` needs of a finished span, without the span: a processor
    that holds this instead of the span until the store's write keeps ~4 objects per
    span alive for the cyclic GC instead of ~15 (called as the span ends: kept lean)."""
    ctx = span.context
    parent = span.parent
    status = span.status
    events = span.events
    links = span.links
    return (
        span.name,
        ctx.trace_id if ctx else None,
        ctx.span_id if ctx else None,
        ctx.trace_state.to_header() if ctx and ctx.trace_state else "",
        parent.span_id if parent else None,
        span.kind,
        span.start_time,
        span.end_time,
        _copy(span.attributes),
        tuple([(e.timestamp, e.name, _copy(e.attributes)) for e in events]) if events else (),
        tuple([(link.context.trace_id, link.context.span_id, _copy(link.attributes))
               for link in links]) if links else (),
        status.status_code,
        status.description,
        span.instrumentation_scope,
        span.resource,
    )


def record_row(record: StoreRecord) -> tuple[Any, ...]:
    """The ``otel_traces`` row of a :func:`store_record` (the column order of the INSERT)."""
    (name, trace_id, span_id, trace_state, parent_id, kind, start, end, attributes, events, links,
     status_code, description, scope, resource) = record
    start = start or 0
    end = end or start
    service, resource_json = _resource_columns(resource)
    event_maps = [{"Timestamp": iso_ns(ts), "Name": event_name, "Attributes": attrs or {}}
                  for ts, event_name, attrs in events]
    link_maps = [{"TraceId": f"{link_trace:032x}", "SpanId": f"{link_span:016x}",
                  "Attributes": attrs or {}} for link_trace, link_span, attrs in links]
    return (
        iso_ns(start),
        f"{trace_id:032x}" if trace_id is not None else "",
        f"{span_id:016x}" if span_id is not None else "",
        f"{parent_id:016x}" if parent_id is not None else "",
        trace_state,
        name,
        _KINDS.get(kind, "Internal"),
        service,
        resource_json,
        scope.name if scope else "",
        (scope.version or "") if scope else "",
        _json_map(attributes),
        max(0, end - start),
        _STATUS.get(status_code, "Unset"),
        description or "",
        _dumps(event_maps) if event_maps else "[]",
        _dumps(link_maps) if link_maps else "[]",
    )


def span_row(span: ReadableSpan) -> tuple[Any, ...]:
    """One finished span as an ``otel_traces`` row (the column order of the INSERT)."""
    return record_row(store_record(span))


class SpanStoreExporter(SpanExporter):
    """Writes each exported batch of spans into ``otel_traces`` (one commit, shared
    with whatever else the store's writer has queued)."""

    def __init__(self, path: str | Path, *, commit_timeout_s: float = 30.0) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._writer: StoreWriter | None = None
        self._closed = False
        self._commit_timeout_s = commit_timeout_s
        self._warned = False
        self.exported = 0  # spans handed to SQLite (duplicates included)
        # Open now, so readers (the dashboard) find the tables at once.
        self._open()

    def __repr__(self) -> str:
        return f"SpanStoreExporter({str(self.path)!r}, exported={self.exported})"

    @property
    def write_failures(self) -> int:
        """Failed commits of the store (0 when it never opened)."""
        return self._writer.write_failures if self._writer is not None else 0

    def _open(self) -> StoreWriter | None:
        with self._lock:
            if self._writer is None and not self._closed:
                try:
                    self._writer = StoreWriter.open(self.path)
                except StoreError as exc:
                    if not self._warned:  # once, not once per batch
                        self._warned = True
                        _log.warning("span store: %s; spans are not stored locally until "
                                     "it can be opened", exc)
            return self._writer

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Insert ``spans``; a row already stored is left as it is. Waits for the
        commit; FAILURE (never an exception) when the store cannot write them now."""
        return self._write(spans, span_row)

    def write_records(self, records: Sequence[StoreRecord]) -> SpanExportResult:
        """:meth:`export` for spans held as :func:`store_record` records (the same rows)."""
        return self._write(records, record_row)

    def _write(self, items: Sequence[Any], row: Callable[[Any], tuple[Any, ...]]
               ) -> SpanExportResult:
        if self._closed:
            return SpanExportResult.FAILURE
        writer = self._open()
        if writer is None:
            return SpanExportResult.FAILURE
        ok = True
        for start in range(0, len(items), _SLICE):
            # A slice at a time, each committed before the next is encoded: encoding
            # holds the GIL (~25 us a span) and waiting for the commit gives it back, so
            # a caller never waits behind more than one slice; and a request's ledger
            # row never queues behind a whole batch of span rows in the shared writer.
            part = items[start:start + _SLICE]
            try:
                rows = [row(item) for item in part]
            except (ValueError, TypeError):
                _log.warning("span store %s: a batch of %d spans could not be encoded", self.path,
                             len(part), exc_info=True)
                ok = False
                continue
            ticket = writer.submit_many(_INSERT, rows)
            self.exported += len(rows)
            ok = writer.wait(ticket, self._commit_timeout_s) and ok
        return SpanExportResult.SUCCESS if ok else SpanExportResult.FAILURE

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Every export waits for its commit: nothing to flush."""
        return True

    def shutdown(self) -> None:
        """Let go of the store (its last user writes what is queued); later exports
        fail. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            writer, self._writer = self._writer, None
        if writer is not None:
            writer.release()
