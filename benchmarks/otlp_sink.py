"""The OTLP receiver in its own process, so decoding spans costs the measured client nothing.

:class:`~telemetry.receiver.OTLPReceiver` decodes protobuf and keeps every span in
Python objects. In the benchmark's process that would take the GIL from the client
being measured and grow its RSS with every span received, so it runs here, in a
child process driven over stdin/stdout with one-line commands::

    count            -> the number of spans received so far
    wait N SECONDS   -> waits until N spans arrived (or the timeout); the count

>>> with OTLPSink(grpc=False) as sink:
...     os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = sink.endpoint
...     sink.span_count()
"""

from __future__ import annotations

import json
import sys

from benchmarks.child import ChildProcess

__all__ = ["OTLPSink", "serve"]



def serve(use_grpc: bool) -> None:
    """Child entry point: run one receiver, print its endpoint, answer commands until stdin
    closes."""
    from telemetry.receiver import OTLPReceiver

    receiver = OTLPReceiver(grpc=use_grpc, http=not use_grpc)
    endpoint = receiver.grpc_endpoint if use_grpc else receiver.http_endpoint
    print(json.dumps({"endpoint": endpoint}), flush=True)
    try:
        for line in sys.stdin:
            words = line.split()
            if words[:1] == ["wait"] and len(words) == 3:
                receiver.wait_for(int(words[1]), timeout=float(words[2]))
            print(receiver.span_count(), flush=True)
    finally:
        receiver.stop()


class OTLPSink(ChildProcess):
    """A child process running an OTLP receiver (HTTP/protobuf, or gRPC with ``grpc=True``)."""

    def __init__(self, *, grpc: bool = False) -> None:
        super().__init__()
        self.grpc = grpc
        self.endpoint = ""

    def start(self) -> None:
        """Start the child and wait for its endpoint. Safe to call twice."""
        if self.running:
            return
        line = self._spawn("benchmarks.otlp_sink", *(["--grpc"] if self.grpc else []))
        try:
            self.endpoint = json.loads(line)["endpoint"]
        except (ValueError, KeyError) as exc:
            self.stop()
            raise RuntimeError(f"the OTLP receiver process did not start (said {line!r})") from exc

    def _ask(self, command: str) -> int:
        if self._process is None or self._process.stdin is None:
            raise RuntimeError("the OTLP receiver process is not running")
        self._process.stdin.write(command + "\n")
        self._process.stdin.flush()
        return int(self._readline())

    def span_count(self) -> int:
        """Spans received so far."""
        return self._ask("count")

    def wait_for(self, n: int, timeout: float = 30.0) -> int:
        """Wait until ``n`` spans arrived or ``timeout`` passed; the count then."""
        return self._ask(f"wait {int(n)} {float(timeout)}")

    def __enter__(self) -> OTLPSink:
        self.start()
        return self


if __name__ == "__main__":
    serve(use_grpc="--grpc" in sys.argv[1:])
