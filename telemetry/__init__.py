"""OpenTelemetry wiring for amm: setup from ``OTEL_*``, the names we use, the
recorder that fans one event out, rolling statistics and the span store.

``telemetry.events`` and ``telemetry.store_schema`` import no OpenTelemetry; the
rest imports it on first use.
"""
