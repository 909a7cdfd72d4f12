"""The group-commit barrier: tickets committed so far, and who waits for which.

Every write submitted to a :class:`~telemetry.store_writer.StoreWriter` gets a
ticket (a sequence number); a commit covers every ticket up to a mark. Callers wait
for their ticket, from a thread (:meth:`CommitBarrier.wait`) or an event loop
(:meth:`CommitBarrier.wait_async`); the writer calls :meth:`settle` after each
commit attempt, which answers every waiter the attempt covered at once.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

__all__ = ["CommitBarrier"]


class CommitBarrier:
    """Tickets committed, and waiters for tickets not yet committed.

    ``wake`` is called when someone starts waiting (the writer should commit now).
    """

    __slots__ = ("_lock", "_waiters", "_wake", "committed")

    def __init__(self, wake: Callable[[], None]) -> None:
        self.committed = 0  # every ticket <= this is committed
        self._wake = wake
        self._lock = threading.Lock()
        self._waiters: list[tuple[int, Callable[[bool], None]]] = []

    def __repr__(self) -> str:
        return f"CommitBarrier(committed={self.committed}, waiting={len(self._waiters)})"

    @property
    def waiting(self) -> bool:
        """Whether anyone waits for a commit."""
        return bool(self._waiters)

    def wait(self, ticket: int, timeout_s: float | None = None) -> bool:
        """Block until ``ticket`` is committed (True), its commit failed or
        ``timeout_s`` passed (False)."""
        if self.committed >= ticket:
            return True
        done = threading.Event()
        result = [False]

        def resolve(ok: bool) -> None:
            result[0] = ok
            done.set()

        self._add(ticket, resolve)
        done.wait(timeout_s)
        return result[0]

    async def wait_async(self, ticket: int) -> bool:
        """:meth:`wait` for an event loop (the loop runs on meanwhile)."""
        if self.committed >= ticket:
            return True
        loop = asyncio.get_running_loop()
        future: asyncio.Future[bool] = loop.create_future()
        loop_thread = threading.get_ident()

        def resolve(ok: bool) -> None:
            if threading.get_ident() == loop_thread:
                # Settled on the loop itself (its inline commit): answered now, without
                # a write to the loop's self-pipe and an extra turn of the loop.
                _set_result(future, ok)
            else:
                loop.call_soon_threadsafe(_set_result, future, ok)

        self._add(ticket, resolve)
        return await future

    def _add(self, ticket: int, resolve: Callable[[bool], None]) -> None:
        with self._lock:
            if self.committed >= ticket:
                resolve(True)
                return
            self._waiters.append((ticket, resolve))
        self._wake()

    def settle(self, mark: int, *, ok: bool) -> None:
        """A commit attempt covering every ticket <= ``mark`` succeeded (``ok``) or
        failed; answer the waiters it covered (all of them on a failure: a failing
        store answers now, not at the next retry)."""
        with self._lock:
            if ok:
                self.committed = max(self.committed, mark)
                due = [w for w in self._waiters if w[0] <= self.committed]
                self._waiters = [w for w in self._waiters if w[0] > self.committed]
            else:
                due, self._waiters = self._waiters, []
        for _, resolve in due:
            resolve(ok)


def _set_result(future: asyncio.Future[bool], ok: bool) -> None:
    if not future.done():
        future.set_result(ok)
