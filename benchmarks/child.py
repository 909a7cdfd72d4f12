"""A helper process of the benchmark: started with ``python -m <module>``, it prints
one line when ready, then serves until its stdin closes. Servers run apart from the
measured process so that they never compete with it for the GIL."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import TracebackType

__all__ = ["ChildProcess"]

_REPO_ROOT = Path(__file__).resolve().parent.parent


class ChildProcess:
    """Start, talk to and stop one child; a context manager. Subclasses call
    :meth:`_spawn` from ``start`` and read the child's ready line."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[str] | None = None

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs (for its CPU and RSS)."""
        return self._process.pid if self._process is not None else None

    @property
    def running(self) -> bool:
        return self._process is not None

    def start(self) -> None:  # pragma: no cover - each subclass defines it
        raise TypeError(f"{type(self).__name__} must define start()")

    def _spawn(self, module: str, *args: str) -> str:
        """Start ``python -m module args`` and return its first line (its ready line).

        A plain subprocess rather than multiprocessing: spawn would re-import the
        caller's ``__main__`` (pytest, ``-m benchmarks``), fork would copy litellm's threads.
        """
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in (str(_REPO_ROOT), os.environ.get("PYTHONPATH", "")) if p)}
        self._process = subprocess.Popen(
            [sys.executable, "-m", module, *args], stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, text=True, env=env, cwd=_REPO_ROOT,
        )
        return self._readline()

    def _readline(self) -> str:
        assert self._process is not None and self._process.stdout is not None
        return self._process.stdout.readline().strip()

    def stop(self) -> None:
        """Close the child's stdin (its signal to stop) and wait. Safe to call twice."""
        process, self._process = self._process, None
        if process is None:
            return
        assert process.stdin is not None and process.stdout is not None
        process.stdin.close()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait(5)
        process.stdout.close()

    def __enter__(self) -> ChildProcess:
        self.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()
