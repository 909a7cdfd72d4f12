"""The span store's record-holding processor writes the rows the exporter writes from spans."""

from __future__ import annotations

import gc
import sqlite3
from pathlib import Path

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, SpanContext, Status, StatusCode, TraceFlags

from telemetry.recorder import Recorder
from telemetry.store import SpanStoreExporter, record_row, span_row, store_record
from telemetry.store_processor import SpanStoreProcessor
from tests.test_telemetry_export import _readable_spans
from tests.test_telemetry_recorder import failover_request


def _table(db: Path) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return sorted(conn.execute("SELECT * FROM otel_traces").fetchall())


def test_a_record_makes_the_row_of_its_span() -> None:
    tp = TracerProvider(shutdown_on_exit=False)
    mem = InMemorySpanExporter()
    tp.add_span_processor(SimpleSpanProcessor(mem))
    tracer = tp.get_tracer("scope", "1.2")
    linked = SpanContext(1, 2, is_remote=True, trace_flags=TraceFlags(1))
    with tracer.start_as_current_span("parent", links=[Link(linked, {"k": (1, 2)})]) as span:
        span.add_event("e", {"x": ("a",)})
        span.set_status(Status(StatusCode.ERROR, "bad"))
        with tracer.start_as_current_span("child") as child:
            child.set_attribute("z", [1.5, 2.5])
    spans = [*mem.get_finished_spans(), *_readable_spans(1)]
    for finished in spans:
        assert record_row(store_record(finished)) == span_row(finished)


def test_the_processor_stores_the_same_rows_as_the_exporter_and_holds_no_span(
        tmp_path: Path) -> None:
    spans = _readable_spans(3)
    reference = SpanStoreExporter(tmp_path / "reference.db")
    reference.export(spans)
    reference.shutdown()

    processor = SpanStoreProcessor(SpanStoreExporter(tmp_path / "records.db"),
                                   schedule_delay_millis=3_600_000)
    for finished in spans:
        processor.on_end(finished)
    assert not any(obj is span for obj in gc.get_referents(*processor._queue) for span in spans)
    assert processor.force_flush()
    processor.shutdown()
    processor.shutdown()
    assert _table(tmp_path / "records.db") == _table(tmp_path / "reference.db")
    assert len(_table(tmp_path / "records.db")) == 15
    assert not processor.force_flush()


def test_a_full_queue_drops_and_counts(tmp_path: Path) -> None:
    tp = TracerProvider(shutdown_on_exit=False)
    processor = SpanStoreProcessor(SpanStoreExporter(tmp_path / "s.db"), max_queue_size=3,
                                   schedule_delay_millis=3_600_000)
    tp.add_span_processor(processor)
    failover_request(Recorder(tracer_provider=tp))  # five spans, fewer than a slice: queued
    assert processor.dropped == 2
    assert processor.force_flush()
    tp.shutdown()
    assert len(_table(tmp_path / "s.db")) == 5 - processor.dropped
