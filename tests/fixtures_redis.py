"""A real ``redis-server`` on a free loopback port, with a temp dir, for the state tests.

``.ci/run`` installs Debian's redis-server when missing. Without it a test that
needs Redis is skipped locally and fails under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from amm.testing.redis import free_port, spawn_redis

__all__ = ["RedisServer", "redis_server"]


class RedisServer:
    """One redis-server process; ``kill()`` and ``start()`` again on the same port."""

    def __init__(self, workdir: Path) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            message = ("redis-server is not installed "
                       "(.ci/run installs it: apt-get install redis-server)")
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(message)
            pytest.skip(message)
        self.binary = binary
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = spawn_redis(self.binary, self.port, self.dir)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.proc = None


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path / "redis")
    server.start()
    try:
        yield server
    finally:
        server.kill()
