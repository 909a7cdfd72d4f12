"""amm as an application runs it, pointed at the mock: every component, real OTLP export.

:class:`AmmBench` builds one :class:`~amm.manager.ModelManager` with
``ModelManager.from_config`` over a registry of a few models that all point at the
mock, a data directory in a temp dir (span store, ledger, cache, performance
table), and telemetry exporting over OTLP to a :class:`~telemetry.receiver.OTLPReceiver`
running in another process (:mod:`benchmarks.otlp_sink`), configured through the
standard ``OTEL_*`` variables, as a user would. A counting span processor on the same
tracer provider counts every span ended, so emitted and received can be compared.
"""

from __future__ import annotations

import collections
import json
import os
import tempfile
import threading
import time
from pathlib import Path as FsPath
from typing import Any

from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from benchmarks.paths import BENCH_API_KEY, BENCH_MODEL, MAX_TOKENS, TEMPERATURE, prompt

__all__ = [
    "AGENT_TYPE",
    "AmmBench",
    "AmmPath",
    "AmmStreamPath",
    "DecoratorPath",
    "DecoratorStreamPath",
    "DurableTimer",
    "SpanCounter",
    "registry_document",
]

AGENT_TYPE = "bench"
# Generous limits and budget: the benchmark measures the path, not the limiter's refusals.
_RPM = 100_000_000
_TPM = 1_000_000_000  # the registry's largest accepted count


def registry_document(api_base: str, count: int = 4) -> dict[str, Any]:
    """A registry of ``count`` models, all served by the mock at ``api_base``."""
    return {"models": [{
        "id": f"bench-{n}",
        "provider": "openai",
        "name": f"Bench model {n}",
        "litellm_model": f"openai/{BENCH_MODEL}",
        "api_base": api_base,
        "capabilities": ["text-generation", "summarization"],
        "cost_per_1k_input_tokens": 0.0005 * (n + 1),
        "cost_per_1k_output_tokens": 0.0015 * (n + 1),
        "rate_limits": {"requests_per_minute": _RPM, "tokens_per_minute": _TPM},
        "context_window": 16385,
        "average_response_time_ms": 800 + 100 * n,
        "enabled": True,
    } for n in range(count)]}


class SpanCounter(SpanProcessor):
    """A span processor that counts sampled spans as they end (what amm emitted)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count = 0
        self.chat_count = 0  # provider attempts: ``chat {model}`` spans
        self.chat_by_trace: collections.Counter[int] = collections.Counter()

    def on_end(self, span: ReadableSpan) -> None:
        if span.context is not None and span.context.trace_flags.sampled:
            with self._lock:
                self.count += 1
                if span.name.startswith("chat "):
                    self.chat_count += 1
                    self.chat_by_trace[span.context.trace_id] += 1


class DurableTimer:
    """Times every ``await cost_tracker.durable()`` of the manager: the durable ledger's
    share of each managed call (the manager awaits it before returning a response).

    Installed on the tracker instance, so the request path runs unchanged; the wrapper
    costs two ``perf_counter`` reads and a list append (~0.2 us).
    """

    def __init__(self, tracker: Any) -> None:
        self.samples_s: list[float] = []
        self.recording = False
        inner = tracker.durable

        async def durable() -> bool:
            start = time.perf_counter()
            ok: bool = await inner()
            if self.recording:
                self.samples_s.append(time.perf_counter() - start)
            return ok

        tracker.durable = durable

    def start(self) -> None:
        """Forget earlier samples and record from now on."""
        self.samples_s = []
        self.recording = True

    def stop(self) -> list[float]:
        """Stop recording; the samples (seconds)."""
        self.recording = False
        return self.samples_s


class AmmBench:
    """One fully wired manager on the mock, with its OTLP receiver. Use ``async with``."""

    def __init__(self, api_base: str, *, protocol: str = "http/protobuf", models: int = 4) -> None:
        self.api_base = api_base
        self.protocol = protocol
        self.models = models
        self.manager: Any = None
        self.receiver: Any = None
        self.spans = SpanCounter()
        self.durable: DurableTimer | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def data_dir(self) -> FsPath:
        """Where the manager keeps its SQLite store."""
        assert self._tmp is not None
        return FsPath(self._tmp.name) / "data"

    async def __aenter__(self) -> AmmBench:
        from benchmarks.otlp_sink import OTLPSink

        self.receiver = OTLPSink(grpc=self.protocol == "grpc")
        self.receiver.start()
        endpoint = self.receiver.endpoint
        # The standard variables, as a user would configure a collector.
        os.environ.update({
            "OTEL_SERVICE_NAME": "amm-bench",
            "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
            "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol,
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_METRICS_EXPORTER": "otlp",
            "OPENAI_API_KEY": BENCH_API_KEY,
        })
        self._tmp = tempfile.TemporaryDirectory(prefix="amm-bench-")
        config = FsPath(self._tmp.name) / "model_registry.json"
        config.write_text(json.dumps(registry_document(self.api_base, self.models)))

        from amm.manager import ModelManager

        self.manager = ModelManager.from_config(
            config, data_dir=self.data_dir, daily_budget=1e12, service_name="amm-bench",
        )
        tel = self.manager.telemetry
        if tel is None or not tel.enabled:
            raise RuntimeError(
                "amm telemetry is off: the benchmark needs it on (OTEL_SDK_DISABLED?)")
        tel.tracer_provider.add_span_processor(self.spans)
        self.durable = DurableTimer(self.manager.cost_tracker)
        await self.manager.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.manager is not None:
            await self.manager.stop()
            if self.manager.telemetry is not None:
                # Before the receiver goes: the metric reader's last export needs it.
                self.manager.telemetry.shutdown()
            self.manager = None
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def span_totals(self, *, timeout_s: float = 30.0) -> dict[str, int]:
        """Flush, then spans emitted (ended, sampled), received by OTLP and dropped by amm."""
        tel = self.manager.telemetry
        tel.force_flush()
        emitted = self.spans.count
        received = self.receiver.wait_for(emitted, timeout=timeout_s)
        return {"emitted": emitted, "received": received,
                "dropped_by_processor": int(tel.spans_dropped)}


class AmmPath:
    """``ModelManager.complete`` with a fresh prompt (a cache miss) on every call."""

    name = "amm"

    def __init__(self, bench: AmmBench) -> None:
        self._bench = bench
        self._request_type: Any = None

    async def setup(self) -> None:
        from amm.models import ModelRequest

        self._request_type = ModelRequest

    async def call(self, i: int) -> None:
        request = self._request_type(
            prompt=prompt(i), task_id=f"task-{i}", agent_type=AGENT_TYPE,
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE,
        )
        reply = await self._bench.manager.complete(request)
        if not reply.content:
            raise RuntimeError("empty completion from amm")

    def settle(self) -> None:
        """Export and write now what this path's calls queued (charged to this path)."""
        self._bench.manager.flush()

    async def close(self) -> None:
        return None


class DecoratorPath:
    """An ``@managed_model`` agent that makes one ``llm.complete`` call."""

    name = "amm_decorator"

    def __init__(self, bench: AmmBench) -> None:
        self._bench = bench
        self._agent: Any = None

    async def setup(self) -> None:
        from amm.decorator import managed_model

        @managed_model(agent_type=AGENT_TYPE, manager=self._bench.manager)
        async def summarise(i: int, *, llm: Any) -> str:
            reply = await llm.complete(prompt(i), max_tokens=MAX_TOKENS, temperature=TEMPERATURE)
            return str(reply.content)

        self._agent = summarise

    async def call(self, i: int) -> None:
        if not await self._agent(i, task_id=f"task-{i}"):
            raise RuntimeError("empty completion from the managed agent")

    def settle(self) -> None:
        """Export and write now what this path's calls queued (charged to this path)."""
        self._bench.manager.flush()

    async def close(self) -> None:
        return None


class AmmStreamPath:
    """``ModelManager.stream`` read with ``async for`` (a cache miss every call).

    The first chunk amm yields already carries text (it never yields role-only chunks).
    The loop ends after amm's steps on the whole answer (quality, cost, cache store), so
    the time to the last chunk includes them.
    """

    name = "amm_stream"

    def __init__(self, bench: AmmBench) -> None:
        self._bench = bench
        self._request_type: Any = None

    async def setup(self) -> None:
        from amm.models import ModelRequest

        self._request_type = ModelRequest

    async def call(self, i: int) -> float:
        request = self._request_type(
            prompt=prompt(i), task_id=f"task-{i}", agent_type=AGENT_TYPE,
            max_tokens=MAX_TOKENS, temperature=TEMPERATURE,
        )
        stream = self._bench.manager.stream(request)
        first = 0.0
        async for chunk in stream:
            if not first and chunk.delta:
                first = time.perf_counter()
        if not first or stream.response is None or not stream.response.content:
            raise RuntimeError("no text streamed by amm")
        return first

    def settle(self) -> None:
        """Export and write now what this path's calls queued (charged to this path)."""
        self._bench.manager.flush()

    async def close(self) -> None:
        return None


class DecoratorStreamPath:
    """An ``@managed_model`` agent that streams one ``llm.stream`` answer."""

    name = "amm_decorator_stream"

    def __init__(self, bench: AmmBench) -> None:
        self._bench = bench
        self._agent: Any = None

    async def setup(self) -> None:
        from amm.decorator import managed_model

        @managed_model(agent_type=AGENT_TYPE, manager=self._bench.manager)
        async def summarise(i: int, *, llm: Any) -> float:
            stream = llm.stream(prompt(i), max_tokens=MAX_TOKENS, temperature=TEMPERATURE)
            first = 0.0
            async for chunk in stream:
                if not first and chunk.delta:
                    first = time.perf_counter()
            if not first or stream.response is None or not stream.response.content:
                raise RuntimeError("no text streamed by the managed agent")
            return first

        self._agent = summarise

    async def call(self, i: int) -> float:
        first: float = await self._agent(i, task_id=f"task-{i}")
        return first

    def settle(self) -> None:
        """Export and write now what this path's calls queued (charged to this path)."""
        self._bench.manager.flush()

    async def close(self) -> None:
        return None
