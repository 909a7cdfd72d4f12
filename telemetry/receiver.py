"""A real OTLP receiver on loopback, for tests and the benchmark.

gRPC (``TraceService``/``MetricsService``) and HTTP (``POST /v1/traces``,
``POST /v1/metrics``, protobuf bodies) on free ports of 127.0.0.1. Received spans
are decoded to plain Python values (:class:`ReceivedSpan`). ``metrics=False`` makes it
a traces-only backend, as Phoenix, Langfuse, Jaeger and Tempo are: metrics are
answered 405 over HTTP and ``UNIMPLEMENTED`` over gRPC (and counted in
:attr:`OTLPReceiver.refused`).

>>> with OTLPReceiver() as rx:
...     os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = rx.grpc_endpoint
...     ...
...     rx.wait_for(3, timeout=5)
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from concurrent import futures
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.proto.common.v1.common_pb2 import AnyValue

__all__ = ["OTLPReceiver", "ReceivedMetric", "ReceivedSpan", "decode_value"]


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    """One span as the receiver got it, attributes decoded to Python values."""

    name: str
    trace_id: str
    span_id: str
    parent_span_id: str
    kind: int
    attributes: dict[str, Any]
    events: tuple[tuple[str, dict[str, Any]], ...]
    status_code: int
    resource: dict[str, Any] = field(default_factory=dict)
    transport: str = ""


@dataclass(frozen=True, slots=True)
class ReceivedMetric:
    """One metric of one export: its name, unit and number of data points."""

    name: str
    unit: str
    points: int
    transport: str = ""


def decode_value(value: AnyValue) -> Any:
    """An OTLP ``AnyValue`` as a Python value (arrays as lists)."""
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return [decode_value(v) for v in value.array_value.values]
    if kind == "kvlist_value":
        return {kv.key: decode_value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, kind) if kind else None


def _attrs(kvs: Any) -> dict[str, Any]:
    return {kv.key: decode_value(kv.value) for kv in kvs}


class _RefuseMetrics(grpc.GenericRpcHandler):
    """Counts calls to the metrics service and leaves them unhandled (UNIMPLEMENTED)."""

    def __init__(self, receiver: OTLPReceiver) -> None:
        self._receiver = receiver

    def service(self, handler_call_details: Any) -> None:
        if "MetricsService" in handler_call_details.method:
            with self._receiver._cond:
                self._receiver.refused += 1
        return None


class OTLPReceiver:
    """Collects OTLP traces and metrics over gRPC and/or HTTP on 127.0.0.1."""

    def __init__(self, grpc: bool = True, http: bool = True, *, metrics: bool = True) -> None:
        self._accept_metrics = metrics
        self.refused = 0
        """Export requests refused because this receiver takes no metrics."""
        self._spans: list[ReceivedSpan] = []
        self._metrics: list[ReceivedMetric] = []
        self._cond = threading.Condition()
        self._grpc_server: Any = None
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None
        self.grpc_endpoint = ""
        self.http_endpoint = ""
        if grpc:
            self._start_grpc()
        if http:
            self._start_http()

    def __repr__(self) -> str:
        return (f"OTLPReceiver(grpc={self.grpc_endpoint or None}, "
                f"http={self.http_endpoint or None}, spans={self.span_count()})")

    # --- collection -------------------------------------------------------------------
    def _add_traces(self, request: trace_service_pb2.ExportTraceServiceRequest,
                    transport: str) -> None:
        got = []
        for rs in request.resource_spans:
            resource = _attrs(rs.resource.attributes)
            for ss in rs.scope_spans:
                for s in ss.spans:
                    got.append(ReceivedSpan(
                        name=s.name, trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                        parent_span_id=s.parent_span_id.hex(), kind=s.kind,
                        attributes=_attrs(s.attributes),
                        events=tuple((e.name, _attrs(e.attributes)) for e in s.events),
                        status_code=s.status.code, resource=resource, transport=transport,
                    ))
        with self._cond:
            self._spans.extend(got)
            self._cond.notify_all()

    def _add_metrics(self, request: metrics_service_pb2.ExportMetricsServiceRequest,
                     transport: str) -> None:
        got = []
        for rm in request.resource_metrics:
            for sm in rm.scope_metrics:
                for m in sm.metrics:
                    kind = m.WhichOneof("data")
                    points = len(getattr(m, kind).data_points) if kind else 0
                    got.append(ReceivedMetric(m.name, m.unit, points, transport))
        with self._cond:
            self._metrics.extend(got)
            self._cond.notify_all()

    def spans(self) -> list[ReceivedSpan]:
        """Every span received so far, in arrival order."""
        with self._cond:
            return list(self._spans)

    def span_count(self) -> int:
        """How many spans were received."""
        with self._cond:
            return len(self._spans)

    def metrics(self) -> list[ReceivedMetric]:
        """Every metric received so far (one entry per metric per export)."""
        with self._cond:
            return list(self._metrics)

    def wait_for(self, n: int, timeout: float = 5.0) -> bool:
        """Wait until at least ``n`` spans arrived; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self._spans) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
            return True

    # --- servers ------------------------------------------------------------------------
    def _start_grpc(self) -> None:
        receiver = self

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._add_traces(request, "grpc")
                return trace_service_pb2.ExportTraceServiceResponse()

        class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
            def Export(self, request: Any, context: Any) -> Any:
                receiver._add_metrics(request, "grpc")
                return metrics_service_pb2.ExportMetricsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        if self._accept_metrics:
            metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
        else:  # an unknown service: gRPC itself answers UNIMPLEMENTED; count the calls
            server.add_generic_rpc_handlers((_RefuseMetrics(self),))
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        self._grpc_server = server
        self.grpc_endpoint = f"http://127.0.0.1:{port}"

    def _start_http(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path == "/v1/traces":
                    req = trace_service_pb2.ExportTraceServiceRequest.FromString(body)
                    receiver._add_traces(req, "http")
                    reply = trace_service_pb2.ExportTraceServiceResponse().SerializeToString()
                elif self.path == "/v1/metrics" and not receiver._accept_metrics:
                    with receiver._cond:
                        receiver.refused += 1
                    self.send_error(405, "Method Not Allowed")
                    return
                elif self.path == "/v1/metrics":
                    mreq = metrics_service_pb2.ExportMetricsServiceRequest.FromString(body)
                    receiver._add_metrics(mreq, "http")
                    reply = metrics_service_pb2.ExportMetricsServiceResponse().SerializeToString()
                else:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, format: str, *args: Any) -> None:
                return None  # keep test output clean

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._http_server = server
        self._http_thread = threading.Thread(target=server.serve_forever, name="otlp-http-receiver",
                                             daemon=True)
        self._http_thread.start()
        self.http_endpoint = f"http://127.0.0.1:{server.server_address[1]}"

    def stop(self) -> None:
        """Stop both servers (idempotent)."""
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None
        if self._http_thread is not None:
            self._http_thread.join(timeout=5)
            self._http_thread = None

    def __enter__(self) -> OTLPReceiver:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
