"""A batch span processor that counts the spans it drops.

The SDK's ``BatchSpanProcessor`` drops a span silently (a log line) when its queue
is full. This subclass counts each drop in ``amm.telemetry.spans_dropped`` and in
``dropped``, and sizes the queue for amm's load: the defaults below keep tens of
thousands of spans per minute without a drop, with larger batches and a longer
delay than the SDK's (fewer, bigger exports: less GIL contention with callers).

Configuration: explicit argument > ``OTEL_BSP_*`` environment variable > default.
"""

from __future__ import annotations

import os

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

from telemetry import conventions as c

__all__ = [
    "DEFAULT_EXPORT_BATCH_SIZE",
    "DEFAULT_MAX_QUEUE_SIZE",
    "DEFAULT_SCHEDULE_DELAY_MS",
    "CountingBatchSpanProcessor",
]

DEFAULT_MAX_QUEUE_SIZE = 32768
"""Spans queued before drops begin (``OTEL_BSP_MAX_QUEUE_SIZE``; SDK default 2048)."""
DEFAULT_EXPORT_BATCH_SIZE = 2048
"""Spans per export (``OTEL_BSP_MAX_EXPORT_BATCH_SIZE``; SDK default 512)."""
DEFAULT_SCHEDULE_DELAY_MS = 2000.0
"""Delay between exports of a partial batch (``OTEL_BSP_SCHEDULE_DELAY``; SDK 5000)."""


def _pick(explicit: float | None, env: str, default: float) -> float | None:
    """Explicit > env (None: let the SDK parse it) > our default."""
    if explicit is not None:
        return explicit
    if os.environ.get(env):
        return None
    return default


class CountingBatchSpanProcessor(BatchSpanProcessor):
    """``BatchSpanProcessor`` that counts drops (queue full) in a metric."""

    def __init__(
        self,
        exporter: SpanExporter,
        *,
        max_queue_size: int | None = None,
        max_export_batch_size: int | None = None,
        schedule_delay_millis: float | None = None,
        meter_provider: MeterProvider | None = None,
    ) -> None:
        queue = _pick(max_queue_size, "OTEL_BSP_MAX_QUEUE_SIZE", DEFAULT_MAX_QUEUE_SIZE)
        batch = _pick(max_export_batch_size, "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                      DEFAULT_EXPORT_BATCH_SIZE)
        if queue is not None and batch is not None:
            batch = min(batch, queue)
        super().__init__(
            exporter,
            max_queue_size=None if queue is None else int(queue),
            max_export_batch_size=None if batch is None else int(batch),
            schedule_delay_millis=_pick(schedule_delay_millis, "OTEL_BSP_SCHEDULE_DELAY",
                                        DEFAULT_SCHEDULE_DELAY_MS),
            meter_provider=meter_provider,
        )
        self.dropped = 0
        self._counter = None
        if meter_provider is not None:
            self._counter = meter_provider.get_meter(c.INSTRUMENTATION_SCOPE).create_counter(
                c.METRIC_SPANS_DROPPED, unit="{span}",
                description="Spans dropped because the export queue was full")
        # The SDK's queue is a bounded deque that discards its oldest entry on
        # overflow; we look at it to count what it is about to discard.
        self._queue = self._batch_processor._queue
        self._capacity = self._batch_processor._max_queue_size
        self._exporter_name = type(exporter).__name__

    def __repr__(self) -> str:
        return (f"CountingBatchSpanProcessor({self._exporter_name}, queued={len(self._queue)}, "
                f"capacity={self._capacity}, dropped={self.dropped})")

    def on_end(self, span: ReadableSpan) -> None:
        """Queue ``span`` for export; count a drop when the queue is full."""
        if span.context and span.context.trace_flags.sampled and len(self._queue) >= self._capacity:
            self.dropped += 1
            if self._counter is not None:
                self._counter.add(1, {"exporter": self._exporter_name})
        super().on_end(span)
