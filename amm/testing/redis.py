"""A throw-away ``redis-server`` on loopback, for the tests and benchmarks of the fleet state.

No persistence, loopback only, its files in a directory of the caller's; the caller
owns the process (stop or kill it)::

    proc = spawn_redis(shutil.which("redis-server"), port := free_port(), tmp_dir)
    url = f"redis://127.0.0.1:{port}/0"
"""

from __future__ import annotations

import socket
import subprocess
import time
from pathlib import Path

__all__ = ["free_port", "spawn_redis"]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the OS picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def spawn_redis(binary: str, port: int, directory: str | Path, *,
                timeout_s: float = 10.0) -> subprocess.Popen[bytes]:
    """Start ``binary`` (a redis-server) on ``127.0.0.1:port`` and return once it answers
    PING; if it does not within ``timeout_s``, it is killed and RuntimeError raised."""
    proc = subprocess.Popen(
        [binary, "--save", "", "--appendonly", "no", "--dir", str(directory),
         "--port", str(port), "--bind", "127.0.0.1", "--protected-mode", "no"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2) as s:
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return proc
        except OSError:
            time.sleep(0.02)
    proc.kill()
    proc.wait(5)
    raise RuntimeError(f"redis-server did not start on port {port}")
