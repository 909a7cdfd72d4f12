"""A finished span as a tuple of primitives, cheap to pickle, and back.

The exporter process (:mod:`telemetry.export_process`) receives spans from the
application's process over a pipe. An OpenTelemetry ``ReadableSpan`` does not pickle
cheaply (locks, bounded containers, the resource and scope objects on every span),
so each span crosses as a flat tuple (:func:`encode`) and is re-built on the other
side as a ``ReadableSpan`` with the same fields (:func:`decode`), which the SDK's own
OTLP exporters encode exactly as they would have in the application.

Resources and instrumentation scopes repeat on every span; a :class:`Interner` numbers
them once per process and only their numbers travel with the spans (the table's new
entries go with the next batch).

Fields carried: what the OTLP encoder reads (ids, trace state, parent and whether it
is remote, name, kind, times, attributes, events, links, status, dropped counts,
scope, resource). Trace flags are not part of an OTLP span and are not carried.

>>> interner = Interner()
>>> record = encode(span, interner)
>>> decode(record, Tables().update(interner.take_new())).name == span.name
True
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import Event, ReadableSpan
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, TraceFlags, TraceState
from opentelemetry.trace.status import Status, StatusCode

__all__ = ["Interner", "SpanRecord", "Tables", "decode", "encode"]

SpanRecord = tuple[Any, ...]
"""(name, trace_id, span_id, trace_state, parent_span_id, parent_is_remote, kind,
start, end, attributes, events, links, status_code, status_description, dropped,
scope_index, resource_index); see :func:`encode`."""

_KINDS = tuple(SpanKind)
_STATUS_CODES = tuple(StatusCode)
_SAMPLED = TraceFlags(TraceFlags.SAMPLED)
_NONE_DROPPED = (0, 0, 0)


class Interner:
    """Numbers resources and scopes as spans meet them (thread-safe).

    ``take_new()`` hands out the entries numbered since its last call, in order, so
    the receiving side learns each number before the first span that uses it.
    """

    __slots__ = ("_all", "_by_id", "_lock", "_new", "_next")

    def __init__(self) -> None:
        # id(object) -> (object, number): the object is kept so its id is never reused.
        self._by_id: dict[int, tuple[object, int]] = {}
        self._new: list[tuple[int, str, tuple[Any, ...]]] = []
        self._all: list[tuple[int, str, tuple[Any, ...]]] = []
        self._next = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"Interner(entries={self._next}, unsent={len(self._new)})"

    def number(self, obj: Resource | InstrumentationScope | None) -> int:
        """The number of ``obj`` (-1 for None)."""
        if obj is None:
            return -1
        known = self._by_id.get(id(obj))
        if known is not None:
            return known[1]
        with self._lock:
            known = self._by_id.get(id(obj))
            if known is not None:
                return known[1]
            n = self._next
            self._next += 1
            if isinstance(obj, Resource):
                entry: tuple[int, str, tuple[Any, ...]] = (
                    n, "resource", (dict(obj.attributes), obj.schema_url))
            else:
                entry = (n, "scope", (obj.name, obj.version, obj.schema_url,
                                      dict(obj.attributes or {})))
            self._new.append(entry)
            self._all.append(entry)
            self._by_id[id(obj)] = (obj, n)
            return n

    def resend_all(self) -> None:
        """Hand out every entry again with the next :meth:`take_new` (a new receiver)."""
        with self._lock:
            self._new = [entry for entry in self._all]

    def take_new(self) -> list[tuple[int, str, tuple[Any, ...]]]:
        """The entries numbered since the last call (then forgotten as new)."""
        with self._lock:
            new, self._new = self._new, []
        return new


class Tables:
    """The receiving side of an :class:`Interner`: numbers back to objects."""

    __slots__ = ("_objects",)

    def __init__(self) -> None:
        self._objects: dict[int, Any] = {-1: None}

    def __repr__(self) -> str:
        return f"Tables(entries={len(self._objects) - 1})"

    def update(self, entries: Sequence[tuple[int, str, tuple[Any, ...]]]) -> Tables:
        """Learn ``entries`` (from :meth:`Interner.take_new`); returns self."""
        for n, kind, fields in entries:
            if kind == "resource":
                attributes, schema_url = fields
                self._objects[n] = Resource(attributes, schema_url)
            else:
                name, version, schema_url, attributes = fields
                self._objects[n] = InstrumentationScope(name, version, schema_url,
                                                        attributes or None)
        return self

    def get(self, n: int) -> Any:
        """The resource or scope numbered ``n``."""
        return self._objects[n]


def _attributes(attributes: Any) -> dict[str, Any] | None:
    # The SDK's attribute mappings copy to a plain dict in C (``dict(mapping)`` would
    # call a Python ``__getitem__`` per key).
    return attributes.copy() if attributes else None


def encode(span: ReadableSpan, interner: Interner) -> SpanRecord:
    """The record of a finished span (called as the span ends, so kept lean)."""
    context = span.context
    parent = span.parent
    status = span.status
    events = span.events
    links = span.links
    trace_state = context.trace_state if context is not None else None
    dropped = (span.dropped_attributes, span.dropped_events, span.dropped_links)
    return (
        span.name,
        context.trace_id if context is not None else 0,
        context.span_id if context is not None else 0,
        tuple(trace_state.items()) if trace_state else None,
        parent.span_id if parent is not None else 0,
        parent.is_remote if parent is not None else False,
        span.kind.value,
        span.start_time,
        span.end_time,
        _attributes(span.attributes),
        tuple([(e.name, e.timestamp, _attributes(e.attributes)) for e in events])
        if events else (),
        tuple([(link.context.trace_id, link.context.span_id, link.context.is_remote,
                _attributes(link.attributes)) for link in links]) if links else (),
        status.status_code.value,
        status.description,
        dropped if dropped != _NONE_DROPPED else None,
        interner.number(span.instrumentation_scope),
        interner.number(span.resource),
    )


class _RebuiltSpan(ReadableSpan):
    """A ``ReadableSpan`` re-built from a record, dropped counts included."""

    def __init__(self, dropped: tuple[int, int, int] | None, **fields: Any) -> None:
        super().__init__(**fields)
        self._dropped = dropped or (0, 0, 0)

    @property
    def dropped_attributes(self) -> int:
        return self._dropped[0]

    @property
    def dropped_events(self) -> int:
        return self._dropped[1]

    @property
    def dropped_links(self) -> int:
        return self._dropped[2]


def decode(record: SpanRecord, tables: Tables) -> ReadableSpan:
    """The ``ReadableSpan`` of ``record`` (in the exporter process)."""
    (name, trace_id, span_id, trace_state, parent_span_id, parent_remote, kind, start, end,
     attributes, events, links, status_code, status_description, dropped, scope_n,
     resource_n) = record
    state = TraceState(list(trace_state)) if trace_state else None
    context = SpanContext(trace_id, span_id, is_remote=False, trace_flags=_SAMPLED,
                          trace_state=state)
    parent = (SpanContext(trace_id, parent_span_id, is_remote=parent_remote,
                          trace_flags=_SAMPLED) if parent_span_id else None)
    code = _STATUS_CODES[0]
    for candidate in _STATUS_CODES:
        if candidate.value == status_code:
            code = candidate
    return _RebuiltSpan(
        dropped,
        name=name, context=context, parent=parent, resource=tables.get(resource_n),
        attributes=attributes,
        events=[Event(n, attrs, ts) for n, ts, attrs in events],
        links=[Link(SpanContext(t, s, is_remote=r, trace_flags=_SAMPLED), attrs)
               for t, s, r, attrs in links],
        kind=next(k for k in _KINDS if k.value == kind),
        status=Status(code, status_description),
        start_time=start, end_time=end,
        instrumentation_scope=tables.get(scope_n),
    )
