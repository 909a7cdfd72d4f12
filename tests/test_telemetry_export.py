"""Export through telemetry.setup(): OTLP gRPC and HTTP to a real receiver, the span store,
the environment switches, and the processor that counts drops.

setup() installs global providers, which OpenTelemetry allows once per process, so
each env-driven setup runs in its own subprocess.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult

from telemetry import conventions as c
from telemetry.processor import CountingBatchSpanProcessor
from telemetry.receiver import OTLPReceiver
from telemetry.recorder import Recorder
from telemetry.store import SpanStoreExporter

ROOT = Path(__file__).resolve().parent.parent

# One request that fails over once, recorded through setup()'s providers.
DRIVER = textwrap.dedent("""
    import json, sys
    import telemetry.setup as ts
    from tests.test_telemetry_recorder import failover_request
    store = sys.argv[1] if len(sys.argv) > 1 and sys.argv[1] else None
    tel = ts.setup(store_path=store)
    assert ts.setup() is tel  # idempotent
    rec = tel.recorder()
    failover_request(rec)
    rec.observe_budget(lambda: 12.5)
    ok = tel.force_flush()
    tel.shutdown(); tel.shutdown()  # idempotent
    print(json.dumps({"enabled": tel.enabled, "flushed": ok, "dropped": tel.spans_dropped,
                      "processors": len(tel.processors)}))
""")


def run_driver(env: dict[str, str], store: Path | None = None) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    clean.update(env)
    clean["PYTHONPATH"] = str(ROOT)
    proc = subprocess.run([sys.executable, "-c", DRIVER, str(store or "")], cwd=ROOT, env=clean,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


EXPECTED = {"invoke_agent implementation", "amm.select", "chat gpt-4-turbo",
            "chat claude-3.5-sonnet", "amm.evaluate"}


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_otlp_export_reaches_a_real_receiver(protocol):
    with OTLPReceiver() as rx:
        endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
        out = run_driver({"OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
                          "OTEL_EXPORTER_OTLP_PROTOCOL": protocol,
                          "OTEL_SERVICE_NAME": "agents-under-test",
                          "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=test"})
        assert out["flushed"] is True and out["dropped"] == 0
        assert rx.wait_for(5, timeout=10)
        spans = {s.name: s for s in rx.spans()}
        metrics = {m.name for m in rx.metrics()}
    assert set(spans) == EXPECTED
    transport = "grpc" if protocol == "grpc" else "http"
    assert {s.transport for s in spans.values()} == {transport}
    ok = spans["chat claude-3.5-sonnet"]
    assert ok.attributes["gen_ai.provider.name"] == "anthropic"
    assert ok.attributes["gen_ai.usage.output_tokens"] == 340
    assert ok.attributes["amm.cost_usd"] == 0.0042
    assert ok.attributes["gen_ai.response.finish_reasons"] == ["stop"]
    assert [e[1]["gen_ai.evaluation.name"] for e in ok.events] == [
        "overall", "completeness", "relevance", "coherence"]
    agent = spans["invoke_agent implementation"]
    assert ok.parent_span_id == agent.span_id and ok.trace_id == agent.trace_id
    assert spans["chat gpt-4-turbo"].attributes["error.type"] == "ProviderError"
    assert spans["amm.select"].attributes["amm.selection.excluded"] == ["gemini-pro: unavailable"]
    assert agent.resource["service.name"] == "agents-under-test"
    assert agent.resource["deployment.environment"] == "test"
    assert {c.METRIC_OPERATION_DURATION, c.METRIC_TOKEN_USAGE, c.METRIC_COST,
            c.METRIC_FAILOVERS, c.METRIC_CACHE_REQUESTS, c.METRIC_QUALITY_SCORE,
            c.METRIC_BUDGET_UTILIZATION} <= metrics


def test_without_an_endpoint_nothing_is_exported_and_the_store_still_fills(tmp_path):
    store = tmp_path / "amm.db"
    out = run_driver({}, store)
    assert out == {"enabled": True, "flushed": True, "dropped": 0, "processors": 1}
    conn = sqlite3.connect(store)
    names = {r[0] for r in conn.execute("SELECT SpanName FROM otel_traces")}
    assert names == EXPECTED
    row = conn.execute("SELECT SpanAttributes, Events, ServiceName, SpanKind, StatusCode "
                       "FROM otel_traces WHERE SpanName = 'chat gpt-4-turbo'").fetchone()
    assert json.loads(row[0])["error.type"] == "ProviderError"
    assert (row[2], row[3], row[4]) == ("amm", "Client", "Error")


def test_sdk_disabled_records_nothing_but_setup_still_works(tmp_path):
    out = run_driver({"OTEL_SDK_DISABLED": "true"}, tmp_path / "x.db")
    assert out == {"enabled": False, "flushed": True, "dropped": 0, "processors": 0}


def test_traces_exporter_none_keeps_otlp_off_even_with_an_endpoint():
    with OTLPReceiver(grpc=True, http=False) as rx:
        out = run_driver({"OTEL_EXPORTER_OTLP_ENDPOINT": rx.grpc_endpoint,
                          "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"})
        assert out["processors"] == 0
        assert rx.span_count() == 0


def test_sampler_always_off_from_env_exports_no_span(tmp_path):
    store = tmp_path / "amm.db"
    run_driver({"OTEL_TRACES_SAMPLER": "always_off"}, store)
    assert sqlite3.connect(store).execute("SELECT COUNT(*) FROM otel_traces").fetchone()[0] == 0


def test_setup_adopts_the_applications_own_tracer_provider(tmp_path):
    script = textwrap.dedent("""
        import sys
        from opentelemetry import trace
        from opentelemetry.sdk.trace import TracerProvider
        import telemetry.setup as ts
        mine = TracerProvider()
        trace.set_tracer_provider(mine)
        tel = ts.setup(store_path=sys.argv[1])
        assert tel.tracer_provider is mine and trace.get_tracer_provider() is mine
        with trace.get_tracer("app").start_as_current_span("app work"):
            pass
        tel.force_flush(); tel.shutdown()
    """)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    env["PYTHONPATH"] = str(ROOT)
    store = tmp_path / "amm.db"
    proc = subprocess.run([sys.executable, "-c", script, str(store)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    names = [r[0] for r in sqlite3.connect(store).execute("SELECT SpanName FROM otel_traces")]
    assert names == ["app work"]


class SlowExporter(SpanExporter):
    """Blocks until released, so the queue fills."""

    def __init__(self) -> None:
        import threading
        self.release = threading.Event()
        self.entered = threading.Event()
        self.count = 0

    def export(self, spans):
        self.entered.set()
        self.release.wait(5)
        self.count += len(spans)
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        self.release.set()


def test_a_full_queue_counts_dropped_spans_in_a_metric():
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    exporter = SlowExporter()
    processor = CountingBatchSpanProcessor(exporter, max_queue_size=4, max_export_batch_size=2,
                                           schedule_delay_millis=60_000, meter_provider=mp)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    tracer = tp.get_tracer("t")
    for i in range(2):  # a full batch: the worker takes it and blocks in export
        tracer.start_span(f"s{i}").end()
    assert exporter.entered.wait(5)
    for i in range(2, 20):  # 4 fit in the queue, 14 are dropped
        tracer.start_span(f"s{i}").end()
    exporter.release.set()
    tp.shutdown()
    assert processor.dropped == 14
    assert exporter.count == 6
    points = [p for rm in reader.get_metrics_data().resource_metrics for sm in rm.scope_metrics
              for m in sm.metrics if m.name == c.METRIC_SPANS_DROPPED for p in m.data.data_points]
    assert sum(p.value for p in points) == processor.dropped


def test_default_queue_holds_a_burst_of_ten_thousand_spans_without_a_drop():
    exporter = SlowExporter()
    processor = CountingBatchSpanProcessor(exporter)
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    tracer = tp.get_tracer("t")
    for i in range(10_000):
        tracer.start_span(f"s{i}").end()
    exporter.release.set()
    tp.shutdown()
    assert processor.dropped == 0 and exporter.count == 10_000


def _readable_spans(n: int):
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    mem = InMemorySpanExporter()
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(SimpleSpanProcessor(mem))
    rec = Recorder(tracer_provider=tp)
    from tests.test_telemetry_recorder import failover_request
    for _ in range(n):
        failover_request(rec)
    return mem.get_finished_spans()


def test_span_store_replayed_batch_is_never_duplicated(tmp_path):
    spans = _readable_spans(2)
    store = SpanStoreExporter(tmp_path / "s.db")
    assert store.export(spans) is SpanExportResult.SUCCESS
    assert store.export(spans) is SpanExportResult.SUCCESS  # replay
    store.shutdown()
    store.shutdown()
    conn = sqlite3.connect(tmp_path / "s.db")
    assert conn.execute("SELECT COUNT(*) FROM otel_traces").fetchone()[0] == 10
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    ts, events = conn.execute("SELECT Timestamp, Events FROM otel_traces "
                              "WHERE SpanName = 'chat claude-3.5-sonnet' LIMIT 1").fetchone()
    assert ts == "2025-10-09T08:53:20.031000000Z"
    assert [e["Name"] for e in json.loads(events)] == ["gen_ai.evaluation.result"] * 4
    assert store.export(spans) is SpanExportResult.FAILURE  # after shutdown


def test_span_store_failure_is_reported_not_raised(tmp_path):
    blocker = tmp_path / "dir-not-file"
    blocker.mkdir()
    store = SpanStoreExporter(blocker)
    assert store.export(_readable_spans(1)) is SpanExportResult.FAILURE


def test_telemetry_imports_neither_amm_nor_analytics_and_import_is_lazy():
    script = ("import sys, telemetry, telemetry.events, telemetry.conventions\n"
              "assert 'opentelemetry.sdk' not in sys.modules\n"
              "import telemetry.recorder, telemetry.setup, telemetry.store, telemetry.stats, "
              "telemetry.receiver\n"
              "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('amm', 'analytics'))\n"
              "assert not bad, bad\n"
              "assert callable(telemetry.setup) and "
              "telemetry.setup.Telemetry is telemetry.Telemetry\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
