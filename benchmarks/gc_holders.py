"""Generation-0 collections caused by span processors that hold spans until export.

Records 2,000 failover requests (five spans each) through one span processor at a time
and counts generation-0 collections per 1,000 requests: a processor that frees the span
when it ends (``SimpleSpanProcessor`` to a null exporter), the SDK's batch processor
(holds every ``ReadableSpan`` up to its 500 ms delay), and amm's exporter-process
processor (holds a tuple record until the writer sends it); and the span store behind
the SDK's batch processor and behind its own record-holding processor (real SQLite
files in a temporary directory). The exporter process is pointed at a closed port:
what it sends does not matter here.

    python -m benchmarks.gc_holders
"""

from __future__ import annotations

import gc
import logging
import os
import tempfile

from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)

__all__ = ["main", "run"]


class _Null(SpanExporter):
    def export(self, spans: object) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def run(label: str, processor: SpanProcessor, requests: int = 2000) -> float:
    """Generation-0 collections per 1,000 requests recorded through ``processor``."""
    from telemetry.recorder import Recorder
    from tests.test_telemetry_recorder import failover_request

    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    rec = Recorder(tracer_provider=tp)
    for _ in range(200):
        failover_request(rec)
    gc.collect()
    before = gc.get_stats()[0]["collections"]
    for _ in range(requests):
        failover_request(rec)
    per_1000: float = (gc.get_stats()[0]["collections"] - before) * 1000.0 / requests
    print(f"{label}: {per_1000:.1f} generation-0 collections per 1,000 requests", flush=True)
    tp.shutdown()
    return per_1000


def main() -> int:
    """Each processor in turn; prints one line each."""
    from telemetry.export_guard import ExportGuard
    from telemetry.export_process import ExportProcessSpanProcessor
    from telemetry.processor import CountingBatchSpanProcessor
    from telemetry.store import SpanStoreExporter
    from telemetry.store_processor import SpanStoreProcessor

    run("span freed at its end (SimpleSpanProcessor)", SimpleSpanProcessor(_Null()))
    run("ReadableSpan held (BatchSpanProcessor, 500 ms)",
        BatchSpanProcessor(_Null(), max_queue_size=32768, schedule_delay_millis=500,
                           max_export_batch_size=512))
    endpoint = "http://127.0.0.1:9/v1/traces"
    os.environ.update(OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=endpoint, OTEL_EXPORTER_OTLP_TIMEOUT="0.2")
    logging.disable(logging.WARNING)
    run("record held (ExportProcessSpanProcessor)",
        ExportProcessSpanProcessor(ExportGuard("traces", endpoint, "http/protobuf")))
    with tempfile.TemporaryDirectory() as tmp:
        run("span store: ReadableSpan held (BatchSpanProcessor, 500 ms)",
            CountingBatchSpanProcessor(SpanStoreExporter(os.path.join(tmp, "a.db"))))
        run("span store: record held (SpanStoreProcessor)",
            SpanStoreProcessor(SpanStoreExporter(os.path.join(tmp, "b.db"))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
