"""Spans that are over before they are recorded: ``amm.select`` and ``amm.evaluate``.

The recorder builds these from an event after the work is done, so the SDK's way,
``tracer.start_span(..., start_time=)`` then ``span.end(end_time=)``, makes a mutable
span, runs every processor's ``on_start`` and ``_on_ending`` hooks, validates each
attribute, copies the whole span to a ``ReadableSpan`` and only then calls ``on_end``.
For a selection over 50 models that was 27 us of the ``select_model`` call's ~150
(``make bench``), for hooks that do nothing here.

:class:`FinishedSpans` makes the ``ReadableSpan`` the SDK would have made and hands it to
the provider's ``on_end`` directly, when doing so cannot differ from the SDK's way:

- the tracer is the SDK's, enabled, with its own span processor fan-out whose every
  processor leaves ``on_start`` and ``_on_ending`` to the base class (or is one of the
  SDK's own batch/simple processors, whose hooks are empty);
- no span limit would truncate or drop anything (no attribute length limit, no more
  attributes than the count limit);
- every attribute value is a plain str, bool, int or float, or a list or tuple of one
  such type (lists become tuples, as the SDK's cleaning makes them).

The sampler still decides (same arguments as ``start_span`` gives it), the ids come
from the tracer's id generator, the trace flags are computed as the SDK does, and the
span's parent is the current span. Anything else takes the SDK's way, unchanged.
``tests/test_finished_span.py`` holds the two ways' exported spans equal field by field,
so an SDK upgrade that changes what ``start_span``/``end`` produce fails there.
"""

from __future__ import annotations

from typing import Any

from opentelemetry import trace as trace_api
from opentelemetry.sdk.trace import (
    ReadableSpan,
    SpanProcessor,
    SynchronousMultiSpanProcessor,
)
from opentelemetry.sdk.trace import Tracer as SDKTracer
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.trace import SpanKind, Status, StatusCode, TraceFlags

__all__ = ["FinishedSpans"]

_UNSET = Status(StatusCode.UNSET)
_PLAIN = (str, bool, int, float)
# Hook implementations known to do nothing (the base class's and the SDK's own processors').
_QUIET = {SpanProcessor.on_start, SpanProcessor._on_ending,
          BatchSpanProcessor.on_start, BatchSpanProcessor._on_ending,
          SimpleSpanProcessor.on_start, SimpleSpanProcessor._on_ending}
_RANDOM_FLAG = getattr(TraceFlags, "RANDOM_TRACE_ID", 0)


class FinishedSpans:
    """Records finished spans for one tracer (see the module docstring).

    >>> spans = FinishedSpans(tracer)
    >>> spans.emit("amm.select", attributes, start_ns, end_ns)
    """

    __slots__ = ("_max_attributes", "_multi", "_processors", "_sdk", "tracer")

    def __init__(self, tracer: trace_api.Tracer) -> None:
        self.tracer = tracer
        self._sdk = tracer if type(tracer) is SDKTracer else None
        self._multi = self._sdk.span_processor if self._sdk is not None else None
        self._processors: tuple[Any, ...] | None = None
        self._max_attributes = 0

    def __repr__(self) -> str:
        return f"FinishedSpans(fast={self._usable()})"

    def _usable(self) -> bool:
        """Whether the fast way may be taken now (re-checked when processors change)."""
        multi = self._multi
        if type(multi) is not SynchronousMultiSpanProcessor or self._sdk is None:
            return False
        processors = multi._span_processors
        if processors is not self._processors:
            self._processors = processors
            self._max_attributes = self._attribute_room(self._sdk, processors)
        return self._max_attributes > 0 and self._sdk._is_enabled()

    @staticmethod
    def _attribute_room(sdk: SDKTracer, processors: tuple[Any, ...]) -> int:
        """How many attributes the fast way may write (0: it may not be taken)."""
        for p in processors:
            hooks = (type(p).on_start, getattr(type(p), "_on_ending", SpanProcessor._on_ending))
            if not all(h in _QUIET for h in hooks):
                return 0
        limits = sdk._span_limits
        if limits.max_span_attribute_length is not None:
            return 0
        metrics = getattr(sdk, "_tracer_metrics", None)
        if metrics is not None and type(metrics).__name__ != "NoOpTracerMetrics":
            return 0  # the SDK's own span metrics count starts and ends
        return limits.max_span_attributes or 0

    def emit(self, name: str, attributes: dict[str, Any], start_time: int, end_time: int,
             status: Status | None = None) -> None:
        """Record a span named ``name`` that ran from ``start_time`` to ``end_time`` (ns)
        under the current span, as ``start_span`` + ``end`` would."""
        plain = (_plain(attributes) if self._usable()
                 and len(attributes) <= self._max_attributes else None)
        sdk = self._sdk
        if plain is None or sdk is None:
            span = self.tracer.start_span(name, attributes=attributes, start_time=start_time)
            if status is not None:
                span.set_status(status)
            span.end(end_time=end_time)
            return
        parent: trace_api.SpanContext | None = trace_api.get_current_span().get_span_context()
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = sdk.id_generator.generate_trace_id()
        else:
            trace_id = parent.trace_id
        sampled = sdk.sampler.should_sample(None, trace_id, name, SpanKind.INTERNAL, plain, ())
        decision = sampled.decision
        if decision is Decision.DROP:
            return
        flags = (TraceFlags.SAMPLED if decision is Decision.RECORD_AND_SAMPLE
                 else TraceFlags.DEFAULT)
        random_id = (sdk.id_generator.is_trace_id_random() if parent is None
                     else bool(parent.trace_flags & _RANDOM_FLAG))
        if random_id and _RANDOM_FLAG:
            flags |= _RANDOM_FLAG
        context = trace_api.SpanContext(trace_id, sdk.id_generator.generate_span_id(),
                                        is_remote=False, trace_flags=TraceFlags(flags),
                                        trace_state=sampled.trace_state)
        given: Any = sampled.attributes  # a read-only view of what the sampler kept
        assert self._multi is not None
        self._multi.on_end(ReadableSpan(
            name=name, context=context, parent=parent, resource=sdk.resource,
            attributes=given.copy(), kind=SpanKind.INTERNAL,
            instrumentation_info=sdk.instrumentation_info,
            status=status if status is not None else _UNSET, start_time=start_time,
            end_time=end_time, instrumentation_scope=sdk._instrumentation_scope))


def _plain(attributes: dict[str, Any]) -> dict[str, Any] | None:
    """``attributes`` as the SDK's cleaning would leave them, or None when cleaning could
    change or drop something (then the SDK's way does it)."""
    out = attributes
    for key, value in attributes.items():
        if type(key) is not str or not key:
            return None  # the SDK drops it, with a warning
        kind = type(value)
        if kind is str or kind is float or kind is bool or kind is int:
            continue
        if kind is list or kind is tuple:
            if value:
                first = type(value[0])
                if first not in _PLAIN or any(type(v) is not first for v in value):
                    return None
            if kind is list:
                if out is attributes:
                    out = dict(attributes)
                out[key] = tuple(value)
            continue
        return None
    return out
