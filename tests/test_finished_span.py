"""telemetry.finished_span: a span recorded after the fact is the span the SDK makes.

Each test records the same span both ways, through :class:`FinishedSpans` and through
the SDK's ``start_span``/``end``, into real SDK tracer providers with in-memory
exporters, and compares what the exporters got, field by field.
"""

from __future__ import annotations

from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ALWAYS_OFF, ParentBased, TraceIdRatioBased
from opentelemetry.trace import Status, StatusCode

from telemetry.finished_span import FinishedSpans

ATTRS: dict[str, Any] = {
    "amm.agent_type": "review", "amm.selection.propensity": 0.25, "amm.attempt": 2,
    "amm.cache.hit": False, "amm.selection.excluded": ["m1: disabled", "m2: rate-limited"],
    "amm.selection.scores": (0.5, 0.25), "amm.empty": [],
}


def _provider(**kwargs: Any) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    tp = TracerProvider(resource=Resource.create({"service.name": "finished-test"}), **kwargs)
    tp.add_span_processor(SimpleSpanProcessor(exporter))
    return tp, exporter


def _record(fast: bool, tracer: Any, spans: FinishedSpans, attrs: dict[str, Any],
            status: Status | None) -> None:
    if fast:
        spans.emit("amm.select", dict(attrs), 1_000, 2_000, status)
        return
    span = tracer.start_span("amm.select", attributes=dict(attrs), start_time=1_000)
    if status is not None:
        span.set_status(status)
    span.end(end_time=2_000)


def _both(attrs: dict[str, Any], status: Status | None = None, *, parent: bool = True,
          **kwargs: Any) -> tuple[list[ReadableSpan], list[ReadableSpan], FinishedSpans]:
    """The spans exported when ``attrs`` is recorded the fast way and the SDK's way."""
    out = []
    finished = None
    for fast in (True, False):
        tp, exporter = _provider(**kwargs)
        tracer = tp.get_tracer("amm")
        spans = FinishedSpans(tracer)
        if parent:
            with tracer.start_as_current_span("invoke_agent review"):
                _record(fast, tracer, spans, attrs, status)
        else:
            _record(fast, tracer, spans, attrs, status)
        out.append([s for s in exporter.get_finished_spans() if s.name == "amm.select"])
        if fast:
            finished = spans
    assert finished is not None
    return out[0], out[1], finished


def _same(a: ReadableSpan, b: ReadableSpan) -> None:
    assert a.name == b.name and a.kind == b.kind
    assert dict(a.attributes or {}) == dict(b.attributes or {})
    assert (a.start_time, a.end_time) == (b.start_time, b.end_time)
    assert (a.status.status_code, a.status.description) == (b.status.status_code,
                                                            b.status.description)
    assert a.resource.attributes == b.resource.attributes
    assert a.instrumentation_scope == b.instrumentation_scope
    assert (a.dropped_attributes, a.dropped_events, a.dropped_links) == (
        b.dropped_attributes, b.dropped_events, b.dropped_links)
    assert tuple(a.events) == tuple(b.events) and tuple(a.links) == tuple(b.links)
    assert a.context is not None and b.context is not None
    assert a.context.trace_flags == b.context.trace_flags
    assert a.context.trace_state == b.context.trace_state
    assert a.context.is_remote == b.context.is_remote
    assert (a.parent is None) == (b.parent is None)
    if a.parent is not None and b.parent is not None:
        assert a.parent.is_remote == b.parent.is_remote


def test_the_fast_way_exports_what_the_sdk_way_does_under_a_parent() -> None:
    fast, sdk, finished = _both(ATTRS)
    assert "fast=True" in repr(finished)
    assert len(fast) == len(sdk) == 1
    _same(fast[0], sdk[0])
    span = fast[0]
    assert span.attributes is not None
    assert span.attributes["amm.selection.excluded"] == ("m1: disabled", "m2: rate-limited")


def test_a_root_span_gets_a_fresh_trace_and_no_parent() -> None:
    fast, sdk, _ = _both(ATTRS, parent=False)
    _same(fast[0], sdk[0])
    assert fast[0].parent is None and fast[0].context is not None
    assert fast[0].context.trace_id != 0


def test_the_parent_is_the_current_span() -> None:
    tp, exporter = _provider()
    tracer = tp.get_tracer("amm")
    spans = FinishedSpans(tracer)
    with tracer.start_as_current_span("invoke_agent review") as agent:
        spans.emit("amm.select", {"k": "v"}, 1, 2)
    select = next(s for s in exporter.get_finished_spans() if s.name == "amm.select")
    assert select.parent is not None and select.context is not None
    assert select.parent.span_id == agent.get_span_context().span_id
    assert select.context.trace_id == agent.get_span_context().trace_id


def test_an_error_status_is_kept() -> None:
    fast, sdk, _ = _both({"amm.selection.reason": "no eligible model"},
                         Status(StatusCode.ERROR, "no eligible model"))
    _same(fast[0], sdk[0])
    assert fast[0].status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("sampler", [ALWAYS_OFF, ParentBased(ALWAYS_OFF)])
def test_the_sampler_still_decides(sampler: Any) -> None:
    fast, sdk, _ = _both(ATTRS, parent=False, sampler=sampler)
    assert fast == [] and sdk == []


def test_an_unsampled_parent_drops_the_span_both_ways() -> None:
    fast, sdk, _ = _both(ATTRS, sampler=ParentBased(TraceIdRatioBased(0.0)))
    assert fast == [] and sdk == []


@pytest.mark.parametrize("odd", [
    {"none": None}, {"mixed": [1, "a"]}, {"bytes": b"abc"}, {"dict": {"a": 1}},
    {"": "empty key"}, {"nested": [[1]]},
])
def test_values_the_sdk_cleans_go_the_sdk_way(odd: dict[str, Any]) -> None:
    fast, sdk, _ = _both({**ATTRS, **odd})
    _same(fast[0], sdk[0])


def test_a_length_limit_goes_the_sdk_way() -> None:
    fast, sdk, finished = _both({"long": "x" * 50}, span_limits=SpanLimits(max_attribute_length=8))
    assert "fast=False" in repr(finished)
    _same(fast[0], sdk[0])
    assert fast[0].attributes is not None and fast[0].attributes["long"] == "x" * 8


def test_more_attributes_than_the_count_limit_go_the_sdk_way() -> None:
    many = {f"a{i}": i for i in range(10)}
    fast, sdk, _ = _both(many, span_limits=SpanLimits(max_span_attributes=4))
    _same(fast[0], sdk[0])
    assert fast[0].dropped_attributes == 6


class _Watching(SpanProcessor):
    """A processor with its own on_start: the fast way must not skip it."""

    def __init__(self) -> None:
        self.started: list[str] = []

    def on_start(self, span: Any, parent_context: Any = None) -> None:
        self.started.append(span.name)


def test_a_processor_with_an_on_start_hook_gets_its_call() -> None:
    tp, exporter = _provider()
    tracer = tp.get_tracer("amm")
    spans = FinishedSpans(tracer)
    spans.emit("amm.select", {"k": "v"}, 1, 2)
    assert "fast=True" in repr(spans)
    watching = _Watching()
    tp.add_span_processor(watching)  # re-checked: the provider's processors changed
    spans.emit("amm.evaluate", {"k": "v"}, 3, 4)
    assert watching.started == ["amm.evaluate"] and "fast=False" in repr(spans)
    assert [s.name for s in exporter.get_finished_spans()] == ["amm.select", "amm.evaluate"]


def test_a_tracer_that_is_not_the_sdks_records_nothing_and_raises_nothing() -> None:
    spans = FinishedSpans(trace.NoOpTracerProvider().get_tracer("amm"))
    spans.emit("amm.select", dict(ATTRS), 1, 2)
    assert "fast=False" in repr(spans)
