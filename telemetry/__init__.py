"""OpenTelemetry wiring for amm: setup from ``OTEL_*``, the names we use, the
recorder that fans one event out, rolling statistics and the span store.

>>> import telemetry
>>> tel = telemetry.setup("my-agents", store_path="data/amm.db")
>>> recorder = tel.recorder(listeners=[performance_monitor, cost_tracker])
>>> telemetry.shutdown()

``telemetry.events``, ``telemetry.conventions`` and ``telemetry.store_schema`` import
no OpenTelemetry; the rest imports it on first use (names below resolve lazily), so
``import telemetry`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "OTLPReceiver",
    "Recorder",
    "RollingStats",
    "SpanStoreExporter",
    "Telemetry",
    "setup",
    "shutdown",
]

_EXPORTS = {
    "OTLPReceiver": "telemetry.receiver",
    "Recorder": "telemetry.recorder",
    "RollingStats": "telemetry.stats",
    "SpanStoreExporter": "telemetry.store",
    "Telemetry": "telemetry.setup",
    "shutdown": "telemetry.setup",
}


def __getattr__(name: str) -> Any:
    if name == "setup":
        # The module itself is callable as setup(): see telemetry/setup.py.
        return importlib.import_module("telemetry.setup")
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'telemetry' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
