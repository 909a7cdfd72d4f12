"""OTLP export in a child process (telemetry.export_process): same bytes at the receiver,
failures counted in the application, drops counted, no child left behind."""

from __future__ import annotations

import json
import os
import pickle
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import TracerProvider

from telemetry import conventions as c
from telemetry.export_guard import ExportGuard
from telemetry.export_process import ExportProcessSpanProcessor
from telemetry.receiver import OTLPReceiver
from telemetry.recorder import Recorder
from telemetry.span_record import Interner, Tables, decode, encode
from tests.test_telemetry_export import _readable_spans
from tests.test_telemetry_recorder import failover_request

ROOT = Path(__file__).resolve().parent.parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running either.
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().rsplit(")", 1)[1].split()[0] != "Z"


def _wait_gone(pid: int, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not _alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_a_span_record_pickled_and_rebuilt_encodes_to_the_same_otlp_bytes() -> None:
    spans = _readable_spans(3)
    interner = Interner()
    records = pickle.loads(pickle.dumps([encode(s, interner) for s in spans]))
    tables = Tables().update(interner.take_new())
    rebuilt = [decode(r, tables) for r in records]
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()


def _pipeline(
    endpoint: str, protocol: str, **kwargs: object
) -> tuple[TracerProvider, ExportProcessSpanProcessor, ExportGuard, InMemoryMetricReader]:
    reader = InMemoryMetricReader()
    mp = MeterProvider(metric_readers=[reader], shutdown_on_exit=False)
    guard = ExportGuard("traces", endpoint, protocol, meter_provider=mp)
    processor = ExportProcessSpanProcessor(guard, meter_provider=mp, **kwargs)  # type: ignore[arg-type]
    tp = TracerProvider(shutdown_on_exit=False)
    tp.add_span_processor(processor)
    return tp, processor, guard, reader


def _points(reader: InMemoryMetricReader, name: str) -> list[object]:
    data = reader.get_metrics_data()
    return [p for rm in (data.resource_metrics if data else ()) for sm in rm.scope_metrics
            for m in sm.metrics if m.name == name for p in m.data.data_points]


@pytest.mark.parametrize("protocol", ["http/protobuf", "grpc"])
def test_spans_reach_a_real_receiver_through_a_child_that_stops_with_the_processor(
        protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as rx:
        endpoint = rx.grpc_endpoint if protocol == "grpc" else rx.http_endpoint
        var = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
        monkeypatch.setenv(var, endpoint if protocol == "grpc" else endpoint + "/v1/traces")
        tp, processor, _, _ = _pipeline(endpoint, protocol)
        for _ in range(3):
            failover_request(Recorder(tracer_provider=tp))
        assert processor.force_flush()
        pid = processor.pid
        assert pid is not None and pid != os.getpid()
        assert rx.span_count() == 15  # flushed means received
        tp.shutdown()
        spans = rx.spans()
    assert _wait_gone(pid, 1.0), "the exporter process outlived shutdown"
    assert processor.pid is None and processor.dropped == 0
    assert {s.transport for s in spans} == {"grpc" if protocol == "grpc" else "http"}
    chat = next(s for s in spans if s.name == "chat claude-3.5-sonnet")
    assert chat.attributes["gen_ai.usage.output_tokens"] == 340
    assert [e[1]["gen_ai.evaluation.name"] for e in chat.events][:1] == ["overall"]
    processor.shutdown()  # idempotent


def test_a_backend_that_is_down_is_counted_and_reported_in_the_application(
        monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}/v1/traces"
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", endpoint)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_TIMEOUT", "0.5")
    tp, processor, _, reader = _pipeline(endpoint, "http/protobuf")
    with caplog.at_level("WARNING", logger="amm.telemetry"):
        for _ in range(2):
            failover_request(Recorder(tracer_provider=tp))
            assert processor.force_flush()  # flushed; the failure is the guard's to count
    tp.shutdown()
    failures = _points(reader, c.METRIC_EXPORT_FAILURES)
    assert sum(p.value for p in failures) == 2  # type: ignore[attr-defined]
    reports = [r for r in caplog.records if "export to" in r.getMessage()]
    assert len(reports) == 1 and "Is the backend running" in reports[0].getMessage()


def test_a_full_queue_drops_and_counts_and_the_rest_is_exported(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.http_endpoint + "/v1/traces")
        tp, processor, _, reader = _pipeline(rx.http_endpoint, "http/protobuf", max_queue_size=4,
                                             schedule_delay_millis=60_000)
        tracer = tp.get_tracer("t")
        for i in range(10):  # fewer than a frame: the writer sleeps, the queue holds 4
            tracer.start_span(f"s{i}").end()
        assert processor.force_flush()
        assert rx.span_count() == 4
        tp.shutdown()
    assert processor.dropped == 6
    assert sum(p.value for p in _points(reader, c.METRIC_SPANS_DROPPED)) == 6  # type: ignore[attr-defined]


def test_a_child_that_dies_is_started_again(monkeypatch: pytest.MonkeyPatch) -> None:
    import telemetry.export_process as ep

    monkeypatch.setattr(ep, "RESTART_INTERVAL_S", 0.0)
    with OTLPReceiver() as rx:
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", rx.http_endpoint + "/v1/traces")
        tp, processor, _, _ = _pipeline(rx.http_endpoint, "http/protobuf")
        tracer = tp.get_tracer("t")
        tracer.start_span("before").end()
        assert processor.force_flush()
        first = processor.pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        assert _wait_gone(first)
        time.sleep(0.2)
        tracer.start_span("after").end()
        assert processor.force_flush()
        assert processor.pid not in (None, first)
        assert "after" in {s.name for s in rx.spans()}
        tp.shutdown()


SETUP = textwrap.dedent("""
    import json, os, sys, time
    import telemetry.setup as ts
    from tests.test_telemetry_recorder import failover_request
    tel = ts.setup()
    failover_request(tel.recorder())
    tel.force_flush()
    kinds = [type(p).__name__ for p in tel.processors]
    pids = [p.pid for p in tel.processors if hasattr(p, "pid")]
    def ppid(pid):
        try:
            with open(f"/proc/{pid}/stat") as stat:
                return int(stat.read().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError):
            return None
    children = sorted(int(d) for d in os.listdir("/proc") if d.isdigit() and ppid(d) == os.getpid())
    print(json.dumps({"kinds": kinds, "pids": pids, "children": children}), flush=True)
    if sys.argv[1] == "hang":
        time.sleep(60)
    tel.shutdown()
""")


def _run_setup(env: dict[str, str], mode: str = "") -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AMM_EXPORT"))}
    clean.update(env, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", SETUP, mode], cwd=ROOT, env=clean,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_without_an_endpoint_no_child_is_started() -> None:
    proc = _run_setup({"OTEL_METRICS_EXPORTER": "none"})
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert json.loads(out.splitlines()[-1]) == {"kinds": [], "pids": [], "children": []}


def test_the_switch_off_exports_in_process() -> None:
    with OTLPReceiver() as rx:
        proc = _run_setup({"OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint,
                           "OTEL_METRICS_EXPORTER": "none", "AMM_EXPORT_PROCESS": "0"})
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        assert rx.wait_for(5, timeout=10)
    seen = json.loads(out.splitlines()[-1])
    assert seen["kinds"] == ["CountingBatchSpanProcessor"] and seen["children"] == []


def test_the_child_exits_by_itself_when_the_application_is_killed() -> None:
    with OTLPReceiver() as rx:
        proc = _run_setup({"OTEL_EXPORTER_OTLP_ENDPOINT": rx.http_endpoint,
                           "OTEL_METRICS_EXPORTER": "none"}, "hang")
        assert proc.stdout is not None
        seen = json.loads(proc.stdout.readline())
        assert seen["kinds"] == ["ExportProcessSpanProcessor"]
        child = seen["pids"][0]
        assert seen["children"] == [child]
        assert rx.wait_for(5, timeout=10)
        proc.kill()
        proc.wait(10)
        assert _wait_gone(child, 5.0), "the exporter process was orphaned"
        proc.stdout.close()
        assert proc.stderr is not None
        proc.stderr.close()


FORK = textwrap.dedent("""
    import json, os, sys
    import telemetry.setup as ts
    from tests.test_telemetry_recorder import failover_request
    tel = ts.setup()
    failover_request(tel.recorder())
    tel.force_flush()
    [processor] = tel.processors
    first = processor.pid
    pid = os.fork()
    if pid == 0:  # the forked process exports through a child of its own
        failover_request(tel.recorder())
        ok = tel.force_flush()
        mine = processor.pid
        tel.shutdown()
        os._exit(0 if ok and mine not in (None, first) else 3)
    _, status = os.waitpid(pid, 0)
    tel.shutdown()  # must not wait for the fork's copy of the pipe
    print(json.dumps({"fork_status": status, "first": first}), flush=True)
""")


def test_a_forked_process_exports_through_its_own_child_and_shutdown_does_not_hang() -> None:
    with OTLPReceiver() as rx:
        clean = {k: v for k, v in os.environ.items() if not k.startswith(("OTEL_", "AMM_EXPORT"))}
        clean.update(OTEL_EXPORTER_OTLP_ENDPOINT=rx.http_endpoint, OTEL_METRICS_EXPORTER="none",
                     PYTHONPATH=str(ROOT))
        began = time.monotonic()
        proc = subprocess.run([sys.executable, "-c", FORK], cwd=ROOT, env=clean,
                              capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - began < 20  # no STOP_TIMEOUT_S wait on a held pipe
        out = json.loads(proc.stdout.splitlines()[-1])
        assert out["fork_status"] == 0
        assert rx.wait_for(10, timeout=10)
    assert _wait_gone(out["first"], 1.0)
