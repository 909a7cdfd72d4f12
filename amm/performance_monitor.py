"""PerformanceMonitor: latency, success and quality per model, rolling and durable.

Two views of the same observations:

* in memory, a :class:`~telemetry.stats.RollingStats` over the last ``window_s``
  (``snapshot()``, cheap: the selector reads it for every candidate);
* on disk, the ``amm_performance`` table (WAL SQLite at ``db_path``), written in
  batches by the store's shared writer (:mod:`telemetry.store_writer`), read by
  ``get_model_performance`` and
  ``detect_degradation`` over any window, and replayed into the rolling stats when a
  new monitor opens an existing file (warm start: a restarted process does not forget).

Counting rule (no double counting): every ``AttemptEvent`` is one request, every
``QualityEvent`` one quality score; ``record_performance(...)`` is exactly one
attempt plus one quality score. Wire the monitor as a listener of the recorder
*or* call ``record_performance`` for a request, not both, and register it once.
(Events are not de-duplicated by task: one task may make several calls.)

>>> monitor = PerformanceMonitor(Path("data/amm.db"))
>>> await monitor.record_performance("gpt-4o", "review", 812.0, True, 0.9, "task-1")
>>> (await monitor.get_model_performance("gpt-4o")).p95_latency_ms
"""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType

from amm._store import open_store
from amm.errors import (
    CANCELLED,
    ConfigurationError,
    InvalidRequestError,
    PerformanceMonitorError,
)
from amm.models import PerformanceDegradation, PerformanceMetrics
from telemetry.events import (
    HEALTH_CHECK_AGENT,
    NULL_SINK,
    AttemptEvent,
    DegradationEvent,
    Event,
    EventSink,
    QualityEvent,
    StatsSnapshot,
)
from telemetry.stats import RollingStats, exact_percentile
from telemetry.store_schema import PERFORMANCE_DDL, PERFORMANCE_TABLE
from telemetry.store_writer import StoreWriter

__all__ = ["PERFORMANCE_DDL", "PerformanceMonitor"]

_log = logging.getLogger("amm.performance")

_INSERT = (f"INSERT INTO {PERFORMANCE_TABLE} (ts, model_id, agent_type, task_id, latency_ms, "
           "success, error_type, cost_usd, input_tokens, output_tokens, quality_score) "
           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)")
_Row = tuple[float, str, str, str, float | None, int | None, str | None, float, int, int,
             float | None]


class PerformanceMonitor:
    """Tracks latency, success rate and quality per model (the seed's API,
    ``docs/seed.md``, plus ``snapshot``)."""

    def __init__(
        self,
        db_path: str | Path,
        *,
        stats: RollingStats | None = None,
        clock: Callable[[], float] = time.time,
        window_s: float = 900.0,
        recent_window_s: float = 3600.0,
        baseline_window_s: float = 86400.0,
        min_samples: int = 10,
        events: EventSink = NULL_SINK,
        flush_interval_s: float = 0.5,
        store: StoreWriter | None = None,
    ) -> None:
        self.db_path = Path(db_path)
        self._clock = clock
        self._stats = stats if stats is not None else RollingStats(window_s=window_s, clock=clock)
        self._recent_s = recent_window_s
        self._baseline_s = baseline_window_s
        self._min_samples = min_samples
        self._events = events
        self._closed = False
        self._owned = store is None
        try:
            self._store = store if store is not None else open_store(
                self.db_path, flush_interval_s=flush_interval_s, clock=clock)
        except ConfigurationError as exc:
            raise PerformanceMonitorError(
                f"cannot open the performance store {self.db_path}: {exc.__cause__}") from exc
        try:
            self._warm_start()
        except sqlite3.Error as exc:
            self.close()
            raise PerformanceMonitorError(
                f"cannot read the performance store {self.db_path}: {exc}") from exc

    def __repr__(self) -> str:
        return (f"PerformanceMonitor({str(self.db_path)!r}, pending={self._store.pending()}, "
                f"models={len(self._stats.models())}, closed={self._closed})")

    # --- recording ---------------------------------------------------------------------
    async def record_performance(self, model_id: str, agent_type: str, latency_ms: float,
                                 success: bool, quality_score: float | None, task_id: str) -> None:
        """Record one request: one attempt and (when given) one quality score in [0, 1]."""
        if not model_id:
            raise InvalidRequestError("record_performance: model_id is empty")
        if not math.isfinite(latency_ms) or latency_ms < 0:
            raise InvalidRequestError(
                f"record_performance: latency_ms must be >= 0, got {latency_ms!r}",
                model_id=model_id, task_id=task_id)
        if quality_score is not None and not 0.0 <= quality_score <= 1.0:
            raise InvalidRequestError(
                f"record_performance: quality_score must be in [0, 1], got {quality_score!r}",
                model_id=model_id, task_id=task_id)
        now = self._clock()
        self._stats.observe_attempt(model_id, agent_type, latency_ms, success, at=now)
        if quality_score is not None:
            self._stats.observe_quality(model_id, agent_type, quality_score, at=now)
        self._enqueue((now, model_id, agent_type, task_id, float(latency_ms), int(success),
                       None if success else "_OTHER", 0.0, 0, 0, quality_score))

    def record(self, event: Event) -> None:
        """Listener: learn from ``AttemptEvent`` and ``QualityEvent``; ignore the rest
        (and health-check probes, which are not traffic)."""
        if getattr(event, "agent_type", None) == HEALTH_CHECK_AGENT:
            return
        if isinstance(event, AttemptEvent):
            now = self._clock()
            if event.error_type != CANCELLED:  # the caller's doing, not the model's
                self._stats.observe_attempt(
                    event.model_id, event.agent_type, event.latency_ms, event.success,
                    error_type=event.error_type, cost_usd=event.cost_usd,
                    input_tokens=event.input_tokens, output_tokens=event.output_tokens, at=now)
            self._enqueue((now, event.model_id, event.agent_type, event.task_id,
                           float(event.latency_ms), int(event.success),
                           None if event.success else (event.error_type or "_OTHER"),
                           float(event.cost_usd), event.input_tokens, event.output_tokens, None))
        elif isinstance(event, QualityEvent):
            now = self._clock()
            self._stats.observe_quality(event.model_id, event.agent_type, event.overall, at=now)
            self._enqueue((now, event.model_id, event.agent_type, event.task_id,
                           None, None, None, 0.0, 0, 0, float(event.overall)))

    def snapshot(self, model_id: str, agent_type: str | None = None) -> StatsSnapshot | None:
        """Rolling statistics over the last ``window_s`` (None: nothing observed). Cheap."""
        return self._stats.snapshot(model_id, agent_type)

    @property
    def stats(self) -> RollingStats:
        """The rolling statistics this monitor feeds."""
        return self._stats

    @property
    def snapshots_fn(self) -> Callable[[Iterable[str], str | None],
                                       list[StatsSnapshot | None]] | None:
        """``RollingStats.snapshots``: every candidate's snapshot in one call, for the
        selector; None when a subclass overrides :meth:`snapshot`."""
        if type(self).snapshot is not PerformanceMonitor.snapshot:
            return None
        return self._stats.snapshots

    @property
    def snapshot_fn(self) -> Callable[[str, str | None], StatsSnapshot | None]:
        """What :meth:`snapshot` calls, to call it directly: the selector reads it twice per
        candidate. A subclass that overrides :meth:`snapshot` returns its own here."""
        if type(self).snapshot is not PerformanceMonitor.snapshot:
            return self.snapshot
        return self._stats.snapshot

    # --- reading -----------------------------------------------------------------------
    async def get_model_performance(self, model_id: str, window_hours: int = 24
                                    ) -> PerformanceMetrics:
        """Requests, success rate, latency mean/p50/p95/p99 and mean quality over the
        last ``window_hours``, from the durable table (exact percentiles over every
        attempt, failures included). The success rate is converted to the percentage
        the seed's :class:`~amm.models.PerformanceMetrics` holds here, at this edge."""
        if window_hours <= 0:
            raise InvalidRequestError(f"window_hours must be > 0, got {window_hours!r}",
                                      model_id=model_id)
        now = self._clock()
        latencies, successes, qualities = await asyncio.to_thread(
            self._window, model_id, now - window_hours * 3600.0, now)
        total = len(latencies)
        return PerformanceMetrics(
            model_id=model_id,
            window_hours=window_hours,
            total_requests=total,
            successful_requests=successes,
            failed_requests=total - successes,
            success_rate=100.0 * successes / total if total else 0.0,
            average_latency_ms=sum(latencies) / total if total else 0.0,
            p50_latency_ms=exact_percentile(latencies, 0.50),
            p95_latency_ms=exact_percentile(latencies, 0.95),
            p99_latency_ms=exact_percentile(latencies, 0.99),
            average_quality_score=sum(qualities) / len(qualities) if qualities else 0.0,
        )

    async def detect_degradation(self, model_id: str, threshold: float = 0.8
                                 ) -> PerformanceDegradation | None:
        """Compare the last ``recent_window_s`` with the ``baseline_window_s`` before it.

        A metric degrades when recent/baseline < ``threshold`` (success rate, quality)
        or baseline/recent < ``threshold`` (p95 latency, where higher is worse). Each
        window needs ``min_samples``. Returns the worst degradation (lowest ratio) and
        reports every one as a ``DegradationEvent``; None when nothing degraded.
        """
        if not 0.0 < threshold <= 1.0:
            raise InvalidRequestError(f"threshold must be in (0, 1], got {threshold!r}",
                                      model_id=model_id)
        now = self._clock()
        split = now - self._recent_s
        recent = await asyncio.to_thread(self._window, model_id, split, now)
        base = await asyncio.to_thread(self._window, model_id, split - self._baseline_s, split)
        found: list[tuple[float, PerformanceDegradation]] = []

        def check(metric: str, current: float, baseline: float, higher_is_worse: bool) -> None:
            if current <= 0 or baseline <= 0:
                return
            ratio = baseline / current if higher_is_worse else current / baseline
            if ratio < threshold:
                found.append((ratio, PerformanceDegradation(
                    metric=metric, current_value=current, baseline_value=baseline,
                    threshold=threshold, model_id=model_id)))

        (r_lat, r_ok, r_q), (b_lat, b_ok, b_q) = recent, base
        if len(r_lat) >= self._min_samples and len(b_lat) >= self._min_samples:
            check("success_rate", r_ok / len(r_lat), b_ok / len(b_lat), False)
            check("p95_latency_ms", exact_percentile(r_lat, 0.95), exact_percentile(b_lat, 0.95),
                  True)
        if len(r_q) >= self._min_samples and len(b_q) >= self._min_samples:
            check("quality", sum(r_q) / len(r_q), sum(b_q) / len(b_q), False)
        for _, d in found:
            self._events.record(DegradationEvent(d.model_id, d.metric, d.current_value,
                                                 d.baseline_value, d.threshold))
        return min(found, key=lambda f: f[0])[1] if found else None

    def _window(self, model_id: str, since: float, until: float
                ) -> tuple[list[float], int, list[float]]:
        """(latencies of attempts, successes, quality scores) of rows in [since, until)."""
        self.flush()
        try:
            rows = self._store.read(lambda c: c.execute(
                f"SELECT latency_ms, success, quality_score FROM {PERFORMANCE_TABLE} "
                "WHERE model_id = ? AND ts >= ? AND ts < ?", (model_id, since, until + 1e-6),
            ).fetchall())
        except sqlite3.Error as exc:
            raise PerformanceMonitorError(f"reading {self.db_path} failed: {exc}",
                                          model_id=model_id) from exc
        latencies = [r[0] for r in rows if r[0] is not None]
        successes = sum(1 for r in rows if r[0] is not None and r[1])
        qualities = [r[2] for r in rows if r[2] is not None]
        return latencies, successes, qualities

    # --- persistence ------------------------------------------------------------------
    def _enqueue(self, row: _Row) -> None:
        if self._closed:
            _log.debug("performance monitor closed: row for %s not stored", row[1])
            return
        self._store.submit(_INSERT, row)

    @property
    def write_failures(self) -> int:
        """Failed commits of the store this monitor writes (shared with the other
        components of the file)."""
        return self._store.write_failures

    def flush(self) -> None:
        """Write every pending row now, in one transaction. Idempotent. Raises
        PerformanceMonitorError when the store refuses (the rows stay queued)."""
        try:
            self._store.flush()
        except sqlite3.Error as exc:
            raise PerformanceMonitorError(
                f"writing to {self.db_path} failed: {exc}") from exc

    def close(self) -> None:
        """Write what is pending and let go of the store. Idempotent; never raises
        (a write it could not do is logged by the store)."""
        if self._closed:
            return
        self._closed = True
        if self._owned:
            self._store.release()
        else:
            self._store.flush_quietly()

    def _warm_start(self) -> None:
        """Replay the rows of the rolling window into the in-memory statistics."""
        since = self._clock() - self._stats.window_s
        rows = self._store.read(lambda c: c.execute(
            "SELECT ts, model_id, agent_type, latency_ms, success, error_type, cost_usd, "
            f"input_tokens, output_tokens, quality_score FROM {PERFORMANCE_TABLE} WHERE ts >= ? "
            "ORDER BY ts", (since,)).fetchall())
        for ts, model, agent, latency, success, error_type, cost, tin, tout, quality in rows:
            if latency is not None:
                self._stats.observe_attempt(model, agent, latency, bool(success), error_type,
                                            cost, tin, tout, at=ts)
            if quality is not None:
                self._stats.observe_quality(model, agent, quality, at=ts)

    def __enter__(self) -> PerformanceMonitor:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    async def __aenter__(self) -> PerformanceMonitor:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await asyncio.to_thread(self.close)


