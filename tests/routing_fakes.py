"""Fakes of the dependencies the routing components read (selector, failover, evaluator).

Each fake conforms exactly to the documented interface of the component it stands
for and does nothing else: a health checker answering from a set, a performance
monitor answering from a dict of :class:`StatsSnapshot`, and a list sink for events.
The real registry and rate limiter are used directly.
"""

from __future__ import annotations

from collections.abc import Iterable

from amm.models import ModelMetadata, RateLimits
from telemetry.events import Event, StatsSnapshot

__all__ = ["FakeHealth", "FakeMonitor", "ListSink", "make_model", "snapshot"]


def make_model(
    model_id: str,
    *,
    provider: str = "openai",
    capabilities: Iterable[str] = ("text-generation",),
    cost_in: float = 0.001,
    cost_out: float = 0.002,
    context_window: int = 16000,
    latency_ms: float = 1000.0,
    enabled: bool = True,
    rpm: int = 1000,
    tpm: int = 1_000_000,
) -> ModelMetadata:
    """A registry model with test-friendly defaults."""
    return ModelMetadata(
        id=model_id, provider=provider, name=model_id.upper(), capabilities=list(capabilities),
        cost_per_1k_input_tokens=cost_in, cost_per_1k_output_tokens=cost_out,
        rate_limits=RateLimits(requests_per_minute=rpm, tokens_per_minute=tpm),
        context_window=context_window, average_response_time_ms=latency_ms, enabled=enabled,
    )


class FakeHealth:
    """``HealthChecker.is_model_available``: every model is up unless listed in ``down``."""

    def __init__(self, down: Iterable[str] = ()) -> None:
        self.down = set(down)

    def is_model_available(self, model_id: str) -> bool:
        return model_id not in self.down


class FakeMonitor:
    """``PerformanceMonitor.snapshot``: answers from ``stats[(model_id, agent_type)]``."""

    def __init__(self) -> None:
        self.stats: dict[tuple[str, str | None], StatsSnapshot] = {}

    def snapshot(self, model_id: str, agent_type: str | None = None) -> StatsSnapshot | None:
        return self.stats.get((model_id, agent_type))


def snapshot(
    model_id: str,
    *,
    count: int = 20,
    success_rate: float = 1.0,
    p50: float = 500.0,
    p95: float = 900.0,
    quality: float | None = 0.9,
    agent_type: str | None = None,
) -> StatsSnapshot:
    """A rolling-statistics snapshot with the given values."""
    return StatsSnapshot(
        model_id=model_id, agent_type=agent_type, count=count,
        successes=round(count * success_rate), success_rate=success_rate,
        mean_latency_ms=p50, p50_latency_ms=p50, p95_latency_ms=p95, p99_latency_ms=p95,
        mean_quality=quality, quality_count=count if quality is not None else 0,
        cost_usd=0.0, input_tokens=0, output_tokens=0,
    )


class ListSink:
    """An EventSink that keeps every event, in order."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def record(self, event: Event) -> None:
        self.events.append(event)

    def of(self, kind: type) -> list:
        """The recorded events of one type."""
        return [e for e in self.events if isinstance(e, kind)]
