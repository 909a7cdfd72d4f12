"""The span store's processor: it keeps a compact record of each span, not the span.

The SDK's ``BatchSpanProcessor`` keeps every finished ``Span`` until its export (up
to 500 ms and 512 spans later), and with it ~15 objects the cyclic GC tracks
(attribute mappings, events, context, status...). Freed in one batch, they outnumber
what a generation-0 pass has counted since the last one, so their frees do not pay
back their allocations: in amm that held-span churn was most of the generation-0
collections it made beyond litellm's (``benchmarks/PROFILE.md``).
:class:`SpanStoreProcessor` instead turns each sampled span, as it ends, into a
:func:`~telemetry.store.store_record` (~4 tracked objects; resource and scope by
reference), queues it, and its thread hands the records to the
:class:`~telemetry.store.SpanStoreExporter` a slice at a time, as soon as a slice
is there. The rows are the ones the exporter writes from the spans themselves.

Drops and lifecycle as :class:`~telemetry.processor.CountingBatchSpanProcessor`: a
bounded queue (``OTEL_BSP_MAX_QUEUE_SIZE``, default 32,768) whose overflow is
counted in ``amm.telemetry.spans_dropped`` and :attr:`SpanStoreProcessor.dropped`;
``force_flush`` writes what is queued; ``shutdown`` writes the rest and lets go of
the store. Idempotent. After ``os.fork()`` the forked process starts its own thread.

>>> tracer_provider.add_span_processor(SpanStoreProcessor(SpanStoreExporter("amm.db")))
"""

from __future__ import annotations

import logging
import os
import threading
import weakref
from collections import deque
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from telemetry import conventions as c
from telemetry.processor import DEFAULT_MAX_QUEUE_SIZE, DEFAULT_SCHEDULE_DELAY_MS, env_number
from telemetry.store import SpanStoreExporter, StoreRecord, store_record

__all__ = ["WRITE_SPANS", "SpanStoreProcessor"]

_log = logging.getLogger("amm.telemetry")

WRITE_SPANS = 32
"""Queued spans that wake the writing thread (and the most written per commit): the
records are freed a few at a time, soon after their span ended."""


class SpanStoreProcessor(SpanProcessor):
    """Writes finished, sampled spans into the span store through ``exporter``."""

    def __init__(self, exporter: SpanStoreExporter, *, max_queue_size: int | None = None,
                 schedule_delay_millis: float | None = None,
                 meter_provider: MeterProvider | None = None) -> None:
        self.exporter = exporter
        self.dropped = 0
        self._capacity = int(max_queue_size or env_number("OTEL_BSP_MAX_QUEUE_SIZE",
                                                           DEFAULT_MAX_QUEUE_SIZE))
        self._delay_s = (schedule_delay_millis or env_number(
            "OTEL_BSP_SCHEDULE_DELAY", DEFAULT_SCHEDULE_DELAY_MS)) / 1000.0
        self._counter: Any = None
        if meter_provider is not None:
            self._counter = meter_provider.get_meter(c.INSTRUMENTATION_SCOPE).create_counter(
                c.METRIC_SPANS_DROPPED, unit="{span}",
                description="Spans dropped because the export queue was full")
        self._closed = False
        self._start()
        ref = weakref.WeakMethod(self._start)
        os.register_at_fork(after_in_child=lambda: (m := ref()) is not None and m())

    def _start(self) -> None:
        # Fresh state (also in a forked process: the parent's thread and locks are not ours).
        self._queue: deque[StoreRecord] = deque()
        self._wake = threading.Event()
        self._write_lock = threading.Lock()  # one drain at a time: rows stay in span order
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="amm-span-store", daemon=True)
        if not self._closed:
            self._thread.start()

    def __repr__(self) -> str:
        return (f"SpanStoreProcessor({self.exporter.path}, queued={len(self._queue)}, "
                f"capacity={self._capacity}, dropped={self.dropped})")

    def on_end(self, span: ReadableSpan) -> None:
        if self._closed or span.context is None or not span.context.trace_flags.sampled:
            return
        queue = self._queue
        if len(queue) >= self._capacity:
            self._count_drops(1)
            return
        queue.append(store_record(span))
        if len(queue) >= WRITE_SPANS and not self._wake.is_set():
            self._wake.set()

    def _count_drops(self, count: int) -> None:
        self.dropped += count
        if self._counter is not None:
            self._counter.add(count, {"exporter": type(self.exporter).__name__})

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            self._drain()

    def _drain(self) -> None:
        """Write every queued record, a slice at a time (each slice waits for its commit)."""
        with self._write_lock:
            queue = self._queue
            while queue:
                part: list[StoreRecord] = []
                try:
                    for _ in range(WRITE_SPANS):
                        part.append(queue.popleft())
                except IndexError:
                    pass
                try:
                    self.exporter.write_records(part)
                except Exception:  # as the SDK's processor: logged, the thread goes on
                    _log.exception("span store: %d spans could not be written", len(part))

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Write every span queued now (on the caller's thread); False after shutdown."""
        if self._closed:
            return False
        self._drain()
        return True

    def shutdown(self) -> None:
        """Write what is queued, stop the thread, let go of the store. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._thread.join(30.0)
        self._drain()
        self.exporter.shutdown()
