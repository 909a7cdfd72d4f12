"""OTLP exporters that fail quietly, once, and usefully.

The OpenTelemetry exporters log every failed export (and every retry before it): a
backend that is down, or that takes traces but not metrics (Phoenix, Langfuse,
Jaeger, Tempo answer 404/405 or ``UNIMPLEMENTED`` to metrics), prints an error line
per export for as long as the process runs. amm's exporters are the SDK's own OTLP
exporters (``http/protobuf`` or ``grpc``) with one step around ``export()``:

* the exporter's log records of that call are held back and read for the reason
  (HTTP status, gRPC code, or the connection error);
* each failed export is counted in ``amm.telemetry.export.failures``
  (``amm.telemetry.signal``, ``error.type``);
* the first failure per signal and endpoint is reported once, as a warning that says
  what to do; a recovery is reported once too;
* when the backend says it does not take a signal at all (404, 405, 501 or
  ``UNIMPLEMENTED``) for metrics or logs, amm says so once and stops sending that
  signal there (traces keep being tried: a trace backend that refuses traces is a
  wrong endpoint, which the warning names).

>>> exporter = otlp_span_exporter("http/protobuf", ExportGuard("traces", endpoint))
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urlparse

from opentelemetry.metrics import MeterProvider, NoOpMeterProvider

from telemetry import conventions as c

__all__ = ["ExportFailure", "ExportGuard", "attempt", "otlp_log_exporter", "otlp_metric_exporter",
           "otlp_span_exporter", "plain_otlp_span_exporter"]

_log = logging.getLogger("amm.telemetry")

# The exporters' loggers whose records amm reads instead of printing them (HTTP: the
# shared client logs through the signal's logger; gRPC: one logger for all signals).
_EXPORTER_LOGGERS = (
    "opentelemetry.exporter.otlp.proto.http.trace_exporter",
    "opentelemetry.exporter.otlp.proto.http.metric_exporter",
    "opentelemetry.exporter.otlp.proto.http._log_exporter",
    "opentelemetry.exporter.otlp.common.http",
    "opentelemetry.exporter.otlp.proto.grpc.exporter",
)
# Answers that mean "this endpoint does not take this signal", not "try again later".
_NOT_ACCEPTED_HTTP = frozenset({404, 405, 501})
_NOT_ACCEPTED_GRPC = frozenset({"UNIMPLEMENTED"})

R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class ExportFailure:
    """Why one export failed: ``error_type`` is ``"405"``, ``"UNAVAILABLE"``, an
    exception's name or ``_OTHER``; ``detail`` is the exporter's own words."""

    error_type: str
    detail: str
    not_accepted: bool


class _Capture(logging.Filter):
    """Holds back the exporter's log records of the export running in this thread."""

    def __init__(self) -> None:
        super().__init__()
        self._local = threading.local()

    def start(self) -> list[logging.LogRecord]:
        records: list[logging.LogRecord] = []
        self._local.records = records
        return records

    def stop(self) -> None:
        self._local.records = None

    def filter(self, record: logging.LogRecord) -> bool:
        records = getattr(self._local, "records", None)
        if records is None:
            return True  # not one of amm's exports: the application's exporter logs as usual
        records.append(record)
        return False


_capture = _Capture()
_installed = False
_install_lock = threading.Lock()


def _install_capture() -> None:
    global _installed
    with _install_lock:
        if not _installed:
            for name in _EXPORTER_LOGGERS:
                logging.getLogger(name).addFilter(_capture)
            _installed = True


def _failure(records: list[logging.LogRecord]) -> ExportFailure:
    """The reason of a failed export, read from the exporter's log records (last wins)."""
    status: int | None = None
    code: str | None = None
    detail = ""
    seen: list[str] = []
    for record in records:
        if record.levelno < logging.WARNING:
            continue
        detail = record.getMessage().rstrip(".")
        seen.append(detail)
        for arg in record.args if isinstance(record.args, tuple) else ():
            if isinstance(arg, int) and not isinstance(arg, bool) and 100 <= arg <= 599:
                status = arg
            elif type(arg).__name__ == "StatusCode" and hasattr(arg, "name"):
                code = str(arg.name)
    if status is not None:
        return ExportFailure(str(status), detail, status in _NOT_ACCEPTED_HTTP)
    if code is not None:
        return ExportFailure(code, detail, code in _NOT_ACCEPTED_GRPC)
    # No answer at all: the retries' records say why (a refused connection ends in
    # "timeout, max retries" once the retries ran out).
    return ExportFailure(_error_name(seen), detail, False)


def _error_name(messages: list[str]) -> str:
    text = " ".join(messages).lower()
    if "connection refused" in text or "connectionerror" in text or "failed to establish" in text:
        return "ConnectionError"
    if "timeout" in text or "timed out" in text:
        return "timeout"
    return c.ERROR_TYPE_OTHER


def attempt(call: Callable[[], R], ok: R) -> tuple[R | None, ExportFailure | None]:
    """Run one export with the exporter's log records held back; its result, and why it
    failed (None when it returned ``ok``). Never raises."""
    if not _installed:
        _install_capture()
    records = _capture.start()
    try:
        result: R | None = call()
    except Exception as exc:  # an exporter bug must not reach the SDK's worker thread
        records.append(logging.LogRecord("amm", logging.ERROR, "", 0, "%s: %s",
                                         (type(exc).__name__, exc), None))
        result = None
    finally:
        _capture.stop()
    return result, (None if result == ok else _failure(records))


class ExportGuard:
    """The failure policy of one signal's exporter to one endpoint (thread-safe).

    ``run(call, ok, skipped)`` runs one export: ``ok`` is the exporter's success value,
    ``skipped`` what to return when the endpoint refused the signal for good.
    """

    __slots__ = ("_failing", "_failures", "_lock", "_meter_provider", "_stopped",
                 "endpoint", "protocol", "signal")

    def __init__(self, signal: str, endpoint: str, protocol: str,
                 meter_provider: MeterProvider | None = None) -> None:
        self.signal = signal
        self.endpoint = endpoint
        self.protocol = protocol
        self._meter_provider = meter_provider or NoOpMeterProvider()
        self._failures: Any = None
        self._lock = threading.Lock()
        self._failing = 0  # failed exports since the last success (0: healthy)
        self._stopped = False
        _install_capture()

    def __repr__(self) -> str:
        return (f"ExportGuard({self.signal} -> {self.endpoint} over {self.protocol}, "
                f"failing={self._failing}, stopped={self._stopped})")

    @property
    def stopped(self) -> bool:
        """True once the endpoint said it does not take this signal."""
        return self._stopped

    def bind_meter(self, meter_provider: MeterProvider) -> None:
        """Count failures on ``meter_provider`` (the exporters exist before it does)."""
        self._meter_provider = meter_provider
        self._failures = None

    def run(self, call: Callable[[], R], ok: R, skipped: R) -> R:
        """One export through the policy; never raises."""
        if self._stopped:
            return skipped
        result, failure = attempt(call, ok)
        self.settle(failure)
        if failure is None:
            return result  # type: ignore[return-value]  # ``ok`` itself
        if self._stopped:
            return skipped
        return result if result is not None else skipped

    def settle(self, failure: ExportFailure | None) -> None:
        """Apply the policy to one export's outcome (None: it succeeded), wherever it ran:
        the exporter process (:mod:`telemetry.export_process`) sends its outcomes here."""
        if failure is None:
            self._succeeded()
            return
        self._count(failure)
        self._report(failure)

    # --- policy -----------------------------------------------------------------------
    def _succeeded(self) -> None:
        with self._lock:
            failed, self._failing = self._failing, 0
        if failed:
            _log.warning("OpenTelemetry %s export to %s works again (%d export(s) failed before)",
                         self.signal, self.endpoint, failed)

    def _count(self, failure: ExportFailure) -> None:
        try:
            if self._failures is None:
                meter = self._meter_provider.get_meter(c.INSTRUMENTATION_SCOPE)
                self._failures = meter.create_counter(
                    c.METRIC_EXPORT_FAILURES, unit="{export}",
                    description="OTLP exports the backend did not take")
            self._failures.add(1, {c.AMM_TELEMETRY_SIGNAL: self.signal,
                                   c.ERROR_TYPE: failure.error_type})
        except Exception:  # counting must never fail the export path
            _log.debug("counting an export failure failed", exc_info=True)

    def _report(self, failure: ExportFailure) -> None:
        with self._lock:
            self._failing += 1
            first = self._failing == 1
            stop = failure.not_accepted and self.signal != "traces" and not self._stopped
            if stop:
                self._stopped = True
        if stop:
            _log.warning(
                "the OTLP endpoint %s does not accept %s (%s): amm stops sending %s there. "
                "Set %s=none to say so, or %s to a collector that takes them.",
                self.endpoint, self.signal, failure.error_type, self.signal,
                _exporter_env(self.signal), _endpoint_env(self.signal))
        elif first:
            _log.warning("OpenTelemetry %s export to %s over %s failed (%s): %s. %s "
                         "(reported once; failures are counted in %s)",
                         self.signal, self.endpoint, self.protocol, failure.error_type,
                         _short(failure.detail), self._advice(failure),
                         c.METRIC_EXPORT_FAILURES)

    def _advice(self, failure: ExportFailure) -> str:
        port = urlparse(self.endpoint).port
        if self.protocol != "grpc" and port == 4317:
            return (f"Port 4317 is OTLP/gRPC's: set {c.ENV_OTLP_PROTOCOL}=grpc, or use the "
                    "backend's OTLP/HTTP port (4318).")
        if self.protocol == "grpc" and port in (4318, 6006, 80, 443):
            return (f"Port {port} usually serves OTLP/HTTP: unset {c.ENV_OTLP_PROTOCOL} "
                    "(http/protobuf is the default) or use the backend's gRPC port (4317).")
        if failure.not_accepted:
            return (f"The endpoint does not take {self.signal}: check "
                    f"{_endpoint_env(self.signal)} / {c.ENV_OTLP_ENDPOINT} (for HTTP the base "
                    "URL, amm appends /v1/traces) and the protocol.")
        if failure.error_type in ("401", "403", "UNAUTHENTICATED", "PERMISSION_DENIED"):
            return "The backend refused the credentials: check OTEL_EXPORTER_OTLP_HEADERS."
        return (f"Is the backend running there? Check {c.ENV_OTLP_ENDPOINT} and "
                f"{c.ENV_OTLP_PROTOCOL} (default http/protobuf).")


def _exporter_env(signal: str) -> str:
    return {"traces": c.ENV_TRACES_EXPORTER, "metrics": c.ENV_METRICS_EXPORTER}.get(
        signal, c.ENV_LOGS_EXPORTER)


def _endpoint_env(signal: str) -> str:
    return {"traces": c.ENV_OTLP_TRACES_ENDPOINT, "metrics": c.ENV_OTLP_METRICS_ENDPOINT}.get(
        signal, c.ENV_OTLP_LOGS_ENDPOINT)


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --- the guarded exporters -------------------------------------------------------------
# Subclasses of the SDK's exporters (not wrappers), so that everything they read from
# the environment (endpoint, headers, TLS, compression, timeout, metric temporality)
# stays theirs; only export() goes through the guard.

def _base(protocol: str, grpc_module: str, http_module: str, name: str) -> type[Any]:
    import importlib

    exporter: type[Any] = getattr(
        importlib.import_module(grpc_module if protocol == "grpc" else http_module), name)
    return exporter


def plain_otlp_span_exporter(protocol: str) -> Any:
    """The SDK's OTLP span exporter of ``protocol``, unguarded: the exporter process runs
    it through :func:`attempt` and sends the outcome to the guard in the application."""
    return _base(protocol, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter")()


def otlp_span_exporter(protocol: str, guard: ExportGuard) -> Any:
    """The OTLP span exporter of ``protocol`` (``grpc`` or ``http/protobuf``), guarded."""
    from opentelemetry.sdk.trace.export import SpanExportResult

    base = _base(protocol, "opentelemetry.exporter.otlp.proto.grpc.trace_exporter",
                 "opentelemetry.exporter.otlp.proto.http.trace_exporter", "OTLPSpanExporter")

    class GuardedSpanExporter(base):  # type: ignore[misc,valid-type]
        def export(self, spans: Any) -> Any:
            return guard.run(lambda: base.export(self, spans),
                             SpanExportResult.SUCCESS, SpanExportResult.FAILURE)

    return GuardedSpanExporter()


def otlp_metric_exporter(protocol: str, guard: ExportGuard) -> Any:
    """The OTLP metric exporter of ``protocol``, guarded; once the endpoint refused
    metrics, exports succeed without sending (the reader has nothing to complain of)."""
    from opentelemetry.sdk.metrics.export import MetricExportResult

    base = _base(protocol, "opentelemetry.exporter.otlp.proto.grpc.metric_exporter",
                 "opentelemetry.exporter.otlp.proto.http.metric_exporter", "OTLPMetricExporter")

    class GuardedMetricExporter(base):  # type: ignore[misc,valid-type]
        def export(self, metrics_data: Any, timeout_millis: float = 10_000, **kwargs: Any) -> Any:
            return guard.run(lambda: base.export(self, metrics_data, timeout_millis, **kwargs),
                             MetricExportResult.SUCCESS, MetricExportResult.SUCCESS)

    return GuardedMetricExporter()


def otlp_log_exporter(protocol: str, guard: ExportGuard) -> Any:
    """The OTLP log exporter of ``protocol``, guarded like the metric exporter."""
    from opentelemetry.sdk._logs.export import LogRecordExportResult

    base = _base(protocol, "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
                 "opentelemetry.exporter.otlp.proto.http._log_exporter", "OTLPLogExporter")

    class GuardedLogExporter(base):  # type: ignore[misc,valid-type]
        def export(self, batch: Any) -> Any:
            return guard.run(lambda: base.export(self, batch),
                             LogRecordExportResult.SUCCESS, LogRecordExportResult.SUCCESS)

    return GuardedLogExporter()
