"""The exporter process: re-builds spans from their records and exports them over OTLP.

Started by :class:`telemetry.export_process.ExportProcessSpanProcessor` as::

    python -m telemetry.export_child PROTOCOL PARENT_PID DELAY_MS BATCH

with the application's environment, so the SDK's OTLP exporter reads the same
endpoint, headers, TLS, compression and timeout variables it would have read there.
It reads frames (:mod:`telemetry.export_pipe`) on stdin:

* ``("spans", table_entries, records)``: spans to export (:mod:`telemetry.span_record`);
* ``("flush", token)``: export what is pending now, answer ``("flushed", token, ok)``;

and answers on stdout with ``("export", span_count, failure)`` after every export
(``failure`` None or ``(error_type, detail, not_accepted)``), which the application's
:class:`~telemetry.export_guard.ExportGuard` counts and reports, as if the export had
run there. Pending spans go out when ``BATCH`` are pending or ``DELAY_MS`` after the
first one arrived.

It ends when stdin closes (the application shut down or died: what is pending is
exported first), or when its parent process is gone (checked twice a second, in case
another process inherited the pipe). It ignores SIGINT: a Ctrl-C in a terminal goes to
the whole process group, and the application exports its last spans on the way out.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Sequence

__all__ = ["main"]

_PARENT_CHECK_S = 0.5


def _watch_parent(parent_pid: int) -> None:
    def watch() -> None:
        while True:
            time.sleep(_PARENT_CHECK_S)
            if os.getppid() != parent_pid:
                os._exit(0)  # orphaned: nobody is left to flush for

    threading.Thread(target=watch, name="amm-export-parent-watch", daemon=True).start()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the exporter loop until stdin closes; the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    protocol, parent_pid, delay_s, batch_size = (
        args[0], int(args[1]), float(args[2]) / 1000.0, int(args[3]))
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _watch_parent(parent_pid)

    from opentelemetry.sdk.trace import ReadableSpan
    from opentelemetry.sdk.trace.export import SpanExportResult

    from telemetry.export_guard import attempt, plain_otlp_span_exporter
    from telemetry.export_pipe import FrameReader, write_frame
    from telemetry.span_record import Tables, decode

    exporter = plain_otlp_span_exporter(protocol)
    reader = FrameReader(sys.stdin.fileno())
    out = sys.stdout.fileno()
    tables = Tables()
    pending: list[ReadableSpan] = []
    first_at = 0.0

    def export() -> bool:
        if not pending:
            return True
        batch = list(pending)
        pending.clear()
        _, failure = attempt(lambda: exporter.export(batch), SpanExportResult.SUCCESS)
        write_frame(out, ("export", len(batch), None if failure is None else
                          (failure.error_type, failure.detail, failure.not_accepted)))
        return failure is None

    try:
        while True:
            timeout = None if not pending else first_at + delay_s - time.monotonic()
            try:
                message = reader.receive(timeout)
            except EOFError:
                break
            if message is None:  # the delay of the first pending span ran out
                export()
                continue
            if message[0] == "spans":
                tables.update(message[1])
                if not pending:
                    first_at = time.monotonic()
                try:
                    pending.extend(decode(record, tables) for record in message[2])
                except Exception as exc:  # a record this side cannot read: say so, go on
                    write_frame(out, ("export", len(message[2]),
                                      (type(exc).__name__, f"span record not readable: {exc}",
                                       False)))
                if len(pending) >= batch_size:
                    export()
            elif message[0] == "flush":
                write_frame(out, ("flushed", message[1], export()))
        export()
    except BrokenPipeError:
        return 0  # the application is gone: nobody reads the outcome
    finally:
        exporter.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
