"""amm's own log records as OpenTelemetry logs (``OTEL_LOGS_EXPORTER``).

amm logs what an operator must see (budget alerts, degradations, demotions, export
trouble) on the ``amm`` loggers. With a logs exporter configured, :func:`telemetry.setup`
attaches :class:`OTelLogHandler` to the ``amm`` logger (WARNING and above), so these
records reach the same backend as the traces, in the trace context they were logged in.
"""

from __future__ import annotations

import logging

from opentelemetry._logs import LoggerProvider, SeverityNumber

from telemetry import conventions as c

__all__ = ["OTelLogHandler"]

_SEVERITY = {
    logging.DEBUG: SeverityNumber.DEBUG,
    logging.INFO: SeverityNumber.INFO,
    logging.WARNING: SeverityNumber.WARN,
    logging.ERROR: SeverityNumber.ERROR,
    logging.CRITICAL: SeverityNumber.FATAL,
}


class OTelLogHandler(logging.Handler):
    """A ``logging.Handler`` that emits each record to an OpenTelemetry logger provider.

    >>> logging.getLogger("amm").addHandler(OTelLogHandler(logger_provider))
    """

    def __init__(self, logger_provider: LoggerProvider, level: int = logging.WARNING) -> None:
        super().__init__(level=level)
        self._logger = logger_provider.get_logger(c.INSTRUMENTATION_SCOPE)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._logger.emit(
                timestamp=int(record.created * 1e9),
                severity_number=_SEVERITY.get(record.levelno, SeverityNumber.UNSPECIFIED),
                severity_text=record.levelname,
                body=record.getMessage(),
                attributes={"code.function.name": record.funcName, "amm.logger": record.name},
            )
        except Exception:  # a log line must never break the caller
            self.handleError(record)
