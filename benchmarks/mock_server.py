"""A zero-delay OpenAI-compatible ``/v1/chat/completions`` mock, in its own process.

The benchmark measures what the *client* side costs, so the server must never be
the bottleneck: it is raw asyncio streams with a minimal HTTP/1.1 keep-alive
parser (no framework), answering every POST with one fixed, small completion with
usage. It runs in a separate process (a subprocess) so it never
competes with the measured client for the GIL.

>>> with MockServer() as server:
...     api_base = server.api_base        # "http://127.0.0.1:PORT/v1"
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys
import time

from benchmarks.child import ChildProcess

__all__ = ["COMPLETION_TEXT", "MockServer", "measure_ceiling", "serve"]

COMPLETION_TEXT = "The answer is 42: a short, fixed completion from the benchmark mock."
"""The content of every answer; long enough to look like text, short enough to be cheap."""

_BODY = json.dumps({
    "id": "chatcmpl-bench",
    "object": "chat.completion",
    "created": 1_700_000_000,
    "model": "bench-model",
    "choices": [{
        "index": 0,
        "message": {"role": "assistant", "content": COMPLETION_TEXT},
        "finish_reason": "stop",
    }],
    "usage": {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26},
}, separators=(",", ":")).encode()

# Built once: every answer is the same bytes, so the server does no per-request work
# beyond reading the request.
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
_MAX_HEADER_BYTES = 64 * 1024


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one keep-alive connection until the client closes it."""
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return
            if len(head) > _MAX_HEADER_BYTES:
                return
            length = 0
            close = False
            # Header names are case-insensitive; only two of them matter here.
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                lowered = name.strip().lower()
                if lowered == b"content-length":
                    length = int(value.strip())
                elif lowered == b"connection" and value.strip().lower() == b"close":
                    close = True
            if length:
                await reader.readexactly(length)
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            writer.write(_RESPONSE if path.endswith(b"/chat/completions") else _NOT_FOUND)
            await writer.drain()
            if close:
                return
    except (ConnectionError, asyncio.IncompleteReadError, ValueError):
        return
    except asyncio.CancelledError:  # the server is stopping: end quietly, nobody awaits us
        return
    finally:
        writer.close()


async def _serve_forever(sock: socket.socket) -> None:
    server = await asyncio.start_server(_handle, sock=sock, backlog=1024)
    print(sock.getsockname()[1], flush=True)
    loop = asyncio.get_running_loop()
    # The parent stops the server by closing our stdin (or by dying, which closes it too).
    stopped: asyncio.Future[None] = loop.create_future()

    def stop() -> None:
        if not stopped.done():
            stopped.set_result(None)

    loop.add_reader(sys.stdin.fileno(), stop)
    async with server:
        await stopped


def serve() -> None:
    """Process entry point: bind 127.0.0.1 on a free port, print it, serve until stdin closes."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    asyncio.run(_serve_forever(sock))


class MockServer(ChildProcess):
    """The mock in a child process; a context manager that starts and stops it."""

    def __init__(self) -> None:
        super().__init__()
        self.port: int = 0

    @property
    def api_base(self) -> str:
        """The OpenAI-style base URL (ending in ``/v1``) to give litellm."""
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def url(self) -> str:
        """The full chat completions URL, for raw HTTP clients."""
        return f"{self.api_base}/chat/completions"

    def start(self) -> None:
        """Start the child process and wait for its port. Safe to call twice."""
        if self.running:
            return
        line = self._spawn("benchmarks.mock_server")
        if not line.isdigit():
            self.stop()
            raise RuntimeError(f"the benchmark mock server did not start (said {line!r})")
        self.port = int(line)

    def __enter__(self) -> MockServer:
        self.start()
        return self


async def measure_ceiling(url: str, *, concurrency: int = 64, requests: int = 4000) -> float:
    """Requests/s the mock sustains against a raw ``httpx.AsyncClient`` at ``concurrency``."""
    import httpx

    payload = {"model": "bench-model", "messages": [{"role": "user", "content": "ceiling"}]}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=30) as client:
        remaining = requests

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                (await client.post(url, json=payload)).raise_for_status()

        warm = [client.post(url, json=payload) for _ in range(concurrency)]
        await asyncio.gather(*warm)
        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return requests / (time.perf_counter() - start)


if __name__ == "__main__":
    serve()
