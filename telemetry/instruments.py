"""amm's metric instruments, created once per meter and fed by the recorder.

Names, units and buckets are those of :mod:`telemetry.conventions` (the GenAI
conventions' advised buckets via ``explicit_bucket_boundaries_advisory``).
Attribute dicts are cached per key, because building and validating them is most
of a metric point's cost on the hot path.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from opentelemetry.metrics import CallbackOptions, MeterProvider, Observation

from telemetry import conventions as c
from telemetry.events import AttemptEvent, CacheEvent, FailoverEvent, QualityEvent

__all__ = ["Instruments"]

_log = logging.getLogger("amm.telemetry")

# Caches keep at most this many attribute dicts each; beyond that (a cardinality
# explosion) they are cleared rather than allowed to grow without bound.
_MAX_CACHED = 4096


class Instruments:
    """The metric instruments of one meter provider.

    >>> inst = Instruments(meter_provider)
    >>> inst.attempt(attempt_event, "openai")
    """

    def __init__(self, meter_provider: MeterProvider) -> None:
        meter = meter_provider.get_meter(c.INSTRUMENTATION_SCOPE)
        self.duration = meter.create_histogram(
            c.METRIC_OPERATION_DURATION, unit="s",
            description="GenAI operation duration (one provider attempt)",
            explicit_bucket_boundaries_advisory=c.DURATION_BUCKETS_S,
        )
        self.tokens = meter.create_histogram(
            c.METRIC_TOKEN_USAGE, unit="{token}",
            description="Tokens used per provider attempt, by gen_ai.token.type",
            explicit_bucket_boundaries_advisory=c.TOKEN_BUCKETS,
        )
        self.time_to_first_chunk = meter.create_histogram(
            c.METRIC_TIME_TO_FIRST_CHUNK, unit="s",
            description="Time from sending a streamed request to its first chunk",
            explicit_bucket_boundaries_advisory=c.DURATION_BUCKETS_S,
        )
        self.time_per_output_chunk = meter.create_histogram(
            c.METRIC_TIME_PER_OUTPUT_CHUNK, unit="s",
            description="Mean time per chunk after the first of a streamed response",
            explicit_bucket_boundaries_advisory=c.DURATION_BUCKETS_S,
        )
        self.cost = meter.create_counter(c.METRIC_COST, unit="USD", description="Spend in USD")
        self.failovers = meter.create_counter(
            c.METRIC_FAILOVERS, unit="{failover}", description="Requests moved to another model")
        self.cache = meter.create_counter(
            c.METRIC_CACHE_REQUESTS, unit="{request}", description="Cache lookups by hit/miss")
        self.quality = meter.create_histogram(
            c.METRIC_QUALITY_SCORE, unit="1", description="Overall quality score in [0, 1]",
            explicit_bucket_boundaries_advisory=c.QUALITY_BUCKETS,
        )
        self._budget_sources: list[Callable[[], float | None]] = []
        self._availability_sources: list[Callable[[], Mapping[str, bool]]] = []
        meter.create_observable_gauge(
            c.METRIC_BUDGET_UTILIZATION, callbacks=[self._observe_budget], unit="%",
            description="Spend as a percentage of the daily budget",
        )
        meter.create_observable_gauge(
            c.METRIC_MODEL_AVAILABLE, callbacks=[self._observe_availability], unit="1",
            description="1 when the model is available, else 0",
        )
        self._lock = threading.Lock()
        self._attempt_attrs: dict[tuple[Any, ...], tuple[dict[str, Any], ...]] = {}
        self._simple_attrs: dict[tuple[Any, ...], dict[str, Any]] = {}

    # --- recording --------------------------------------------------------------------
    def attempt(self, event: AttemptEvent, provider: str) -> None:
        """Duration, token usage and cost of one attempt; chunk timings when it streamed."""
        key = (event.model_id, provider, event.error_type if not event.success else None,
               event.agent_type)
        attrs = self._attempt_attrs.get(key)
        if attrs is None:
            attrs = self._build_attempt_attrs(key, success=event.success)
        base, inp, out, cost = attrs
        duration_s = event.latency_ms / 1000.0
        self.duration.record(duration_s, base)
        ttfc = event.time_to_first_chunk_s
        if event.stream and ttfc is not None:
            self.time_to_first_chunk.record(ttfc, base)
            if event.output_chunks > 1:
                per_chunk = (duration_s - ttfc) / (event.output_chunks - 1)
                # ttfc and latency may come from different clocks: never report < 0.
                self.time_per_output_chunk.record(max(per_chunk, 0.0), base)
        if event.input_tokens:
            self.tokens.record(event.input_tokens, inp)
        if event.output_tokens:
            self.tokens.record(event.output_tokens, out)
        if event.cost_usd:
            self.cost.add(event.cost_usd, cost)

    def _build_attempt_attrs(self, key: tuple[Any, ...], *, success: bool
                             ) -> tuple[dict[str, Any], ...]:
        model, provider, error_type, agent_type = key
        base: dict[str, Any] = {
            c.GEN_AI_OPERATION_NAME: c.OP_CHAT,
            c.GEN_AI_PROVIDER_NAME: provider,
            c.GEN_AI_REQUEST_MODEL: model,
        }
        if not success:
            base[c.ERROR_TYPE] = error_type or c.ERROR_TYPE_OTHER
        inp = {**base, c.GEN_AI_TOKEN_TYPE: c.TOKEN_TYPE_INPUT}
        out = {**base, c.GEN_AI_TOKEN_TYPE: c.TOKEN_TYPE_OUTPUT}
        cost = {c.GEN_AI_PROVIDER_NAME: provider, c.GEN_AI_REQUEST_MODEL: model,
                c.AMM_AGENT_TYPE: agent_type}
        attrs = (base, inp, out, cost)
        with self._lock:
            if len(self._attempt_attrs) >= _MAX_CACHED:
                self._attempt_attrs.clear()
            self._attempt_attrs[key] = attrs
        return attrs

    def _attrs(self, key: tuple[Any, ...], build: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        attrs = self._simple_attrs.get(key)
        if attrs is None:
            attrs = build()
            with self._lock:
                if len(self._simple_attrs) >= _MAX_CACHED:
                    self._simple_attrs.clear()
                self._simple_attrs[key] = attrs
        return attrs

    def failover(self, event: FailoverEvent) -> None:
        """One failover, by the model left and why."""
        self.failovers.add(1, self._attrs(
            ("failover", event.from_model, event.reason),
            lambda: {c.AMM_FAILOVER_FROM: event.from_model, c.AMM_FAILOVER_REASON: event.reason},
        ))

    def cache_lookup(self, event: CacheEvent) -> None:
        """One cache lookup, ``amm.cache.result`` = hit | miss."""
        self.cache.add(1, self._attrs(
            ("cache", event.hit, event.agent_type),
            lambda: {c.AMM_CACHE_RESULT: "hit" if event.hit else "miss",
                     c.AMM_AGENT_TYPE: event.agent_type},
        ))

    def quality_score(self, event: QualityEvent) -> None:
        """The overall score of one evaluated response."""
        self.quality.record(event.overall, self._attrs(
            ("quality", event.model_id, event.agent_type),
            lambda: {c.GEN_AI_REQUEST_MODEL: event.model_id, c.AMM_AGENT_TYPE: event.agent_type},
        ))

    # --- observable gauges -----------------------------------------------------------
    def observe_budget(self, source: Callable[[], float | None]) -> None:
        """Report ``source()`` (utilization percent, None = unknown) as amm.budget.utilization."""
        self._budget_sources.append(source)

    def observe_availability(self, source: Callable[[], Mapping[str, bool]]) -> None:
        """Report ``source()`` ({model: available}) as amm.model.available (1/0 per model)."""
        self._availability_sources.append(source)

    def _observe_budget(self, _options: CallbackOptions) -> list[Observation]:
        out: list[Observation] = []
        for source in list(self._budget_sources):
            try:
                value = source()
            except Exception:  # a broken source must not break the metric export
                _log.exception("budget utilization source failed")
                continue
            if value is not None:
                out.append(Observation(float(value)))
        return out

    def _observe_availability(self, _options: CallbackOptions) -> list[Observation]:
        out: list[Observation] = []
        for source in list(self._availability_sources):
            try:
                states = dict(source())
            except Exception:  # a broken source must not break the metric export
                _log.exception("model availability source failed")
                continue
            out.extend(Observation(1 if up else 0, {c.GEN_AI_REQUEST_MODEL: model})
                       for model, up in states.items())
        return out
