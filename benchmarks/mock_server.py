"""A zero-delay OpenAI-compatible ``/v1/chat/completions`` mock, in its own process.

The benchmark measures what the *client* side costs, so the server must never be
the bottleneck: it is raw asyncio streams with a minimal HTTP/1.1 keep-alive
parser (no framework), answering every POST with one fixed, small completion with
usage. A request with ``"stream": true`` gets the same answer as OpenAI's server-sent
events (see :data:`STREAM_EVENTS`), one HTTP chunk per event, each written to the
socket on its own. It runs in a separate process (a subprocess) so it never
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
from typing import Any

from benchmarks.child import ChildProcess

__all__ = ["COMPLETION_TEXT", "STREAM_EVENTS", "MockServer", "measure_ceiling", "serve"]

COMPLETION_TEXT = "The answer is 42: a short, fixed completion from the benchmark mock."
"""The content of every answer; long enough to look like text, short enough to be cheap."""

_USAGE = {"prompt_tokens": 12, "completion_tokens": 14, "total_tokens": 26}
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
    "usage": _USAGE,
}, separators=(",", ":")).encode()

# Built once: every answer is the same bytes, so the server does no per-request work
# beyond reading the request.
_RESPONSE = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: application/json\r\n"
    b"Connection: keep-alive\r\n"
    b"Content-Length: " + str(len(_BODY)).encode() + b"\r\n\r\n" + _BODY
)
_CONTENT_CHUNKS = 4  # the text is streamed in this many pieces


def _stream_events(include_usage: bool) -> tuple[bytes, ...]:
    """The answer as OpenAI streams it: a role chunk, the text in a few pieces, a finish
    chunk, with ``include_usage`` a ``choices: []`` chunk carrying the usage (every other
    chunk then says ``"usage": null``, as OpenAI does), and ``data: [DONE]``."""
    words = COMPLETION_TEXT.split(" ")
    step = -(-len(words) // _CONTENT_CHUNKS)
    pieces = [" ".join(words[i:i + step]) + (" " if i + step < len(words) else "")
              for i in range(0, len(words), step)]
    deltas: list[tuple[dict[str, Any], str | None]] = [({"role": "assistant", "content": ""}, None)]
    deltas += [({"content": piece}, None) for piece in pieces]
    deltas.append(({}, "stop"))
    head = {"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1_700_000_000,
            "model": "bench-model", "system_fingerprint": "fp_bench"}
    bodies: list[dict[str, Any]] = [
        {**head,
         "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
         **({"usage": None} if include_usage else {})}
        for delta, finish in deltas
    ]
    if include_usage:
        bodies.append({**head, "choices": [], "usage": _USAGE})
    lines = [b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"
             for body in bodies]
    lines.append(b"data: [DONE]\n\n")
    # One HTTP/1.1 chunk per event: its length in hex, the bytes, CRLF.
    return tuple(f"{len(line):x}".encode() + b"\r\n" + line + b"\r\n" for line in lines)

STREAM_EVENTS = {flag: _stream_events(flag) for flag in (False, True)}
"""The chunked-encoded SSE events of a streamed answer, keyed by ``include_usage``."""
_STREAM_HEAD = (
    b"HTTP/1.1 200 OK\r\n"
    b"Content-Type: text/event-stream; charset=utf-8\r\n"
    b"Cache-Control: no-cache\r\n"
    b"Connection: keep-alive\r\n"
    b"Transfer-Encoding: chunked\r\n\r\n"
)
_LAST_CHUNK = b"0\r\n\r\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: keep-alive\r\n\r\n"
_MAX_HEADER_BYTES = 64 * 1024


def _streamed(body: bytes) -> tuple[bytes, ...] | None:
    """The events to send for a request asking ``"stream": true``, else None. Parsed
    only when the body mentions ``stream``: the plain path stays free of JSON work."""
    try:
        request = json.loads(body)
    except ValueError:
        return None
    if not isinstance(request, dict) or request.get("stream") is not True:
        return None
    options = request.get("stream_options")
    return STREAM_EVENTS[isinstance(options, dict) and options.get("include_usage") is True]


async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Serve one keep-alive connection until the client closes it."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        # asyncio turns Nagle off only for sockets made with proto IPPROTO_TCP, and ours
        # (proto 0) are not: a streamed answer's second small write would then wait for
        # the client's delayed ACK (~40 ms) before leaving.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
            body = await reader.readexactly(length) if length else b""
            path = head.split(b" ", 2)[1] if head.count(b" ") >= 2 else b""
            if not path.endswith(b"/chat/completions"):
                writer.write(_NOT_FOUND)
            elif b'"stream"' in body and (events := _streamed(body)) is not None:
                writer.write(_STREAM_HEAD)
                for event in events:
                    # Written and flushed one by one: the client sees the first chunk
                    # before the server has sent the rest, as from a real provider.
                    writer.write(event)
                    await writer.drain()
                writer.write(_LAST_CHUNK)
            else:
                writer.write(_RESPONSE)
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
