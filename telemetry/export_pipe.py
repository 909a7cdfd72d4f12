"""Pickled messages over a pipe, one length-prefixed frame each, with a read timeout.

The application and its exporter process (:mod:`telemetry.export_process`,
:mod:`telemetry.export_child`) talk over the child's stdin and stdout. A frame is a
4-byte big-endian length and a pickle of one message (a tuple whose first item names
it). Both ends are this package's code, so unpickling is no wider a trust boundary
than importing it.

>>> write_frame(fd, ("flush", 7))
>>> FrameReader(other_fd).receive(timeout_s=1.0)
('flush', 7)
"""

from __future__ import annotations

import os
import pickle
import select
import struct
from typing import Any

__all__ = ["FrameReader", "write_frame"]

_HEADER = struct.Struct(">I")
_READ_SIZE = 1 << 20


def write_frame(fd: int, message: tuple[Any, ...]) -> int:
    """Write one message to ``fd`` (blocking until the pipe took it all); bytes written.

    Raises ``OSError`` (``BrokenPipeError``) when the other end is gone.
    """
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    view = memoryview(_HEADER.pack(len(body)) + body)
    total = len(view)
    while view:
        written = os.write(fd, view)
        view = view[written:]
    return total


class FrameReader:
    """Reads messages from ``fd``; ``receive`` waits at most ``timeout_s`` for one."""

    __slots__ = ("_buffer", "_eof", "_fd")

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._buffer = bytearray()
        self._eof = False

    def __repr__(self) -> str:
        return f"FrameReader(fd={self._fd}, buffered={len(self._buffer)}, eof={self._eof})"

    def _frame(self) -> tuple[Any, ...] | None:
        if len(self._buffer) < _HEADER.size:
            return None
        (size,) = _HEADER.unpack_from(self._buffer)
        end = _HEADER.size + size
        if len(self._buffer) < end:
            return None
        message: tuple[Any, ...] = pickle.loads(memoryview(self._buffer)[_HEADER.size:end])
        del self._buffer[:end]
        return message

    def receive(self, timeout_s: float | None = None) -> tuple[Any, ...] | None:
        """The next message; None when none came within ``timeout_s`` (None: wait for
        ever). Raises ``EOFError`` once the other end closed and every message was read."""
        while True:
            message = self._frame()
            if message is not None:
                return message
            if self._eof:
                raise EOFError("the other end of the pipe closed")
            if timeout_s is not None:
                ready, _, _ = select.select([self._fd], [], [], max(0.0, timeout_s))
                if not ready:
                    return None
            chunk = os.read(self._fd, _READ_SIZE)
            if not chunk:
                self._eof = True
            self._buffer += chunk
