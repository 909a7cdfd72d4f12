"""OTLP span export in a child process, so encoding never takes the callers' GIL.

Encoding a span to OTLP protobuf costs ~45 us of Python; on the BatchSpanProcessor's
thread that is GIL time the application's callers wait for (the managed call's p99,
see ``benchmarks/PROFILE.md``). :class:`ExportProcessSpanProcessor` instead turns each
finished span into a tuple of primitives (:mod:`telemetry.span_record`, ~3 us, on the
thread that ends the span), queues it, and a writer thread pickles the queue in frames
of 64 (~1 us a span) onto the stdin of one child process
(:mod:`telemetry.export_child`), which re-builds the spans and exports them with the
SDK's own OTLP exporter (``http/protobuf`` or ``grpc``), under the application's
environment (endpoint, headers, resource as recorded). The receiver gets the same
bytes as from an in-process exporter.

* Failures: the child sends each export's outcome back; the application's
  :class:`~telemetry.export_guard.ExportGuard` counts them in
  ``amm.telemetry.export.failures`` and reports the first once, as before.
* Drops: the queue is bounded (``OTEL_BSP_MAX_QUEUE_SIZE``, default 32,768); a span
  that finds it full is dropped and counted in ``amm.telemetry.spans_dropped`` and
  :attr:`~ExportProcessSpanProcessor.dropped`, as by
  :class:`~telemetry.processor.CountingBatchSpanProcessor`.
* Lifecycle: the child starts with the processor; ``force_flush`` returns once the
  child exported everything queued before it (and its outcome was counted);
  ``shutdown`` flushes, closes the child's stdin and waits for it to exit (it is
  killed after :data:`STOP_TIMEOUT_S`). A child that dies is started again (at most
  once every :data:`RESTART_INTERVAL_S`, its lost spans counted as dropped). The child
  exits by itself when the application's process goes. After ``os.fork()`` the forked
  process starts a child of its own.

Switch: :data:`ENV_EXPORT_PROCESS` (``AMM_EXPORT_PROCESS``); the span store is not
affected (it stays in-process), and without an OTLP endpoint no child is started.

>>> processor = ExportProcessSpanProcessor(ExportGuard("traces", endpoint, "http/protobuf"))
>>> tracer_provider.add_span_processor(processor)
"""

from __future__ import annotations

import contextlib
import logging
import os
import subprocess
import sys
import threading
import time
import weakref
from collections import deque
from pathlib import Path
from typing import Any

from opentelemetry.metrics import MeterProvider
from opentelemetry.sdk.trace import ReadableSpan, SpanProcessor

from telemetry import conventions as c
from telemetry.export_guard import ExportFailure, ExportGuard
from telemetry.export_pipe import FrameReader, write_frame
from telemetry.processor import (
    DEFAULT_EXPORT_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_SIZE,
    DEFAULT_SCHEDULE_DELAY_MS,
    env_number,
)
from telemetry.span_record import Interner, SpanRecord, encode

__all__ = ["ENV_EXPORT_PROCESS", "FRAME_SPANS", "RESTART_INTERVAL_S", "STOP_TIMEOUT_S",
           "ExportProcessSpanProcessor", "export_process_enabled"]

_log = logging.getLogger("amm.telemetry")

ENV_EXPORT_PROCESS = "AMM_EXPORT_PROCESS"
"""``1`` (default): OTLP spans are encoded and sent by a child process; ``0``: by the
SDK's batch processor in the application's process, as before."""
FRAME_SPANS = 64
"""Spans per pickled frame: a frame holds the GIL ~0.1 ms to pickle."""
RESTART_INTERVAL_S = 5.0
"""A dead child is started again at most this often; spans meanwhile are dropped."""
STOP_TIMEOUT_S = 30.0
"""How long ``shutdown`` waits for the child's last export before killing it."""
_CHILD_DELAY_MS = 200.0  # the child merges frames that arrive within this into one export
_PACKAGE_ROOT = str(Path(__file__).resolve().parent.parent)


def export_process_enabled() -> bool:
    """Whether :data:`ENV_EXPORT_PROCESS` asks for the exporter process (default: yes)."""
    value = os.environ.get(ENV_EXPORT_PROCESS, "1").strip().lower()
    return value not in ("0", "false", "no", "off")


class _Flush:
    __slots__ = ("done", "ok")

    def __init__(self) -> None:
        self.done = threading.Event()
        self.ok = False

    def resolve(self, ok: bool) -> None:
        self.ok = ok
        self.done.set()


class ExportProcessSpanProcessor(SpanProcessor):
    """Sends finished, sampled spans to an OTLP exporter in a child process."""

    def __init__(self, guard: ExportGuard, *, max_queue_size: int | None = None,
                 schedule_delay_millis: float | None = None,
                 meter_provider: MeterProvider | None = None) -> None:
        self.guard = guard
        self.dropped = 0
        self._capacity = int(max_queue_size or env_number("OTEL_BSP_MAX_QUEUE_SIZE",
                                                           DEFAULT_MAX_QUEUE_SIZE))
        delay_ms = schedule_delay_millis or env_number("OTEL_BSP_SCHEDULE_DELAY",
                                                        DEFAULT_SCHEDULE_DELAY_MS)
        self._delay_s = delay_ms / 1000.0
        self._batch = int(env_number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", DEFAULT_EXPORT_BATCH_SIZE))
        self._counter: Any = None
        if meter_provider is not None:
            self._counter = meter_provider.get_meter(c.INSTRUMENTATION_SCOPE).create_counter(
                c.METRIC_SPANS_DROPPED, unit="{span}",
                description="Spans dropped because the export queue was full")
        # The environment as it is now: a child started later exports to the same place.
        self._env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (_PACKAGE_ROOT, os.environ.get("PYTHONPATH", "")) if p)}
        self._closed = False
        self._start()
        ref = weakref.WeakMethod(self._after_fork)
        os.register_at_fork(after_in_child=lambda: (m := ref()) is not None and m())

    def _start(self) -> None:
        self._queue: deque[SpanRecord] = deque()
        self._interner = Interner()
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._flush_requests: list[tuple[int, _Flush]] = []
        self._flushes: dict[int, _Flush] = {}
        self._next_token = 0
        self._stopping = False
        self._process: subprocess.Popen[bytes] | None = None
        self._started_at = -RESTART_INTERVAL_S
        self._reader: threading.Thread | None = None
        self._writer = threading.Thread(target=self._write_loop, name="amm-export-writer",
                                        daemon=True)
        self._writer.start()

    def _after_fork(self) -> None:
        # The parent's child and threads are not ours. Its pipes are: close them, or the
        # parent's child would never see its stdin close. Then start afresh.
        process = self._process
        for pipe in (process.stdin, process.stdout) if process is not None else ():
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()
        if not self._closed:
            self._start()

    def __repr__(self) -> str:
        process = self._process
        return (f"ExportProcessSpanProcessor({self.guard.endpoint} over {self.guard.protocol}, "
                f"pid={process.pid if process else None}, queued={len(self._queue)}, "
                f"capacity={self._capacity}, dropped={self.dropped})")

    @property
    def pid(self) -> int | None:
        """The exporter process's id while it runs."""
        process = self._process
        return process.pid if process is not None and process.poll() is None else None

    # --- the span's end: on the caller's thread -------------------------------------------
    def on_end(self, span: ReadableSpan) -> None:
        if self._closed or span.context is None or not span.context.trace_flags.sampled:
            return
        if len(self._queue) >= self._capacity:
            self._count_drops(1)
            return
        try:
            record = encode(span, self._interner)
        except Exception:  # telemetry never fails the caller: the span is dropped, counted
            _log.debug("a span could not be encoded for export", exc_info=True)
            self._count_drops(1)
            return
        self._queue.append(record)
        if len(self._queue) >= FRAME_SPANS:
            self._wake.set()

    def _count_drops(self, count: int) -> None:
        self.dropped += count
        if self._counter is not None:
            self._counter.add(count, {"exporter": "ExportProcess"})

    # --- flush and shutdown ---------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Wait until the child exported every span queued before this call; True when it
        did so within ``timeout_millis`` (as the SDK's processor: a failed export is
        counted and reported by the guard, not returned here)."""
        if self._closed:
            return False
        return self._flush(timeout_millis / 1000.0)

    def _flush(self, timeout_s: float) -> bool:
        flush = _Flush()
        with self._lock:
            self._next_token += 1
            self._flush_requests.append((self._next_token, flush))
        self._wake.set()
        return flush.done.wait(timeout_s) and flush.ok

    def shutdown(self) -> None:
        """Export what is queued, stop the child and the threads. Idempotent."""
        if self._closed:
            return
        self._flush(STOP_TIMEOUT_S)
        self._closed = True
        self._stopping = True
        self._wake.set()
        self._writer.join(STOP_TIMEOUT_S)
        self._stop_child(self._process)

    def _stop_child(self, process: subprocess.Popen[bytes] | None) -> None:
        if process is None:
            return
        if process.stdin is not None:
            with contextlib.suppress(OSError):
                process.stdin.close()  # the child's signal to export the rest and exit
        try:
            process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            _log.warning("the span exporter process %d did not stop in %.0f s: killed",
                         process.pid, STOP_TIMEOUT_S)
            process.kill()
            process.wait()
        reader = self._reader
        if reader is not None and reader is not threading.current_thread():
            reader.join(STOP_TIMEOUT_S)
        if process.stdout is not None:
            process.stdout.close()

    # --- the writer thread ---------------------------------------------------------------
    def _write_loop(self) -> None:
        self._ensure_child()
        while True:
            self._wake.wait(self._delay_s)
            self._wake.clear()
            with self._lock:
                flushes, self._flush_requests = self._flush_requests, []
            stopping = self._stopping
            self._drain()
            for token, flush in flushes:
                process = self._ensure_child()
                waiting = self._flushes  # the flushes this child is to answer
                waiting[token] = flush
                if process is None or not self._write(process, ("flush", token), 0):
                    waiting.pop(token, None)
                    flush.resolve(False)
            if stopping:
                return

    def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch: list[SpanRecord] = []
            try:
                for _ in range(FRAME_SPANS):
                    batch.append(queue.popleft())
            except IndexError:
                pass
            process = self._ensure_child()  # first: a new child is sent the whole table
            if process is None:
                self._count_drops(len(batch))
            else:
                self._write(process, ("spans", self._interner.take_new(), batch), len(batch))

    def _write(self, process: subprocess.Popen[bytes], message: tuple[Any, ...],
               spans: int) -> bool:
        assert process.stdin is not None
        try:
            write_frame(process.stdin.fileno(), message)
            return True
        except OSError:
            self._count_drops(spans)
            self._child_gone(process)
        except Exception:  # a value pickle refuses: the frame is lost, the thread goes on
            _log.warning("%d span(s) could not be sent to the exporter process: dropped",
                         spans, exc_info=True)
            self._count_drops(spans)
        return False

    def _ensure_child(self) -> subprocess.Popen[bytes] | None:
        process = self._process
        if process is not None:
            if process.poll() is None:
                return process
            self._child_gone(process)
        if time.monotonic() - self._started_at < RESTART_INTERVAL_S:
            return None
        self._started_at = time.monotonic()
        try:
            process = subprocess.Popen(
                [sys.executable, "-m", "telemetry.export_child", self.guard.protocol,
                 str(os.getpid()), str(_CHILD_DELAY_MS), str(self._batch)],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=self._env, bufsize=0,
                close_fds=True)
        except OSError as exc:
            _log.warning("the span exporter process could not start (%s): spans are dropped "
                         "and counted; set %s=0 to export in-process", exc, ENV_EXPORT_PROCESS)
            return None
        self._process = process
        self._interner.resend_all()  # a new child knows no resource or scope yet
        self._flushes = {}  # the flushes this child is to answer (its reader's own)
        self._reader = threading.Thread(target=self._read_loop, args=(process, self._flushes),
                                        name="amm-export-reader", daemon=True)
        self._reader.start()
        return process

    def _child_gone(self, process: subprocess.Popen[bytes]) -> None:
        if process.poll() is None:
            return
        with self._lock:
            ours = self._process is process and not self._stopping
            if ours:
                self._process = None
        if ours:
            _log.warning("the span exporter process exited (status %s); it is started again "
                         "(spans it held are lost; spans in between are dropped and counted "
                         "in %s)", process.returncode, c.METRIC_SPANS_DROPPED)

    # --- the reader thread: outcomes from the child -------------------------------------------
    def _read_loop(self, process: subprocess.Popen[bytes], flushes: dict[int, _Flush]) -> None:
        assert process.stdout is not None
        reader = FrameReader(process.stdout.fileno())
        while True:
            try:
                message = reader.receive()
            except (EOFError, OSError):
                break
            if message is None:
                continue
            if message[0] == "export":
                _, _, failure = message
                self.guard.settle(None if failure is None else ExportFailure(*failure))
            elif message[0] == "flushed":
                flush = flushes.pop(message[1], None)
                if flush is not None:
                    flush.resolve(True)  # as the SDK's: flushed, whether or not the export took
        # The child is gone: nobody will answer the flushes it had.
        for token in list(flushes):
            flush = flushes.pop(token, None)
            if flush is not None:
                flush.resolve(False)
        try:
            process.wait(1.0)
        except subprocess.TimeoutExpired:
            return
        self._child_gone(process)
