"""Streams their callers left, read to their end in the background so the bill is exact.

A provider bills what it generated until it noticed its client had left, and says how
much only in-band, at the end of the stream (see :mod:`amm._litellm`). Under
``on_cancel="drain"`` (the default; :class:`amm.manager.ManagerSettings`) a caller that
leaves a stream (``break``, ``aclose()``, leaving ``async with``, its task cancelled) gets
control back at once, and the manager's :class:`StreamDrains` reads the provider's stream
to its end, passing nothing on, within ``cancel_drain_timeout_s``. The attempt is then
booked at the provider's own final usage report (ledger source ``attempt``, the chat
span's ``error.type`` ``cancelled``); past the bound, or when the stream breaks without a
report, the connection is closed and amm's estimate booked, flagged. The price of exact
accounting is the rest of the answer: the provider generates (and bills) it anyway, up
to ``max_tokens``, unless the connection is closed (``on_cancel="close"``), and even then
it bills until it notices.

The caller's holds are settled when it leaves (the rate-limit reservation with amm's
estimate of what was used so far, the budget hold dropped); when the drain books the
attempt, the rate-limit window is corrected to the reported tokens and the ledger books
the cost, once. ``await manager.drain_streams()`` waits for pending drains;
``manager.stop()`` gives them a few seconds, then closes them and books estimates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from amm.api_client import AttemptStream

__all__ = ["StreamDrains"]

log = logging.getLogger("amm.streams")


class StreamDrains:
    """The drains of one manager: background tasks it awaits, or ends, before it stops.

    >>> drains.start(source, reservation, timeout_s=60.0)   # after source.leave()
    >>> await drains.wait()                                  # every one booked
    """

    __slots__ = ("_tasks",)

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"StreamDrains(pending={len(self._tasks)})"

    @property
    def pending(self) -> int:
        """Drains still reading (their attempts not booked yet)."""
        return len(self._tasks)

    def start(self, source: AttemptStream, reservation: Any, *, timeout_s: float) -> None:
        """Read ``source`` (left by its caller: :meth:`AttemptStream.leave`) to its end in
        the background and book it; ``reservation`` (the attempt's rate-limit hold, already
        settled with an estimate, or None) is corrected to the tokens billed."""
        task = asyncio.get_running_loop().create_task(
            _drain(source, reservation, timeout_s), name=f"amm-drain {source.model.id}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (exc := task.exception()) is not None:
            log.warning("a cancelled stream's drain failed", exc_info=exc)

    async def wait(self, timeout_s: float | None = None) -> bool:
        """Wait until every drain of this loop has booked its attempt, ``timeout_s`` at
        most (None: no limit). True when none is left."""
        loop = asyncio.get_running_loop()
        tasks = [t for t in self._tasks if t.get_loop() is loop]
        if tasks:
            await asyncio.wait(tasks, timeout=timeout_s)
        return not any(t.get_loop() is loop for t in self._tasks)

    async def close(self, grace_s: float) -> None:
        """Give pending drains ``grace_s`` to finish; cancel the rest (each books amm's
        estimate, flagged, and closes its connection). Never raises."""
        if await self.wait(grace_s):
            return
        loop = asyncio.get_running_loop()
        tasks = [t for t in self._tasks if t.get_loop() is loop]
        for task in tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.gather(*tasks, return_exceptions=True)


async def _drain(source: AttemptStream, reservation: Any, timeout_s: float) -> None:
    try:
        await source.drain(timeout_s)
    finally:
        billed = source.response_or_billed()
        if reservation is not None and billed is not None:
            reservation.settle(billed.token_usage.total_tokens)
