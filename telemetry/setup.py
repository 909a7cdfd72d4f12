"""``telemetry.setup()``: tracing and metrics for amm in one call, or from the environment alone.

Precedence: explicit argument > ``OTEL_*`` environment variable > default (see the
``ENV_*`` constants of :mod:`telemetry.conventions`).

* Resource: ``service_name`` > ``OTEL_SERVICE_NAME`` > ``"amm"``, plus
  ``OTEL_RESOURCE_ATTRIBUTES``.
* OTLP export (traces and metrics) only when an endpoint is configured
  (``OTEL_EXPORTER_OTLP_ENDPOINT`` or the per-signal ones), over
  ``OTEL_EXPORTER_OTLP_PROTOCOL`` = ``grpc`` | ``http/protobuf`` (default: ``http/protobuf``
  when the endpoint's port is 4318, else ``grpc``). Nobody is spammed with
  failed connections to a missing localhost:4317.
* ``OTEL_TRACES_EXPORTER`` / ``OTEL_METRICS_EXPORTER``: ``otlp``, ``console``, ``none``.
* Sampler: ``sampler`` > ``OTEL_TRACES_SAMPLER``/``_ARG`` (read by the SDK).
* ``OTEL_SDK_DISABLED=true``: no providers at all; the recorder then only feeds
  its listeners.
* ``store_path``: finished spans also go to the local SQLite store.

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
from urllib.parse import urlparse

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
from telemetry.processor import CountingBatchSpanProcessor
from telemetry.recorder import Recorder
from telemetry.store import SpanStoreExporter

__all__ = ["DEFAULT_SERVICE_NAME", "Telemetry", "current", "setup", "shutdown"]

_log = logging.getLogger("amm.telemetry")

DEFAULT_SERVICE_NAME = "amm"
"""Service name when neither ``service_name`` nor ``OTEL_SERVICE_NAME`` is given."""

_lock = threading.Lock()
_current: Telemetry | None = None
_by_store: dict[str, Telemetry] = {}  # resolved store path -> its Telemetry
# Providers amm itself made global: after a shutdown they are not "the application's".
_installed: list[object] = []


class Telemetry:
    """What :func:`setup` installed: providers, processors and the span store."""

    def __init__(self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None,
                 processors: Sequence[CountingBatchSpanProcessor], *, owns_tracer: bool,
                 owns_meter: bool, store: SpanStoreExporter | None = None) -> None:
        self.tracer_provider = tracer_provider
        self.meter_provider = meter_provider
        self.processors = tuple(processors)
        self.store = store
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
                 capture_content: str | bool | None = None) -> Recorder:
        """A :class:`Recorder` on these providers (no-op ones when disabled)."""
        return Recorder(
            tracer_provider=self.tracer_provider or trace.NoOpTracerProvider(),
            meter_provider=self.meter_provider or otel_metrics.NoOpMeterProvider(),
            listeners=listeners, capture_content=capture_content,
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


def _protocol(endpoint: str, signal: str) -> str:
    explicit = (os.environ.get(f"OTEL_EXPORTER_OTLP_{signal}_PROTOCOL")
                or os.environ.get(c.ENV_OTLP_PROTOCOL))
    if explicit:
        return explicit.strip().lower()
    return "http/protobuf" if urlparse(endpoint).port == 4318 else "grpc"


def _otlp_span_exporter() -> SpanExporter | None:
    endpoint = os.environ.get(c.ENV_OTLP_TRACES_ENDPOINT) or os.environ.get(c.ENV_OTLP_ENDPOINT)
    if not endpoint:
        return None
    if _protocol(endpoint, "TRACES") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        return OTLPSpanExporter()  # reads the endpoint, headers, TLS settings from the env
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HTTPExporter,
    )
    return HTTPExporter()  # appends /v1/traces to OTEL_EXPORTER_OTLP_ENDPOINT itself


def _otlp_metric_reader() -> MetricReader | None:
    endpoint = os.environ.get(c.ENV_OTLP_METRICS_ENDPOINT) or os.environ.get(c.ENV_OTLP_ENDPOINT)
    if not endpoint:
        return None
    if _protocol(endpoint, "METRICS") == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter
        return PeriodicExportingMetricReader(OTLPMetricExporter())
    from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
        OTLPMetricExporter as HTTPMetricExporter,
    )
    return PeriodicExportingMetricReader(HTTPMetricExporter())


def _resource(service_name: str | None) -> Resource:
    resource = Resource.create({SERVICE_NAME: service_name} if service_name else {})
    if not service_name and not os.environ.get(c.ENV_SERVICE_NAME) \
            and str(resource.attributes.get(SERVICE_NAME, "")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
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
    want_console = console if console is not None else "console" in traces_exporters

    # Metrics first: the span processors count their drops on this meter provider.
    existing_mp = otel_metrics.get_meter_provider()
    owns_meter = not isinstance(existing_mp, SDKMeterProvider) or existing_mp in _installed
    if owns_meter:
        readers = list(metric_readers)
        if "otlp" in metrics_exporters and (reader := _otlp_metric_reader()) is not None:
            readers.append(reader)
        if "console" in metrics_exporters or (console and "none" not in metrics_exporters):
            readers.append(PeriodicExportingMetricReader(ConsoleMetricExporter()))
        meter_provider: MeterProvider = SDKMeterProvider(resource=resource, metric_readers=readers)
        if not any(isinstance(p, SDKMeterProvider) for p in _installed):
            otel_metrics.set_meter_provider(meter_provider)  # settable once per process
            _installed.append(meter_provider)
    else:
        meter_provider = existing_mp

    existing_tp = trace.get_tracer_provider()
    owns_tracer = not isinstance(existing_tp, SDKTracerProvider) or existing_tp in _installed
    tracer_provider = (SDKTracerProvider(resource=resource, sampler=sampler)
                       if owns_tracer or not isinstance(existing_tp, SDKTracerProvider)
                       else existing_tp)
    span_exporters: list[SpanExporter] = []
    if exporters is not None:
        span_exporters.extend(exporters)
    elif owns_tracer and "otlp" in traces_exporters and (otlp := _otlp_span_exporter()) is not None:
        span_exporters.append(otlp)
    store = SpanStoreExporter(store_path) if store_path is not None else None
    if store is not None:
        span_exporters.append(store)
    processors = [CountingBatchSpanProcessor(e, meter_provider=meter_provider) for e in span_exporters]
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
        _log.info("amm uses the application's tracer provider (adds %d processor(s))", len(processors))
    return Telemetry(tracer_provider, meter_provider, processors, owns_tracer=owns_tracer,
                     owns_meter=owns_meter, store=store)


class _CallableModule(types.ModuleType):
    """This module, callable: ``telemetry.setup(...)`` is :func:`setup` even though
    ``telemetry.setup`` is also the module's name (importing a submodule binds it on
    the package, which would otherwise shadow the function)."""

    def __call__(self, service_name: str | None = None, **kwargs: Any) -> Telemetry:
        return setup(service_name, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
