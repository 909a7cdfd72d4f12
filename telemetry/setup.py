"""``telemetry.setup()``: tracing and metrics for amm in one call, or from the environment alone.

Precedence: explicit argument > ``OTEL_*`` environment variable > default (see the
``ENV_*`` constants of :mod:`telemetry.conventions`).

* Resource: ``service_name`` > ``OTEL_SERVICE_NAME`` > ``service.name`` in
  ``OTEL_RESOURCE_ATTRIBUTES`` > ``"amm"``, plus the other ``OTEL_RESOURCE_ATTRIBUTES``.
  With the viewer attributes on (``AMM_TELEMETRY_VIEWER_ATTRIBUTES``, default) the
  resource also names the Phoenix project, ``openinference.project.name`` = the
  service name, unless ``OTEL_RESOURCE_ATTRIBUTES`` sets it.
* OTLP export (traces, metrics, logs) only when an endpoint is configured
  (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal ones), over the protocol of
  ``OTEL_EXPORTER_OTLP_{TRACES,METRICS,LOGS}_PROTOCOL`` > ``OTEL_EXPORTER_OTLP_PROTOCOL`` >
  ``http/protobuf`` (the specification's default, whatever the port).
* ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER`` / ``OTEL_LOGS_EXPORTER``: ``otlp``
  (default), ``console``, ``none``. Logs are amm's own warnings (``amm`` loggers).
* A failing export is counted (``amm.telemetry.export.failures``) and reported once
  with what to do; a backend that refuses metrics or logs (404/405/``UNIMPLEMENTED``)
  is told once and no longer sent them (:mod:`telemetry.export_guard`).
* Sampler: ``sampler`` > ``OTEL_TRACES_SAMPLER``/``_ARG`` (read by the SDK).
* ``OTEL_SDK_DISABLED=true``: no providers at all; the recorder then only feeds
  its listeners.
* ``store_path``: finished spans also go to the local SQLite store.
* ``AMM_EXPORT_PROCESS`` (default ``1``): OTLP spans are encoded and sent by a child
  process fed with a compact record per span, so the encoding never competes with the
  callers for the GIL (:mod:`telemetry.export_process`); ``0``: in-process, by the
  SDK's batch processor. The span store stays in-process either way.

If the application installed its own SDK tracer provider, amm adds its store
processor to it and does not replace it (likewise for the meter provider). Setup
is idempotent (a second call returns the same :class:`Telemetry`), and so is
shutdown.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import types
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import metrics as otel_metrics
from opentelemetry import trace
from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.metrics import MeterProvider as SDKMeterProvider
from opentelemetry.sdk.metrics.export import (
    ConsoleMetricExporter,
    MetricReader,
    PeriodicExportingMetricReader,
)
from opentelemetry.sdk.resources import SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider as SDKTracerProvider
from opentelemetry.sdk.trace.export import ConsoleSpanExporter, SimpleSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import Sampler
from opentelemetry.trace import TracerProvider

from telemetry import conventions as c
from telemetry.events import EventSink
from telemetry.export_guard import (
    ExportGuard,
    otlp_log_exporter,
    otlp_metric_exporter,
    otlp_span_exporter,
)
from telemetry.export_process import ExportProcessSpanProcessor, export_process_enabled
from telemetry.processor import CountingBatchSpanProcessor
from telemetry.recorder import Recorder
from telemetry.store import SpanStoreExporter
from telemetry.store_processor import SpanStoreProcessor
from telemetry.viewers import viewer_attributes_enabled

__all__ = ["DEFAULT_SERVICE_NAME", "Telemetry", "current", "otlp_endpoint", "otlp_protocol",
           "setup", "shutdown", "traces_destination"]

_log = logging.getLogger("amm.telemetry")

DEFAULT_SERVICE_NAME = "amm"
"""Service name when neither ``service_name`` nor ``OTEL_SERVICE_NAME`` is given."""

SpanPipeline = CountingBatchSpanProcessor | ExportProcessSpanProcessor | SpanStoreProcessor
"""A span processor of amm's: it counts its drops (``dropped``), flushes and shuts down."""

_lock = threading.Lock()
_current: Telemetry | None = None
_by_store: dict[str, Telemetry] = {}  # resolved store path -> its Telemetry
# Providers amm itself made global: after a shutdown they are not "the application's".
_installed: list[object] = []


class Telemetry:
    """What :func:`setup` installed: providers, processors and the span store."""

    def __init__(self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None,
                 processors: Sequence[SpanPipeline], *, owns_tracer: bool,
                 owns_meter: bool, store: SpanStoreExporter | None = None,
                 logs: _Logs | None = None, guards: Sequence[ExportGuard] = ()) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.processors = tuple(processors)
        self.store = store
        self.guards = tuple(guards)
        """One per OTLP exporter: its signal, endpoint, protocol and failure state."""
        self._logs = logs
        self._owns_tracer = owns_tracer
        self._owns_meter = owns_meter
        self._closed = False
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return (f"Telemetry(enabled={self.enabled}, processors={len(self.processors)}, "
                f"store={self.store.path if self.store else None}, closed={self._closed})")

    @property
    def enabled(self) -> bool:
        """True when spans are produced (False with ``OTEL_SDK_DISABLED=true``)."""
        return self.tracer_provider is not None

    @property
    def spans_dropped(self) -> int:
        """Spans dropped by amm's processors because a queue was full."""
        return sum(p.dropped for p in self.processors)

    def recorder(self, listeners: Iterable[EventSink] = (), *,
                 capture_content: str | bool | None = None,
                 viewer_attributes: bool | None = None,
                 quality_threshold: float | None = None) -> Recorder:
        """A :class:`Recorder` on these providers (no-op ones when disabled)."""
        return Recorder(
            tracer_provider=self.tracer_provider or trace.NoOpTracerProvider(),
            meter_provider=self.meter_provider or otel_metrics.NoOpMeterProvider(),
            listeners=listeners, capture_content=capture_content,
            viewer_attributes=viewer_attributes, quality_threshold=quality_threshold,
        )

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Export everything queued now; True when every processor flushed."""
        if self._closed:
            return False
        ok = all(p.force_flush(timeout_millis) for p in self.processors)
        if self._owns_tracer and isinstance(self.tracer_provider, SDKTracerProvider):
            ok = self.tracer_provider.force_flush(timeout_millis) and ok
        if self._owns_meter and isinstance(self.meter_provider, SDKMeterProvider):
            ok = bool(self.meter_provider.force_flush(timeout_millis)) and ok
        if self._logs is not None:
            ok = self._logs.provider.force_flush(timeout_millis) and ok
        return ok

    def shutdown(self) -> None:
        """Flush and stop what amm installed (never the application's own providers). Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        if self._owns_tracer and isinstance(self.tracer_provider, SDKTracerProvider):
            self.tracer_provider.shutdown()
        else:
            for p in self.processors:
                p.shutdown()
        if self._owns_meter and isinstance(self.meter_provider, SDKMeterProvider):
            self.meter_provider.shutdown()
        if self._logs is not None:
            self._logs.close()
        global _current
        with _lock:
            if _current is self:
                _current = None
            for key in [k for k, t in _by_store.items() if t is self]:
                del _by_store[key]


def current() -> Telemetry | None:
    """The :class:`Telemetry` installed by :func:`setup`, if any."""
    return _current


def setup(
    service_name: str | None = None,
    *,
    store_path: str | Path | None = None,
    exporters: Sequence[SpanExporter] | None = None,
    console: bool | None = None,
    sampler: Sampler | None = None,
    metric_readers: Sequence[MetricReader] = (),
) -> Telemetry:
    """Configure tracing and metrics for amm; see the module docstring. Idempotent.

    ``exporters`` replaces the environment's span exporters (the store is added
    either way); ``metric_readers`` are added to the environment's.

    >>> tel = telemetry.setup("my-agents", store_path="data/amm.db")
    >>> rec = tel.recorder(listeners=[performance_monitor])
    """
    global _current
    key = str(Path(store_path).resolve()) if store_path is not None else None
    with _lock:
        if _current is not None and (key is None or key in _by_store):
            return _by_store.get(key, _current) if key is not None else _current
        # First call: installs the process-wide providers. A later call for another
        # store gets providers of its own (the globals can be set once), so a second
        # manager on another data directory never writes its spans into the first's store.
        tel = _build(service_name, store_path, exporters, console, sampler, metric_readers)
        if key is not None:
            _by_store[key] = tel
        if _current is None:
            _current = tel
        return tel


def shutdown() -> None:
    """Shut down what :func:`setup` installed, for every store (idempotent)."""
    with _lock:
        everything = {id(t): t for t in (_current, *_by_store.values()) if t is not None}
    for tel in everything.values():
        tel.shutdown()


def _env_true(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() == "true"


def _env_list(name: str, default: str) -> set[str]:
    return {v.strip().lower() for v in os.environ.get(name, default).split(",") if v.strip()}


_SIGNAL_ENV = {
    "traces": (c.ENV_OTLP_TRACES_ENDPOINT, c.ENV_OTLP_TRACES_PROTOCOL),
    "metrics": (c.ENV_OTLP_METRICS_ENDPOINT, c.ENV_OTLP_METRICS_PROTOCOL),
    "logs": (c.ENV_OTLP_LOGS_ENDPOINT, c.ENV_OTLP_LOGS_PROTOCOL),
}


def otlp_protocol(signal: str) -> str:
    """The OTLP protocol of ``signal`` (``traces``, ``metrics``, ``logs``): the per-signal
    variable > ``OTEL_EXPORTER_OTLP_PROTOCOL`` > ``http/protobuf``. Never guessed from a port.

    ``http/json`` (which the Python exporters lack) and unknown values fall back to
    ``http/protobuf`` with a warning.
    """
    env = _SIGNAL_ENV[signal][1]
    raw = (os.environ.get(env) or os.environ.get(c.ENV_OTLP_PROTOCOL) or "").strip().lower()
    if not raw:
        return c.DEFAULT_OTLP_PROTOCOL
    if raw in ("grpc", "http/protobuf"):
        return raw
    _log.warning("OTLP protocol %r for %s is not supported here (grpc, http/protobuf); "
                 "using %s", raw, signal, c.DEFAULT_OTLP_PROTOCOL)
    return c.DEFAULT_OTLP_PROTOCOL


def otlp_endpoint(signal: str) -> str | None:
    """Where ``signal`` goes: the per-signal endpoint as given, else the base endpoint
    (for HTTP with ``/v1/{signal}`` appended, as the exporter does); None: no export."""
    own = os.environ.get(_SIGNAL_ENV[signal][0])
    if own:
        return own
    base = os.environ.get(c.ENV_OTLP_ENDPOINT)
    if not base:
        return None
    if otlp_protocol(signal) == "grpc":
        return base
    return base.rstrip("/") + f"/v1/{signal}"


def traces_destination() -> str | None:
    """Where OTLP traces go under the current environment, in words (None: nowhere).

    >>> traces_destination()
    'exported to http://127.0.0.1:6006/v1/traces over http/protobuf'
    """
    if _env_true(c.ENV_SDK_DISABLED) or "otlp" not in _env_list(c.ENV_TRACES_EXPORTER, "otlp"):
        return None
    endpoint = otlp_endpoint("traces")
    return f"exported to {endpoint} over {otlp_protocol('traces')}" if endpoint else None


def _guard(signal: str) -> ExportGuard | None:
    endpoint = otlp_endpoint(signal)
    return ExportGuard(signal, endpoint, otlp_protocol(signal)) if endpoint else None


class _Logs:
    """amm's log records as OTLP/console logs: the provider and the handler on ``amm``."""

    def __init__(self, provider: Any, handler: logging.Handler) -> None:
        self.provider = provider
        self.handlers = [handler]
        amm_logger = logging.getLogger("amm")
        if not amm_logger.hasHandlers():
            # Python prints warnings on stderr only while no handler exists anywhere up
            # the tree; adding ours must not silence them, so stderr gets one of its own.
            stderr = logging.StreamHandler()
            stderr.setLevel(logging.WARNING)
            self.handlers.append(stderr)
        for h in self.handlers:
            amm_logger.addHandler(h)

    def close(self) -> None:
        for h in self.handlers:
            logging.getLogger("amm").removeHandler(h)
        self.provider.shutdown()


def _logs(resource: Resource, meter_provider: MeterProvider, guards: list[ExportGuard]
          ) -> _Logs | None:
    wanted = _env_list(c.ENV_LOGS_EXPORTER, "otlp")
    processors: list[Any] = []
    from opentelemetry.sdk._logs.export import (
        BatchLogRecordProcessor,
        ConsoleLogRecordExporter,
        SimpleLogRecordProcessor,
    )
    if "otlp" in wanted and (guard := _guard("logs")) is not None:
        guard.bind_meter(meter_provider)
        guards.append(guard)
        processors.append(BatchLogRecordProcessor(otlp_log_exporter(guard.protocol, guard)))
    if "console" in wanted:
        processors.append(SimpleLogRecordProcessor(ConsoleLogRecordExporter()))
    if not processors:
        return None
    from opentelemetry.sdk._logs import LoggerProvider

    from telemetry.logs import OTelLogHandler

    provider = LoggerProvider(resource=resource)
    for processor in processors:
        provider.add_log_record_processor(processor)
    return _Logs(provider, OTelLogHandler(provider))


def _resource(service_name: str | None) -> Resource:
    # Resource.create reads OTEL_RESOURCE_ATTRIBUTES, then OTEL_SERVICE_NAME over it;
    # the explicit name goes over both.
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    if viewer_attributes_enabled() and c.OPENINFERENCE_PROJECT_NAME not in resource.attributes:
        resource = resource.merge(Resource({
            c.OPENINFERENCE_PROJECT_NAME: str(resource.attributes[SERVICE_NAME])}))
    return resource


def _build(service_name: str | None, store_path: str | Path | None,
           exporters: Sequence[SpanExporter] | None, console: bool | None,
           sampler: Sampler | None, metric_readers: Sequence[MetricReader]) -> Telemetry:
    if _env_true(c.ENV_SDK_DISABLED):
        _log.info("%s=true: amm records no spans or metrics (listeners still learn)",
                  c.ENV_SDK_DISABLED)
        return Telemetry(None, None, (), owns_tracer=False, owns_meter=False)
    resource = _resource(service_name)
    traces_exporters = _env_list(c.ENV_TRACES_EXPORTER, "otlp")
    metrics_exporters = _env_list(c.ENV_METRICS_EXPORTER, "otlp")
    guards: list[ExportGuard] = []
    want_console = console if console is not None else "console" in traces_exporters

    # Metrics first: the span processors count their drops on this meter provider.
    existing_mp = otel_metrics.get_meter_provider()
    owns_meter = not isinstance(existing_mp, SDKMeterProvider) or existing_mp in _installed
    if owns_meter:
        readers = list(metric_readers)
        if "otlp" in metrics_exporters and (metrics_guard := _guard("metrics")) is not None:
            guards.append(metrics_guard)
            readers.append(PeriodicExportingMetricReader(
                otlp_metric_exporter(metrics_guard.protocol, metrics_guard)))
        if "console" in metrics_exporters or (console and "none" not in metrics_exporters):
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        meter_provider: MeterProvider = SDKMeterProvider(resource=resource, metric_readers=readers)
        if not any(isinstance(p, SDKMeterProvider) for p in _installed):
            otel_metrics.set_meter_provider(meter_provider)  # settable once per process
            _installed.append(meter_provider)
    else:
        meter_provider = existing_mp
    for guard in guards:
        guard.bind_meter(meter_provider)

    existing_tp = trace.get_tracer_provider()
    owns_tracer = not isinstance(existing_tp, SDKTracerProvider) or existing_tp in _installed
    tracer_provider = (SDKTracerProvider(resource=resource, sampler=sampler)
                       if owns_tracer or not isinstance(existing_tp, SDKTracerProvider)
                       else existing_tp)
    span_exporters: list[SpanExporter] = []
    processors: list[SpanPipeline] = []
    if exporters is not None:
        span_exporters.extend(exporters)
    elif (owns_tracer and "otlp" in traces_exporters
          and (traces_guard := _guard("traces")) is not None):
        traces_guard.bind_meter(meter_provider)
        guards.append(traces_guard)
        if export_process_enabled():
            processors.append(ExportProcessSpanProcessor(traces_guard,
                                                         meter_provider=meter_provider))
        else:
            span_exporters.append(otlp_span_exporter(traces_guard.protocol, traces_guard))
    processors += [CountingBatchSpanProcessor(e, meter_provider=meter_provider)
                   for e in span_exporters]
    store = SpanStoreExporter(store_path) if store_path is not None else None
    if store is not None:  # holds records, not spans, until they are written
        processors.append(SpanStoreProcessor(store, meter_provider=meter_provider))
    for p in processors:
        tracer_provider.add_span_processor(p)
    if want_console and owns_tracer:
        # Console output is for debugging: synchronous, so it shows in order.
        tracer_provider.add_span_processor(SimpleSpanProcessor(ConsoleSpanExporter()))
    if owns_tracer:
        if not any(isinstance(p, SDKTracerProvider) for p in _installed):
            trace.set_tracer_provider(tracer_provider)  # settable once per process
            _installed.append(tracer_provider)
    else:
        _log.info("amm uses the application's tracer provider (adds %d processor(s))",
                  len(processors))
    logs = _logs(resource, meter_provider, guards) if owns_tracer else None
    return Telemetry(tracer_provider, meter_provider, processors, owns_tracer=owns_tracer,
                     owns_meter=owns_meter, store=store, logs=logs, guards=guards)


class _CallableModule(types.ModuleType):
    """This module, callable: ``telemetry.setup(...)`` is :func:`setup` even though
    ``telemetry.setup`` is also the module's name (importing a submodule binds it on
    the package, which would otherwise shadow the function)."""

    def __call__(self, service_name: str | None = None, **kwargs: Any) -> Telemetry:
        return setup(service_name, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
